//! Charts as inline SVG, drawn with plotters (SVGBackend) and an embedded font (DejaVu
//! Sans, so text layout does not depend on the host's fonts).
//!
//! Data shapes (the panel's result):
//! - wide: `x, series1, series2, …` (every column after `x` is a series);
//! - long: `x, series, value` (three columns, the second a string) is pivoted;
//! - `x` is a time (RFC 3339 or `YYYY-MM-DD`: a time axis) or a label (horizontal bars);
//! - timeline: `time, lane, status[, label]`.

use super::engine::num;
use super::spec::{Band, ChartKind};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup, PreEscaped};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{SegmentValue, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::sync::Once;

mod category;
mod format;
mod judged;
mod table;
#[cfg(test)]
mod tests;
mod time;
mod timeline;

use category::category_chart;
pub use format::{fmt_value, parse_time, unit_label};
use format::{label_of, truncate};
pub use judged::{judged_chart, JudgedArgs};
use table::{pivot, pretty, series_color, Table};
use time::time_chart;
use timeline::timeline;

/// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
pub const PALETTE: [(u8, u8, u8); 8] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (110, 110, 110),
    (240, 228, 66),
];

pub fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

const TEXT: RGBColor = RGBColor(87, 96, 106);
const GRID: RGBColor = RGBColor(232, 235, 239);
const AXIS: RGBColor = RGBColor(190, 196, 204);

/// Where every chart starts: the house margins (`top`, `bottom`) and label areas.
fn builder<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
    (top, bottom): (u32, u32),
    (x_area, y_area): (u32, u32),
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(root);
    b.margin_top(top)
        .margin_right(22)
        .margin_left(6)
        .margin_bottom(bottom)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    b
}

/// The house grid of the dashboards' charts: faint bold lines only, grey axes, 14 px labels.
fn house_mesh<'m, 'a, 'b, X, Y, XT, YT, DB>(
    m: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    x_labels: usize,
    y_labels: usize,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged<ValueType = XT> + ValueFormatter<XT>,
    Y: Ranged<ValueType = YT> + ValueFormatter<YT>,
    DB: DrawingBackend,
{
    m.bold_line_style(GRID)
        .light_line_style(WHITE.mix(0.0))
        .axis_style(AXIS)
        .x_labels(x_labels)
        .y_labels(y_labels)
        .label_style(("sans-serif", 14).into_font().color(&TEXT))
}
pub const GOOD: (u8, u8, u8) = (0, 158, 115);
pub const WARN: (u8, u8, u8) = (230, 159, 0);
pub const BAD: (u8, u8, u8) = (213, 94, 0);

static FONT: Once = Once::new();

fn init_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            tracing::error!("the embedded chart font could not be loaded");
        }
    });
}

/// A legend entry: name and CSS color; `mark` is `line`, `box`, `band` or a marker shape.
#[derive(Debug, Clone)]
pub struct LegendItem {
    pub name: String,
    pub color: String,
    pub mark: &'static str,
}

pub struct Rendered {
    pub svg: String,
    pub legend: Vec<LegendItem>,
    pub points: usize,
}

/// A rendered chart as HTML: the SVG (plotters' output, already escaped) in a figure, then
/// its legend.
pub fn figure_html(r: &Rendered) -> Markup {
    html! {
        figure.chart data-points=(r.points) { (PreEscaped(&r.svg)) }
        @if !r.legend.is_empty() {
            ul.legend {
                @for l in &r.legend {
                    li { i class=(l.mark) style={ "background:" (l.color) } {} (l.name) }
                }
            }
        }
    }
}

/// A chart, or the error that kept it from being drawn.
pub fn figure_or_error(r: Result<Rendered, String>) -> Markup {
    match r {
        Ok(r) => figure_html(&r),
        Err(e) => html! { div.panel-error { pre { (e) } } },
    }
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> String {
    format!("chart: {e}")
}

pub struct ChartArgs<'a> {
    pub kind: ChartKind,
    pub unit: Option<&'a str>,
    pub y_label: Option<&'a str>,
    pub columns: &'a [String],
    pub rows: &'a [Vec<Value>],
    pub band: Option<Band>,
    pub width: u32,
    pub height: u32,
}

pub fn render(a: &ChartArgs) -> Result<Rendered, String> {
    init_font();
    if a.columns.len() < 2 {
        return Err("a chart needs at least two columns (x and a value)".into());
    }
    if a.kind == ChartKind::Timeline {
        return timeline(a);
    }
    let t = pivot(a.columns, a.rows);
    let times: Option<Vec<DateTime<Utc>>> = t.xs.iter().map(parse_time).collect();
    match times {
        Some(times) if !times.is_empty() => time_chart(a, &t, &times),
        _ => category_chart(a, &t),
    }
}

pub(super) fn band_legend(band: &Band, unit: Option<&str>) -> Vec<LegendItem> {
    let (g, w) = (fmt_value(band.good, unit), fmt_value(band.warning, unit));
    let (gs, ws, bs) = if band.higher_is_better {
        (
            format!("good ≥ {g}"),
            format!("warning ≥ {w}"),
            format!("bad < {w}"),
        )
    } else {
        (
            format!("good ≤ {g}"),
            format!("warning ≤ {w}"),
            format!("bad > {w}"),
        )
    };
    vec![
        LegendItem {
            name: gs,
            color: hex(GOOD),
            mark: "band",
        },
        LegendItem {
            name: ws,
            color: hex(WARN),
            mark: "band",
        },
        LegendItem {
            name: bs,
            color: hex(BAD),
            mark: "band",
        },
    ]
}

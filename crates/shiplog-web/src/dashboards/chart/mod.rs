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
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::sync::Once;

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
pub const GOOD: (u8, u8, u8) = (0, 158, 115);
pub const WARN: (u8, u8, u8) = (230, 159, 0);
pub const BAD: (u8, u8, u8) = (213, 94, 0);

static FONT: Once = Once::new();

fn init_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
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

/// Formats a value with its unit, short (axis ticks) or long (stats, tables).
pub fn fmt_value(v: f64, unit: Option<&str>) -> String {
    let compact = |v: f64| {
        let a = v.abs();
        if a >= 1e9 {
            format!("{:.1}G", v / 1e9)
        } else if a >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if a >= 1e4 {
            format!("{:.0}k", v / 1e3)
        } else if a >= 1e3 {
            format!("{:.1}k", v / 1e3)
        } else if a >= 100.0 || v.fract() == 0.0 {
            format!("{v:.0}")
        } else if a >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    match unit.unwrap_or("") {
        "bytes" => {
            let a = v.abs();
            if a >= 1e6 {
                format!("{:.2} MB", v / 1e6)
            } else if a >= 1e3 {
                format!("{:.0} kB", v / 1e3)
            } else {
                format!("{v:.0} B")
            }
        }
        "usd" => {
            if v.abs() >= 1000.0 {
                format!("${}", compact(v))
            } else if v.abs() >= 100.0 {
                format!("${v:.0}")
            } else {
                format!("${v:.2}")
            }
        }
        "percent" => format!("{v:.1}%"),
        "ratio" => format!("{:.1}%", v * 100.0),
        "s" => {
            if v.abs() >= 3600.0 {
                format!("{:.1} h", v / 3600.0)
            } else if v.abs() >= 120.0 {
                format!("{:.1} min", v / 60.0)
            } else {
                format!("{} s", compact(v))
            }
        }
        "ms" => {
            if v.abs() >= 10_000.0 {
                format!("{:.1} s", v / 1000.0)
            } else {
                format!("{} ms", compact(v))
            }
        }
        "hours" => {
            if v.abs() >= 48.0 {
                format!("{:.1} d", v / 24.0)
            } else if v.abs() < 1.0 {
                format!("{:.0} min", v * 60.0)
            } else {
                format!("{v:.1} h")
            }
        }
        "per_day" => format!("{v:.2}/day"),
        "tokens" => format!("{} tok", compact(v)),
        _ => compact(v),
    }
}

/// The default axis description of a unit.
pub fn unit_label(unit: Option<&str>) -> Option<&'static str> {
    Some(match unit? {
        "bytes" => "size (bytes)",
        "usd" => "spend (USD)",
        "percent" | "ratio" => "percent",
        "s" => "duration (s)",
        "ms" => "duration (ms)",
        "hours" => "hours",
        "tokens" => "tokens",
        "count" => "count",
        "per_day" => "per day",
        _ => return None,
    })
}

pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

fn label_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// Series after pivoting: names, x values (raw), values per series per x.
struct Table {
    /// Series names come from data (long form): shown as they are.
    raw: bool,
    names: Vec<String>,
    xs: Vec<Value>,
    values: Vec<Vec<Option<f64>>>,
}

fn pivot(columns: &[String], rows: &[Vec<Value>]) -> Table {
    let long = columns.len() == 3
        && rows.iter().any(|r| r[1].is_string())
        && rows.iter().all(|r| !r[1].is_number());
    if long {
        let mut names: Vec<String> = Vec::new();
        let mut xs: Vec<Value> = Vec::new();
        for r in rows {
            let n = label_of(&r[1]);
            if !names.contains(&n) {
                names.push(n);
            }
            if !xs.contains(&r[0]) {
                xs.push(r[0].clone());
            }
        }
        let mut values = vec![vec![None; xs.len()]; names.len()];
        for r in rows {
            let si = names.iter().position(|n| *n == label_of(&r[1])).unwrap();
            let xi = xs.iter().position(|x| *x == r[0]).unwrap();
            if let Some(v) = num(&r[2]) {
                *values[si][xi].get_or_insert(0.0) += v;
            }
        }
        Table {
            raw: true,
            names,
            xs,
            values,
        }
    } else {
        let names = columns.iter().skip(1).cloned().collect::<Vec<_>>();
        let xs = rows.iter().map(|r| r[0].clone()).collect();
        let values = (1..columns.len())
            .map(|c| rows.iter().map(|r| r.get(c).and_then(num)).collect())
            .collect();
        Table {
            raw: false,
            names,
            xs,
            values,
        }
    }
}

/// Status-like series get their meaning's colour; others the palette in order.
fn series_color(name: &str, i: usize) -> (u8, u8, u8) {
    match name {
        "succeeded" | "applied" | "healthy" | "passed" => GOOD,
        "failed" | "degraded" | "bad" => BAD,
        "rolled_back" | "alert" | "warning" => WARN,
        "skipped" | "inconclusive" | "started" => PALETTE[6],
        "promoted" => PALETTE[0],
        _ => PALETTE[i % PALETTE.len()],
    }
}

fn pretty(name: &str) -> String {
    let s = name.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
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

fn band_legend(band: &Band, unit: Option<&str>) -> Vec<LegendItem> {
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

fn time_chart(a: &ChartArgs, t: &Table, times: &[DateTime<Utc>]) -> Result<Rendered, String> {
    let secs: Vec<f64> = times.iter().map(|t| t.timestamp() as f64).collect();
    let (mut lo, mut hi) = secs
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    let span = hi - lo;
    let unit_secs = if span > 3.0 * 86_400.0 {
        86_400.0
    } else {
        3_600.0
    };
    let xs: Vec<f64> = secs.iter().map(|s| s / unit_secs).collect();
    lo /= unit_secs;
    hi /= unit_secs;
    let mut sorted = xs.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted.dedup();
    let step = sorted
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::MAX, f64::min);
    let step = if step == f64::MAX || step <= 0.0 {
        1.0
    } else {
        step
    };
    let bars = matches!(a.kind, ChartKind::Bar | ChartKind::StackedBar);
    let pad = if bars {
        step * 0.6
    } else if hi == lo {
        1.0
    } else {
        0.0
    };
    let (x0, x1) = (lo - pad, hi + pad);

    // y extent
    let stacked = a.kind == ChartKind::StackedBar;
    let mut dmax: f64 = 0.0;
    let mut dmin: f64 = 0.0;
    for xi in 0..xs.len() {
        if stacked {
            let s: f64 = t.values.iter().filter_map(|v| v[xi]).sum();
            dmax = dmax.max(s);
        } else {
            for v in t.values.iter().filter_map(|v| v[xi]) {
                dmax = dmax.max(v);
                dmin = dmin.min(v);
            }
        }
    }
    let mut ymax = if dmax > 0.0 { dmax * 1.12 } else { 1.0 };
    if let Some(b) = a.band {
        let top = b.good.max(b.warning) * 1.15;
        ymax = ymax.max(top.min(if dmax > 0.0 { dmax * 3.0 } else { top }));
    }
    let ymin = if dmin < 0.0 { dmin * 1.12 } else { 0.0 };

    let mut svg = String::new();
    let mut legend = Vec::new();
    let mut points = 0;
    {
        let root = SVGBackend::with_string(&mut svg, (a.width, a.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let y_desc = a.y_label.or(unit_label(a.unit));
        let mut chart = ChartBuilder::on(&root)
            .margin_top(14)
            .margin_right(22)
            .margin_left(6)
            .margin_bottom(4)
            .x_label_area_size(34)
            .y_label_area_size(if y_desc.is_some() { 86 } else { 66 })
            .build_cartesian_2d(x0..x1, ymin..ymax)
            .map_err(err)?;
        let fmt_x = move |x: &f64| {
            let t = DateTime::from_timestamp((x * unit_secs).round() as i64, 0).unwrap_or_default();
            if unit_secs >= 86_400.0 {
                t.format("%b %-d").to_string()
            } else if span <= 86_400.0 * 1.05 {
                t.format("%H:%M").to_string()
            } else {
                t.format("%b %-d %H:%M").to_string()
            }
        };
        let unit = a.unit.map(str::to_owned);
        let fmt_y = move |y: &f64| fmt_value(*y, unit.as_deref());
        let n_x = ((a.width as usize).saturating_sub(120) / 105).clamp(2, 10);
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE.mix(0.0))
            .axis_style(AXIS)
            .x_labels(n_x)
            .y_labels(5)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .label_style(("sans-serif", 14).into_font().color(&TEXT))
            .axis_desc_style(("sans-serif", 14).into_font().color(&TEXT));
        if let Some(d) = y_desc {
            mesh.y_desc(d);
        }
        mesh.draw().map_err(err)?;

        if let Some(b) = a.band {
            let (g, w) = (b.good.clamp(ymin, ymax), b.warning.clamp(ymin, ymax));
            let zones = if b.higher_is_better {
                [(w, g, GOOD), (ymin, w, BAD), (w, w, WARN)]
            } else {
                [(ymin, g, GOOD), (g, w, WARN), (w, ymax, BAD)]
            };
            let zones: Vec<(f64, f64, (u8, u8, u8))> = if b.higher_is_better {
                vec![(g, ymax, GOOD), (w, g, WARN), (ymin, w, BAD)]
            } else {
                zones.to_vec()
            };
            for (y0, y1, c) in zones {
                if y1 > y0 {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x0, y0), (x1, y1)],
                            rgb(c).mix(0.11).filled(),
                        )))
                        .map_err(err)?;
                }
            }
            legend.extend(band_legend(&b, a.unit));
        }

        let n = t.names.len().max(1) as f64;
        let mut base = vec![0.0f64; xs.len()];
        for (si, name) in t.names.iter().enumerate() {
            let c = series_color(name, si);
            let color = rgb(c);
            let shown = if t.raw {
                name.replace('_', " ")
            } else {
                pretty(name)
            };
            let mut pts: Vec<(f64, f64)> = Vec::new();
            let mut order: Vec<usize> = (0..xs.len()).collect();
            order.sort_by(|&i, &j| xs[i].partial_cmp(&xs[j]).unwrap());
            match a.kind {
                ChartKind::Bar | ChartKind::StackedBar => {
                    let w = step * 0.8;
                    let mut rects = Vec::new();
                    for &i in &order {
                        let Some(v) = t.values[si][i] else { continue };
                        let (l, r, b0) = if stacked {
                            (xs[i] - w / 2.0, xs[i] + w / 2.0, base[i])
                        } else {
                            let sw = w / n;
                            let l = xs[i] - w / 2.0 + sw * si as f64;
                            (l, l + sw, 0.0)
                        };
                        rects.push(Rectangle::new([(l, b0), (r, b0 + v)], color.filled()));
                        if stacked {
                            base[i] += v;
                        }
                    }
                    points += rects.len();
                    chart.draw_series(rects).map_err(err)?;
                    legend.push(LegendItem {
                        name: shown.clone(),
                        color: hex(c),
                        mark: "box",
                    });
                }
                _ => {
                    for &i in &order {
                        if let Some(v) = t.values[si][i] {
                            pts.push((xs[i], v));
                        }
                    }
                    if pts.is_empty() {
                        continue;
                    }
                    points += pts.len();
                    if a.kind == ChartKind::Area {
                        chart
                            .draw_series(
                                AreaSeries::new(pts.clone(), 0.0, color.mix(0.18))
                                    .border_style(color.stroke_width(2)),
                            )
                            .map_err(err)?;
                    } else {
                        // Missing buckets (no data that day) are bridged.
                        chart
                            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                            .map_err(err)?;
                    }
                    if pts.len() <= 45 || a.kind == ChartKind::Line && pts.len() <= 100 {
                        let r = if pts.len() <= 45 { 3 } else { 2 };
                        chart
                            .draw_series(pts.iter().map(|&p| Circle::new(p, r, color.filled())))
                            .map_err(err)?;
                    }
                    legend.push(LegendItem {
                        name: shown.clone(),
                        color: hex(c),
                        mark: "line",
                    });
                }
            }
        }
        root.present().map_err(err)?;
    }
    Ok(Rendered {
        svg,
        legend,
        points,
    })
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

fn category_chart(a: &ChartArgs, t: &Table) -> Result<Rendered, String> {
    let labels: Vec<String> = t.xs.iter().map(|x| truncate(&label_of(x), 26)).collect();
    let n = labels.len();
    if n == 0 {
        return Err("no rows".into());
    }
    let totals: Vec<f64> = (0..n)
        .map(|i| t.values.iter().filter_map(|v| v[i]).sum())
        .collect();
    let dmax = totals.iter().cloned().fold(0.0, f64::max);
    let xmax = if dmax > 0.0 { dmax * 1.22 } else { 1.0 };
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    let height = (n as u32 * 30 + 56).max(140).min(a.height.max(140) * 2);
    let mut svg = String::new();
    let mut legend = Vec::new();
    let mut points = 0;
    {
        let root = SVGBackend::with_string(&mut svg, (a.width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let unit = a.unit.map(str::to_owned);
        let unit2 = unit.clone();
        let mut chart = ChartBuilder::on(&root)
            .margin_top(8)
            .margin_right(22)
            .margin_left(6)
            .x_label_area_size(30)
            .y_label_area_size((longest as u32 * 8 + 18).clamp(60, 240))
            .build_cartesian_2d(0f64..xmax, (0..n as i32).into_segmented())
            .map_err(err)?;
        let lab = labels.clone();
        let fmt_y = move |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if (*i as usize) < lab.len() => {
                lab[n - 1 - *i as usize].clone()
            }
            _ => String::new(),
        };
        let fmt_x = move |x: &f64| fmt_value(*x, unit.as_deref());
        chart
            .configure_mesh()
            .disable_y_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE.mix(0.0))
            .axis_style(AXIS)
            .x_labels(((a.width as usize).saturating_sub(200) / 110).clamp(2, 8))
            .y_labels(n)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .label_style(("sans-serif", 14).into_font().color(&TEXT))
            .draw()
            .map_err(err)?;
        let mut base = vec![0.0f64; n];
        for (si, name) in t.names.iter().enumerate() {
            let c = series_color(name, si);
            let mut rects = Vec::new();
            for (i, (value, start)) in t.values[si].iter().zip(base.iter_mut()).enumerate() {
                let Some(v) = *value else { continue };
                let row = (n - 1 - i) as i32;
                let mut r = Rectangle::new(
                    [
                        (*start, SegmentValue::Exact(row)),
                        (*start + v, SegmentValue::Exact(row + 1)),
                    ],
                    rgb(c).filled(),
                );
                r.set_margin(5, 5, 0, 0);
                rects.push(r);
                *start += v;
            }
            points += rects.len();
            chart.draw_series(rects).map_err(err)?;
            if t.names.len() > 1 {
                legend.push(LegendItem {
                    name: if t.raw { name.clone() } else { pretty(name) },
                    color: hex(c),
                    mark: "box",
                });
            }
        }
        let font = ("sans-serif", 12)
            .into_font()
            .color(&TEXT)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series((0..n).map(|i| {
                Text::new(
                    format!(" {}", fmt_value(totals[i], unit2.as_deref())),
                    (totals[i], SegmentValue::CenterOf((n - 1 - i) as i32)),
                    font.clone(),
                )
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(Rendered {
        svg,
        legend,
        points,
    })
}

fn timeline(a: &ChartArgs) -> Result<Rendered, String> {
    let mut lanes: Vec<String> = Vec::new();
    let mut evs = Vec::new();
    for r in a.rows {
        let Some(t) = r.first().and_then(parse_time) else {
            continue;
        };
        let lane = label_of(&r[1]);
        if !lanes.contains(&lane) {
            lanes.push(lane.clone());
        }
        let status = r.get(2).map(label_of).unwrap_or_default();
        evs.push((t.timestamp() as f64 / 86_400.0, lane, status));
    }
    if evs.is_empty() {
        return Err("no rows with a time".into());
    }
    lanes.sort();
    let n = lanes.len();
    let (lo, hi) = evs
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), e| (l.min(e.0), h.max(e.0)));
    let (x0, x1) = (lo - 0.5, hi + 0.5);
    let height = (n as u32 * 44 + 50).max(150);
    let longest = lanes.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    let mut svg = String::new();
    let mut legend = Vec::new();
    let mut points = 0;
    {
        let root = SVGBackend::with_string(&mut svg, (a.width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_top(8)
            .margin_right(22)
            .margin_left(6)
            .x_label_area_size(30)
            .y_label_area_size((longest as u32 * 8 + 18).clamp(60, 260))
            .build_cartesian_2d(x0..x1, (0..n as i32).into_segmented())
            .map_err(err)?;
        let lab = lanes.clone();
        let fmt_y = move |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) if (*i as usize) < lab.len() => {
                lab[n - 1 - *i as usize].clone()
            }
            _ => String::new(),
        };
        let fmt_x = |x: &f64| {
            DateTime::from_timestamp((x * 86_400.0).round() as i64, 0)
                .unwrap_or_default()
                .format("%b %-d")
                .to_string()
        };
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(WHITE.mix(0.0))
            .axis_style(AXIS)
            .x_labels(((a.width as usize).saturating_sub(200) / 105).clamp(2, 10))
            .y_labels(n)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .label_style(("sans-serif", 14).into_font().color(&TEXT))
            .draw()
            .map_err(err)?;
        let lane_y = |lane: &str| {
            SegmentValue::CenterOf((n - 1 - lanes.iter().position(|l| l == lane).unwrap()) as i32)
        };
        let mut seen: Vec<&str> = Vec::new();
        // successes first, so failures are drawn on top
        let rank = |s: &str| match s {
            "failed" => 3,
            "rolled_back" => 2,
            _ => 1,
        };
        let mut evs = evs;
        evs.sort_by_key(|e| rank(&e.2));
        for (x, lane, status) in &evs {
            let p = (*x, lane_y(lane));
            let (c, mark) = match status.as_str() {
                "failed" => (BAD, "cross"),
                "rolled_back" => (WARN, "triangle"),
                "promoted" => (PALETTE[0], "circle"),
                "succeeded" => (GOOD, "circle"),
                _ => (PALETTE[6], "circle"),
            };
            let color = rgb(c);
            match mark {
                "cross" => {
                    chart
                        .draw_series(std::iter::once(Cross::new(p, 7, color.stroke_width(3))))
                        .map_err(err)?;
                }
                "triangle" => {
                    chart
                        .draw_series(std::iter::once(TriangleMarker::new(p, 8, color.filled())))
                        .map_err(err)?;
                }
                _ => {
                    chart
                        .draw_series(std::iter::once(Circle::new(p, 4, color.filled())))
                        .map_err(err)?;
                }
            }
            points += 1;
            if !seen.contains(&status.as_str()) {
                seen.push(status.as_str());
                legend.push(LegendItem {
                    name: pretty(status),
                    color: hex(c),
                    mark,
                });
            }
        }
        root.present().map_err(err)?;
    }
    legend.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Rendered {
        svg,
        legend,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draws_a_line_with_bands_and_text() {
        let columns = vec!["day".to_string(), "p50".to_string(), "p95".to_string()];
        let rows: Vec<Vec<Value>> = (1..20)
            .map(|d| {
                vec![
                    json!(format!("2026-03-{d:02}")),
                    json!(40 + d),
                    json!(60 + 2 * d),
                ]
            })
            .collect();
        let r = render(&ChartArgs {
            kind: ChartKind::Line,
            unit: Some("s"),
            y_label: None,
            columns: &columns,
            rows: &rows,
            band: Some(Band {
                good: 60.0,
                warning: 120.0,
                higher_is_better: false,
            }),
            width: 700,
            height: 280,
        })
        .unwrap();
        assert!(
            r.svg.contains("<text") && r.svg.contains("Mar"),
            "{}",
            &r.svg[..500]
        );
        assert!(r.svg.contains("<polyline") && r.svg.contains("<circle"));
        assert_eq!(r.points, 38);
        assert_eq!(r.legend.len(), 5);
    }

    #[test]
    fn categories_and_long_form() {
        let columns = vec![
            "feature".to_string(),
            "model".to_string(),
            "usd".to_string(),
        ];
        let rows = vec![
            vec![json!("search"), json!("gpt-4o"), json!(12.5)],
            vec![json!("search"), json!("claude"), json!(3.0)],
            vec![json!("summaries"), json!("gpt-4o"), json!(7.0)],
        ];
        let r = render(&ChartArgs {
            kind: ChartKind::StackedBar,
            unit: Some("usd"),
            y_label: None,
            columns: &columns,
            rows: &rows,
            band: None,
            width: 600,
            height: 260,
        })
        .unwrap();
        assert_eq!(r.points, 3);
        assert!(r.svg.contains("summaries") && r.svg.contains("$15.50"));
        assert_eq!(fmt_value(1_234_567.0, Some("bytes")), "1.23 MB");
        assert_eq!(fmt_value(0.123, Some("ratio")), "12.3%");
    }
}

//! Horizontal bars, one per label.

use super::*;

pub(super) fn category_chart(a: &ChartArgs, t: &Table) -> Result<Rendered, String> {
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
        let mut chart = builder(
            &root,
            (8, 0),
            (30, (longest as u32 * 8 + 18).clamp(60, 240)),
        )
        .build_cartesian_2d(0f64..xmax, (0..n as i32).into_segmented())
        .map_err(err)?;
        let fmt_y = row_label(labels.clone());
        let fmt_x = move |x: &f64| fmt_value(*x, unit.as_deref());
        let x_labels = ((a.width as usize).saturating_sub(200) / 110).clamp(2, 8);
        house_mesh(chart.configure_mesh().disable_y_mesh(), x_labels, n)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
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

/// The label of each row of a chart with one row per label, the first at the top (plotters
/// counts the rows from the bottom); the timeline's lanes use it too.
pub(super) fn row_label(labels: Vec<String>) -> impl Fn(&SegmentValue<i32>) -> String {
    let n = labels.len();
    move |v| match v {
        SegmentValue::CenterOf(i) if (*i as usize) < n => labels[n - 1 - *i as usize].clone(),
        _ => String::new(),
    }
}

//! A timeline: one lane per name, a mark per status change.

use super::category::row_label;
use super::*;

pub(super) fn timeline(a: &ChartArgs) -> Result<Rendered, String> {
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
        let mut chart = builder(
            &root,
            (8, 0),
            (30, (longest as u32 * 8 + 18).clamp(60, 260)),
        )
        .build_cartesian_2d(x0..x1, (0..n as i32).into_segmented())
        .map_err(err)?;
        let fmt_y = row_label(lanes.clone());
        let fmt_x = |x: &f64| {
            DateTime::from_timestamp((x * 86_400.0).round() as i64, 0)
                .unwrap_or_default()
                .format("%b %-d")
                .to_string()
        };
        let x_labels = ((a.width as usize).saturating_sub(200) / 105).clamp(2, 10);
        house_mesh(&mut chart.configure_mesh(), x_labels, n)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
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

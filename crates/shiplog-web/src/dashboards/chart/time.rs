//! Charts over a time axis: lines, areas, stacked bars, points; thresholds as bands.

use super::*;

pub(super) fn time_chart(
    a: &ChartArgs,
    t: &Table,
    times: &[DateTime<Utc>],
) -> Result<Rendered, String> {
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
        let y_area = if y_desc.is_some() { 86 } else { 66 };
        let mut chart = builder(&root, (14, 4), (34, y_area))
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
        house_mesh(mesh.disable_x_mesh(), n_x, 5)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
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

//! The chart of one judged metric on a deployment's page: its samples over the watch
//! window, the baseline deployment's range (a band) and mean, and the threshold the
//! rule compares with (`max_ratio` × baseline, or `max_value`); samples set aside as
//! outliers are drawn hollow, the deciding sample ringed.

use super::*;

/// What a judged chart shows.
pub struct JudgedArgs<'a> {
    pub metric: &'a str,
    pub unit: Option<&'a str>,
    /// Minutes since the deployment went live, and the value.
    pub samples: &'a [(f64, f64)],
    /// Minutes of the samples set aside as outliers.
    pub outliers: &'a [f64],
    /// Minute of the deciding sample.
    pub deciding: Option<f64>,
    pub window_minutes: f64,
    pub baseline: Option<f64>,
    pub baseline_range: Option<(f64, f64)>,
    pub threshold: Option<f64>,
    pub width: u32,
    pub height: u32,
}

const SAMPLES: (u8, u8, u8) = PALETTE[0];
const BASELINE: (u8, u8, u8) = (110, 110, 110);

pub fn judged_chart(a: &JudgedArgs) -> Result<Rendered, String> {
    init_font();
    let x1 = a
        .samples
        .iter()
        .map(|s| s.0)
        .fold(a.window_minutes.max(1.0), f64::max);
    let mut ymax = a.samples.iter().map(|s| s.1).fold(0.0f64, f64::max);
    for v in [a.baseline, a.threshold, a.baseline_range.map(|r| r.1)]
        .into_iter()
        .flatten()
    {
        ymax = ymax.max(v);
    }
    let ymax = if ymax > 0.0 { ymax * 1.15 } else { 1.0 };
    let mut svg = String::new();
    let mut legend = vec![LegendItem {
        name: pretty(a.metric),
        color: hex(SAMPLES),
        mark: "line",
    }];
    {
        let root = SVGBackend::with_string(&mut svg, (a.width, a.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = builder(&root, (14, 4), (34, 76))
            .build_cartesian_2d(0.0..x1, 0.0..ymax)
            .map_err(err)?;
        let unit = a.unit;
        chart
            .configure_mesh()
            .light_line_style(GRID)
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .label_style(("sans-serif", 12).into_font().color(&TEXT))
            .x_desc("minutes after the deployment went live")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| fmt_value(*v, unit))
            .draw()
            .map_err(err)?;
        if let Some((lo, hi)) = a.baseline_range {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, lo), (x1, hi)],
                    rgb(BASELINE).mix(0.15).filled(),
                )))
                .map_err(err)?;
            legend.push(LegendItem {
                name: format!(
                    "baseline range {}–{}",
                    fmt_value(lo, unit),
                    fmt_value(hi, unit)
                ),
                color: hex(BASELINE),
                mark: "band",
            });
        }
        let dashed = |y: f64, color: RGBColor| {
            let n = 40;
            (0..n)
                .step_by(2)
                .map(move |i| {
                    let a = x1 * i as f64 / n as f64;
                    let b = x1 * (i + 1) as f64 / n as f64;
                    PathElement::new(vec![(a, y), (b, y)], color.stroke_width(2))
                })
                .collect::<Vec<_>>()
        };
        if let Some(b) = a.baseline {
            chart.draw_series(dashed(b, rgb(BASELINE))).map_err(err)?;
            legend.push(LegendItem {
                name: format!("baseline {}", fmt_value(b, unit)),
                color: hex(BASELINE),
                mark: "line",
            });
        }
        if let Some(t) = a.threshold {
            chart.draw_series(dashed(t, rgb(BAD))).map_err(err)?;
            legend.push(LegendItem {
                name: format!("threshold {}", fmt_value(t, unit)),
                color: hex(BAD),
                mark: "line",
            });
        }
        let kept: Vec<(f64, f64)> = a
            .samples
            .iter()
            .filter(|s| !a.outliers.iter().any(|o| (o - s.0).abs() < 1e-9))
            .copied()
            .collect();
        chart
            .draw_series(LineSeries::new(
                kept.iter().copied(),
                rgb(SAMPLES).stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(
                kept.iter()
                    .map(|p| Circle::new(*p, 3, rgb(SAMPLES).filled())),
            )
            .map_err(err)?;
        let set_aside: Vec<(f64, f64)> = a
            .samples
            .iter()
            .filter(|s| a.outliers.iter().any(|o| (o - s.0).abs() < 1e-9))
            .copied()
            .collect();
        if !set_aside.is_empty() {
            chart
                .draw_series(
                    set_aside
                        .iter()
                        .map(|p| Circle::new(*p, 4, rgb(SAMPLES).stroke_width(2))),
                )
                .map_err(err)?;
            legend.push(LegendItem {
                name: "set aside (outlier)".into(),
                color: hex(SAMPLES),
                mark: "circle",
            });
        }
        if let Some(m) = a.deciding {
            if let Some(p) = a.samples.iter().find(|s| (s.0 - m).abs() < 1e-9) {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        *p,
                        7,
                        rgb(BAD).stroke_width(2),
                    )))
                    .map_err(err)?;
                legend.push(LegendItem {
                    name: "deciding sample".into(),
                    color: hex(BAD),
                    mark: "circle",
                });
            }
        }
        root.present().map_err(err)?;
    }
    Ok(Rendered {
        svg,
        legend,
        points: a.samples.len(),
    })
}

#[cfg(test)]
mod judged_tests {
    use super::*;

    #[test]
    fn draws_samples_band_and_threshold() {
        let r = judged_chart(&JudgedArgs {
            metric: "error_rate",
            unit: Some("ratio"),
            samples: &[(1.0, 0.01), (2.0, 0.05), (3.0, 0.04), (4.0, 0.045)],
            outliers: &[1.0],
            deciding: Some(4.0),
            window_minutes: 10.0,
            baseline: Some(0.012),
            baseline_range: Some((0.008, 0.016)),
            threshold: Some(0.018),
            width: 640,
            height: 240,
        })
        .unwrap();
        assert!(r.svg.starts_with("<svg"), "{}", &r.svg[..40]);
        assert!(r.svg.contains("minutes after the deployment went live"));
        let names: Vec<&str> = r.legend.iter().map(|l| l.name.as_str()).collect();
        assert!(
            names.iter().any(|n| n.starts_with("baseline range")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("threshold")),
            "{names:?}"
        );
        assert!(names.contains(&"set aside (outlier)") && names.contains(&"deciding sample"));
    }
}

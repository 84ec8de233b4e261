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

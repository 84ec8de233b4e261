//! Values, units, times and labels as the charts write them.

use super::*;

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

pub(super) fn label_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

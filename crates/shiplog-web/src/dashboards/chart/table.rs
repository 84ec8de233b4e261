//! A panel's rows as series: wide or long (pivoted) data, and each series' colour.

use super::*;

/// Series after pivoting: names, x values (raw), values per series per x.
pub(super) struct Table {
    /// Series names come from data (long form): shown as they are.
    pub(super) raw: bool,
    pub(super) names: Vec<String>,
    pub(super) xs: Vec<Value>,
    pub(super) values: Vec<Vec<Option<f64>>>,
}

pub(super) fn pivot(columns: &[String], rows: &[Vec<Value>]) -> Table {
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
pub(super) fn series_color(name: &str, i: usize) -> (u8, u8, u8) {
    match name {
        "succeeded" | "applied" | "healthy" | "passed" => GOOD,
        "failed" | "degraded" | "bad" => BAD,
        "rolled_back" | "alert" | "warning" => WARN,
        "skipped" | "inconclusive" | "started" => PALETTE[6],
        "promoted" => PALETTE[0],
        _ => PALETTE[i % PALETTE.len()],
    }
}

pub(super) fn pretty(name: &str) -> String {
    let s = name.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

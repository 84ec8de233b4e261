//! A comparison as Markdown (job summaries, pull-request comments) and as a plain text
//! table (terminals). JSON is the serde form of [`Comparison`].

use super::{BudgetCheck, ChunkChange, ChunkStatus, Comparison, Delta, Verdict};

/// Bytes for people: `812 B`, `812.3 kB`, `1.42 MB` (decimal units, as bundlers print).
pub fn bytes(n: i64) -> String {
    let a = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    if a < 1000.0 {
        format!("{sign}{a} B")
    } else if a < 1_000_000.0 {
        format!("{sign}{:.1} kB", a / 1000.0)
    } else {
        format!("{sign}{:.2} MB", a / 1_000_000.0)
    }
}

/// A duration in ms for people: `850 ms`, `41.2 s`, `3 min 5 s`.
pub fn millis(n: i64) -> String {
    let a = n.unsigned_abs();
    let sign = if n < 0 { "-" } else { "" };
    if a < 1000 {
        format!("{sign}{a} ms")
    } else if a < 120_000 {
        format!("{sign}{:.1} s", a as f64 / 1000.0)
    } else {
        format!("{sign}{} min {} s", a / 60_000, (a % 60_000) / 1000)
    }
}

fn signed(n: i64, unit: fn(i64) -> String) -> String {
    if n > 0 {
        format!("+{}", unit(n))
    } else if n == 0 {
        "±0".into()
    } else {
        unit(n)
    }
}

fn cell(v: Option<i64>, unit: fn(i64) -> String) -> String {
    v.map(unit).unwrap_or_else(|| "–".into())
}

fn change(d: &Delta, unit: fn(i64) -> String) -> String {
    match (d.change, d.percent) {
        (Some(c), Some(p)) if c != 0 => format!("{} ({p:+.1}%)", signed(c, unit)),
        (Some(c), _) => signed(c, unit),
        _ => "–".into(),
    }
}

fn short(commit: Option<&str>) -> String {
    commit
        .map(|c| c.chars().take(7).collect())
        .unwrap_or_else(|| "?".into())
}

fn budget_value(b: &BudgetCheck, v: f64) -> String {
    match b.metric.as_str() {
        "duration_ms" => millis(v as i64),
        m if m.ends_with("_percent") => format!("{v:+.1}%"),
        _ => bytes(v as i64),
    }
}

fn budget_name(b: &BudgetCheck) -> String {
    let mut s = b.metric.clone();
    if let Some(c) = &b.chunk {
        s.push_str(&format!(" ({c})"));
    }
    s
}

fn status_word(c: &ChunkChange) -> &'static str {
    match c.status {
        ChunkStatus::Added => "added",
        ChunkStatus::Removed => "removed",
        ChunkStatus::Grown => "grown",
        ChunkStatus::Shrunk => "shrunk",
        ChunkStatus::Unchanged => "unchanged",
    }
}

/// Rows of the summary: label, base, head, change.
fn summary_rows(c: &Comparison) -> Vec<[String; 4]> {
    vec![
        [
            "Build time".into(),
            cell(c.duration_ms.base, millis),
            cell(c.duration_ms.head, millis),
            change(&c.duration_ms, millis),
        ],
        [
            "Bundle".into(),
            cell(c.bundle_bytes.base, bytes),
            cell(c.bundle_bytes.head, bytes),
            change(&c.bundle_bytes, bytes),
        ],
        [
            "Gzip".into(),
            cell(c.gzip_bytes.base, bytes),
            cell(c.gzip_bytes.head, bytes),
            change(&c.gzip_bytes, bytes),
        ],
    ]
}

fn chunk_rows(c: &Comparison, max: usize) -> Vec<[String; 4]> {
    c.chunks
        .iter()
        .take(max)
        .map(|ch| {
            [
                format!("{} {}", status_word(ch), ch.name),
                cell(ch.bytes.base, bytes),
                cell(ch.bytes.head, bytes),
                match ch.status {
                    ChunkStatus::Added => signed(ch.bytes.head.unwrap_or(0), bytes),
                    ChunkStatus::Removed => signed(-ch.bytes.base.unwrap_or(0), bytes),
                    _ => change(&ch.bytes, bytes),
                },
            ]
        })
        .collect()
}

fn counts(c: &Comparison) -> String {
    let n = |s: ChunkStatus| c.chunks.iter().filter(|x| x.status == s).count();
    format!(
        "{} added, {} removed, {} grown, {} shrunk, {} unchanged",
        n(ChunkStatus::Added),
        n(ChunkStatus::Removed),
        n(ChunkStatus::Grown),
        n(ChunkStatus::Shrunk),
        c.chunks_unchanged
    )
}

fn headline(c: &Comparison) -> String {
    let base = match &c.base {
        Some(b) => format!("`{}` ({})", c.base_branch, short(b.commit.as_deref())),
        None => format!("`{}` (no successful build yet)", c.base_branch),
    };
    format!(
        "{} — {} against {}",
        c.project,
        short(c.head.commit.as_deref()),
        base
    )
}

fn verdict_line(c: &Comparison) -> Option<String> {
    if c.budgets.is_empty() {
        return None;
    }
    let breached = c.budgets.iter().filter(|b| b.passed == Some(false)).count();
    let unknown = c.budgets.iter().filter(|b| b.passed.is_none()).count();
    let passed = c.budgets.len() - breached - unknown;
    let mut s = match c.verdict {
        Verdict::Breach => format!("Budgets: {breached} breached, {passed} within"),
        Verdict::Pass => format!("Budgets: all {passed} within"),
    };
    if unknown > 0 {
        s.push_str(&format!(", {unknown} not judged (no base build)"));
    }
    Some(s)
}

/// Markdown: a heading, the summary table, the chunk changes, the budgets.
pub fn render_markdown(c: &Comparison) -> String {
    let mut out = String::new();
    let mark = match c.verdict {
        Verdict::Breach => "❌",
        Verdict::Pass => "✅",
    };
    out.push_str(&format!("### {mark} shiplog: {}\n\n", headline(c)));
    out.push_str("| | base | head | change |\n|---|---:|---:|---:|\n");
    for r in summary_rows(c) {
        out.push_str(&format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]));
    }
    if c.base.is_some() {
        out.push_str(&format!("\n**Chunks:** {}\n", counts(c)));
        if !c.chunks.is_empty() {
            out.push_str("\n| chunk | base | head | change |\n|---|---:|---:|---:|\n");
            for r in chunk_rows(c, 25) {
                let (status, name) = r[0].split_once(' ').unwrap_or(("", &r[0]));
                out.push_str(&format!(
                    "| {status} `{name}` | {} | {} | {} |\n",
                    r[1], r[2], r[3]
                ));
            }
            if c.chunks.len() > 25 {
                out.push_str(&format!("\n…and {} more.\n", c.chunks.len() - 25));
            }
        }
    }
    if let Some(v) = verdict_line(c) {
        out.push_str(&format!(
            "\n**{v}**\n\n| budget | limit | value | |\n|---|---:|---:|---|\n"
        ));
        for b in &c.budgets {
            let mark = match b.passed {
                Some(true) => "✅",
                Some(false) => "❌",
                None => "–",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {mark} |\n",
                budget_name(b),
                budget_value(b, b.limit),
                b.value
                    .map(|v| budget_value(b, v))
                    .unwrap_or_else(|| "–".into())
            ));
        }
    }
    out
}

fn table(rows: &[[String; 4]], header: [&str; 4]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}

/// A plain text table for terminals.
pub fn render_table(c: &Comparison) -> String {
    let mut out = format!("{}\n\n", headline(c).replace('`', ""));
    out.push_str(&table(&summary_rows(c), ["", "base", "head", "change"]));
    if c.base.is_some() {
        out.push_str(&format!("\nchunks: {}\n", counts(c)));
        if !c.chunks.is_empty() {
            out.push_str(&table(
                &chunk_rows(c, 50),
                ["chunk", "base", "head", "change"],
            ));
        }
    }
    if let Some(v) = verdict_line(c) {
        out.push_str(&format!("\n{v}\n"));
        let rows: Vec<[String; 4]> = c
            .budgets
            .iter()
            .map(|b| {
                [
                    budget_name(b),
                    budget_value(b, b.limit),
                    b.value
                        .map(|v| budget_value(b, v))
                        .unwrap_or_else(|| "–".into()),
                    match b.passed {
                        Some(true) => "ok".into(),
                        Some(false) => "BREACH".into(),
                        None => "not judged".into(),
                    },
                ]
            })
            .collect();
        out.push_str(&table(&rows, ["budget", "limit", "value", ""]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(812_345), "812.3 kB");
        assert_eq!(bytes(-1_420_000), "-1.42 MB");
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(41_234), "41.2 s");
        assert_eq!(millis(185_000), "3 min 5 s");
        assert_eq!(signed(0, bytes), "±0");
    }
}

//! Printing: aligned tables without borders (one record per line, easy to
//! grep and `awk`), JSON, sizes in IEC units, UTC times.
//!
//! Conventions shared by every command:
//! - times are UTC RFC 3339 without fractions (`2025-11-25T06:27:00Z`); an
//!   unset time (Unix 0) is `-` in tables and `null` in JSON;
//! - sizes are binary units with one decimal (`1.5 GiB`) in tables and plain
//!   byte counts in JSON;
//! - JSON enums are lowercase words (`"state": "running"`), empty strings
//!   are `null`, and lists are top-level arrays.

use std::io::Write;
use std::time::Duration;

use comfy_table::{presets, Table};
use serde_json::Value;

use crate::cert;

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and `key: value` listings for people.
    Table,
    /// JSON for scripts.
    Json,
}

impl From<cert::Output> for Format {
    fn from(o: cert::Output) -> Self {
        match o {
            cert::Output::Text => Format::Table,
            cert::Output::Json => Format::Json,
        }
    }
}

/// Standard output was closed (e.g. `trireme jobs ls | head`): stop quietly.
#[derive(Debug)]
pub struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output closed")
    }
}

impl std::error::Error for BrokenPipe {}

/// Write `text` and a newline to stdout, and flush.
///
/// # Errors
/// [`BrokenPipe`] when stdout is closed, or the write error.
pub fn println(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let r = writeln!(out, "{text}").and_then(|()| out.flush());
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        r => Ok(r?),
    }
}

/// Print a JSON value: pretty, or `compact` on one line (for streams).
///
/// # Errors
/// As [`println`](fn@println).
pub fn print_json(v: &Value, compact: bool) -> anyhow::Result<()> {
    let s = if compact {
        serde_json::to_string(v)?
    } else {
        serde_json::to_string_pretty(v)?
    };
    println(&s)
}

/// A borderless table: a header row in capitals, then one line per row,
/// columns two spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t.lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key: value` lines with the values aligned; a multi-line value continues
/// under its first line.
pub fn fields(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut s = String::new();
    for (k, v) in rows {
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        s.push_str(&format!("{:<w$}  {first}", format!("{k}:")));
        for l in lines {
            s.push('\n');
            s.push_str(&format!("{:<w$}  {l}", ""));
        }
        s.push('\n');
    }
    s.truncate(s.trim_end().len());
    s
}

/// A byte count in binary units: `0 B`, `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Round first so that 1023.96 KiB shows as 1.0 MiB, not 1024.0 KiB.
    while (v * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A rate in binary units per second, e.g. `12.5 MiB/s`.
pub fn rate(bytes_per_sec: f64) -> String {
    let b = if bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
        bytes_per_sec.round() as u64
    } else {
        0
    };
    format!("{}/s", size(b))
}

/// Unix seconds as UTC RFC 3339 without fractions, `-` when unset (0).
pub fn time(unix: i64) -> String {
    time_opt(unix).unwrap_or_else(|| "-".into())
}

/// Unix seconds as UTC RFC 3339, `None` when unset (0) or out of range.
pub fn time_opt(unix: i64) -> Option<String> {
    if unix == 0 {
        return None;
    }
    chrono::DateTime::from_timestamp(unix, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A time for JSON: the RFC 3339 string, or `null` when unset.
pub fn json_time(unix: i64) -> Value {
    time_opt(unix).map_or(Value::Null, Value::String)
}

/// A string for JSON: `null` when empty.
pub fn json_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// A string for tables: `-` when empty.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// Seconds as a short duration, whole seconds: `0s`, `45s`, `1h 2m 3s`.
pub fn duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

/// Seconds between two Unix times as a duration, `-` when either is unset.
pub fn elapsed(from: i64, to: i64) -> String {
    if from == 0 || to == 0 || to < from {
        "-".into()
    } else {
        duration((to - from) as f64)
    }
}

/// How long ago, coarse: `45s`, `12m`, `3h 5m`, `2d 4h` (`0s` when in the
/// future, e.g. with a skewed clock).
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{m}m")
    } else if s < 86_400 {
        match m % 60 {
            0 => format!("{h}h"),
            rm => format!("{h}h {rm}m"),
        }
    } else {
        match h % 24 {
            0 => format!("{d}d"),
            rh => format!("{d}d {rh}h"),
        }
    }
}

/// Print a list: a JSON array, or a table (a note when empty).
pub fn list<T>(
    format: Format,
    items: &[T],
    json: fn(&T) -> Value,
    table: fn(&[T]) -> String,
    empty: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&Value::Array(items.iter().map(json).collect()), false),
        Format::Table if items.is_empty() => println(empty),
        Format::Table => println(&table(items)),
    }
}

/// Print one object: JSON, or the text made by `text`.
pub fn one(format: Format, json: Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&json, false),
        Format::Table => println(&text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(size(5 * (1 << 40)), "5.0 TiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
        assert_eq!(rate(1_572_864.0), "1.5 MiB/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_764_052_020), "2025-11-25T06:27:00Z");
        assert_eq!(json_time(0), Value::Null);
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(3723.2), "1h 2m 3s");
        assert_eq!(elapsed(100, 0), "-");
        assert_eq!(elapsed(100, 190), "1m 30s");
        assert_eq!(age(-5), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(3 * 3600 + 5 * 60 + 9), "3h 5m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(2 * 86_400 + 4 * 3600 + 100), "2d 4h");
    }

    #[test]
    fn tables_are_borderless_and_trimmed() {
        let t = table(
            &["NAME", "STATE"],
            vec![
                vec!["web-1".into(), "connected".into()],
                vec!["db".into(), "-".into()],
            ],
        );
        assert_eq!(t, "NAME   STATE\nweb-1  connected\ndb     -");
        let f = fields(&[("id", "abc".into()), ("copies", "a\nb".into())]);
        assert_eq!(f, "id:      abc\ncopies:  a\n         b");
    }
}

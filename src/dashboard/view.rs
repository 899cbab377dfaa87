//! Numbers, sizes, durations and times as an operator reads them.

use chrono::{DateTime, Utc};

/// `1.5 MiB`, `312 B` (binary units, as the configuration writes them).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub(super) fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        3_600_000..86_400_000 => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
        _ => format!("{} d {} h", ms / 86_400_000, ms % 86_400_000 / 3_600_000),
    }
}

/// `2026-11-30 12:04:05` (UTC).
pub(super) fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `3 min ago`, `in 2 h 0 min`.
pub(super) fn relative(at: &DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ms = (now - *at).num_milliseconds();
    if ms >= 0 {
        format!("{} ago", duration_ms(ms))
    } else {
        format!("in {}", duration_ms(-ms))
    }
}

/// An optional time, or a dash.
pub(super) fn maybe_time(at: Option<&DateTime<Utc>>) -> String {
    at.map(time).unwrap_or_else(|| "—".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_an_operator_writes_them() {
        assert_eq!(bytes(312), "312 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_345), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 min 5 s");
        assert_eq!(duration_ms(7_800_000), "2 h 10 min");
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(
            relative(&(now - chrono::Duration::seconds(180)), now),
            "3 min 0 s ago"
        );
        assert_eq!(
            relative(&(now + chrono::Duration::seconds(30)), now),
            "in 30.0 s"
        );
    }
}

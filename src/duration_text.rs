//! Durations in config files: read with humantime (`90s`, `5m`, `7d`, `1h 30m`),
//! written in the largest unit that divides them exactly (`365d`, not
//! humantime's `11months 30days 3h 50m 24s`), so printed configs stay readable.
//! Each module's settings struct uses it as `#[serde(with = "crate::duration_text")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*value))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("'{text}': {e}")))
}

pub(crate) fn format(value: Duration) -> String {
    let millis = value.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis > 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_whole_units() {
        assert_eq!(format(Duration::from_secs(365 * 86_400)), "365d");
        assert_eq!(format(Duration::from_secs(12 * 3600)), "12h");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }
}

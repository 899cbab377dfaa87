//! Cursor watermarks: the largest cursor value an incremental or append
//! sync has committed, stored as text beside the replica version it
//! describes, and the lower bound of the next extraction.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};

/// What the replica stores with each committed version of an incremental
/// or append table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SyncState {
    /// The cursor column.
    pub cursor: String,
    /// The largest committed cursor value, as text.
    pub watermark: String,
}

/// Whether a column type can serve as a cursor.
pub(super) fn is_cursor_type(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Decimal128(..)
                | DataType::Float32
                | DataType::Float64
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
                | DataType::Utf8
                | DataType::Utf8View
                | DataType::LargeUtf8
        )
}

/// A cursor value as text (ISO 8601 for dates and timestamps).
pub(super) fn to_text(value: &ScalarValue) -> Option<String> {
    let array = value.to_array().ok()?;
    let text = cast(&array, &DataType::Utf8).ok()?;
    let text = text.as_string::<i32>();
    (!text.is_null(0)).then(|| text.value(0).to_string())
}

/// Text from [`to_text`] back into a value of `data_type`.
pub(super) fn from_text(text: &str, data_type: &DataType) -> Result<ScalarValue, String> {
    ScalarValue::try_from_string(text.to_string(), data_type)
        .map_err(|e| format!("stored watermark '{text}' is not a {data_type}: {e}"))
}

/// Checks an `overlap` against the cursor type: a duration (`"10m"`) for
/// dates and timestamps, a number for numeric cursors, nothing for text.
pub(super) fn check_overlap(overlap: &str, data_type: &DataType) -> Result<(), String> {
    lower_bound(
        &ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null),
        overlap,
    )
    .map(|_| ())
}

/// `value` minus `overlap` (see [`check_overlap`]); saturates at the type's limits.
pub(super) fn lower_bound(value: &ScalarValue, overlap: &str) -> Result<ScalarValue, String> {
    let duration = || {
        humantime::parse_duration(overlap).map_err(|e| {
            format!("overlap '{overlap}' is not a duration such as \"10m\" or \"1h\": {e}")
        })
    };
    let number = || {
        overlap
            .parse::<i64>()
            .map_err(|_| format!("overlap '{overlap}' must be a whole number for a numeric cursor"))
    };
    let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    Ok(match value {
        ScalarValue::TimestampSecond(v, tz) => {
            let by = i64::try_from(duration()?.as_secs()).unwrap_or(i64::MAX);
            ScalarValue::TimestampSecond(v.map(|v| v.saturating_sub(by)), tz.clone())
        }
        ScalarValue::TimestampMillisecond(v, tz) => {
            let by = i64::try_from(duration()?.as_millis()).unwrap_or(i64::MAX);
            ScalarValue::TimestampMillisecond(v.map(|v| v.saturating_sub(by)), tz.clone())
        }
        ScalarValue::TimestampMicrosecond(v, tz) => {
            let by = micros(duration()?);
            ScalarValue::TimestampMicrosecond(v.map(|v| v.saturating_sub(by)), tz.clone())
        }
        ScalarValue::TimestampNanosecond(v, tz) => {
            let by = i64::try_from(duration()?.as_nanos()).unwrap_or(i64::MAX);
            ScalarValue::TimestampNanosecond(v.map(|v| v.saturating_sub(by)), tz.clone())
        }
        ScalarValue::Date32(v) => {
            // Whole days, rounded up: an overlap never shrinks.
            let days = duration()?.as_secs().div_ceil(86_400);
            let by = i32::try_from(days).unwrap_or(i32::MAX);
            ScalarValue::Date32(v.map(|v| v.saturating_sub(by)))
        }
        ScalarValue::Date64(v) => {
            let by = i64::try_from(duration()?.as_millis()).unwrap_or(i64::MAX);
            ScalarValue::Date64(v.map(|v| v.saturating_sub(by)))
        }
        ScalarValue::Int8(v) => ScalarValue::Int8(v.map(narrow_sub(number()?))),
        ScalarValue::Int16(v) => ScalarValue::Int16(v.map(narrow_sub(number()?))),
        ScalarValue::Int32(v) => ScalarValue::Int32(v.map(narrow_sub(number()?))),
        ScalarValue::Int64(v) => ScalarValue::Int64(v.map(narrow_sub(number()?))),
        ScalarValue::UInt8(v) => ScalarValue::UInt8(v.map(narrow_sub(number()?))),
        ScalarValue::UInt16(v) => ScalarValue::UInt16(v.map(narrow_sub(number()?))),
        ScalarValue::UInt32(v) => ScalarValue::UInt32(v.map(narrow_sub(number()?))),
        ScalarValue::UInt64(v) => ScalarValue::UInt64(v.map(narrow_sub(number()?))),
        ScalarValue::Float32(v) => {
            let by = number()? as f32;
            ScalarValue::Float32(v.map(|v| v - by))
        }
        ScalarValue::Float64(v) => {
            let by = number()? as f64;
            ScalarValue::Float64(v.map(|v| v - by))
        }
        ScalarValue::Decimal128(v, p, s) => {
            let scaled =
                i128::from(number()?).saturating_mul(10i128.saturating_pow((*s).max(0) as u32));
            ScalarValue::Decimal128(v.map(|v| v.saturating_sub(scaled)), *p, *s)
        }
        ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_) => {
            return Err("a text cursor cannot have an overlap".into());
        }
        other => {
            return Err(format!(
                "a {} column cannot be a cursor; use a number, date, timestamp or text column",
                other.data_type()
            ));
        }
    })
}

/// `v - by` in the type of `v`, saturating at its limits.
fn narrow_sub<T>(by: i64) -> impl Fn(T) -> T
where
    T: Copy + Into<i128> + TryFrom<i128> + num_bounds::Bounded,
{
    move |v| {
        let wide = v.into() - i128::from(by);
        T::try_from(wide).unwrap_or(if wide < 0 { T::MIN } else { T::MAX })
    }
}

mod num_bounds {
    /// Integer limits, for saturating casts.
    pub(super) trait Bounded: Sized {
        const MIN: Self;
        const MAX: Self;
    }
    macro_rules! bounded {
        ($($t:ty),*) => {$(impl Bounded for $t { const MIN: Self = <$t>::MIN; const MAX: Self = <$t>::MAX; })*};
    }
    bounded!(i8, i16, i32, i64, u8, u16, u32, u64);
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn watermarks_round_trip_through_text() {
        for value in [
            ScalarValue::Int64(Some(-42)),
            ScalarValue::Decimal128(Some(12345), 10, 2),
            ScalarValue::Date32(Some(19_000)),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_123_456), None),
            ScalarValue::TimestampMicrosecond(Some(1_700_000_000_000_001), Some("UTC".into())),
            ScalarValue::Utf8(Some("2024-05-01/b".into())),
        ] {
            let text = to_text(&value).unwrap();
            assert_eq!(
                from_text(&text, &value.data_type()).unwrap(),
                value,
                "{text}"
            );
        }
    }

    #[test]
    fn overlaps_move_the_bound_back_in_the_cursor_unit() {
        let ts = ScalarValue::TimestampMicrosecond(Some(10_000_000), None);
        assert_eq!(
            lower_bound(&ts, "5s").unwrap(),
            ScalarValue::TimestampMicrosecond(Some(5_000_000), None)
        );
        assert_eq!(
            lower_bound(&ScalarValue::Date32(Some(100)), "36h").unwrap(),
            ScalarValue::Date32(Some(98))
        );
        assert_eq!(
            lower_bound(&ScalarValue::Int64(Some(100)), "7").unwrap(),
            ScalarValue::Int64(Some(93))
        );
        assert_eq!(
            lower_bound(&ScalarValue::Decimal128(Some(1000), 10, 2), "1").unwrap(),
            ScalarValue::Decimal128(Some(900), 10, 2)
        );
        assert_eq!(
            lower_bound(&ScalarValue::Int64(Some(i64::MIN + 1)), "5").unwrap(),
            ScalarValue::Int64(Some(i64::MIN))
        );
        assert!(lower_bound(&ts, "7").unwrap_err().contains("duration"));
        assert!(
            lower_bound(&ScalarValue::Int64(Some(1)), "5m")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(check_overlap("1m", &DataType::Utf8).is_err());
        assert!(check_overlap("1m", &DataType::Timestamp(TimeUnit::Nanosecond, None)).is_ok());
    }
}

//! Arrow types and values as DuckDB types and bound parameters, for
//! [`sql_expr`](super::sql_expr): only types whose values DuckDB holds
//! exactly.

use chrono::DateTime;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;

use super::duckdb_type;
use super::sql_expr::{Refusal, Rendered, refuse};

/// A timestamp as text DuckDB casts back exactly; NULL (refused as
/// unbindable) when out of chrono's range.
pub(super) fn timestamp_text(
    datetime: Option<DateTime<chrono::Utc>>,
    instant: bool,
) -> ScalarValue {
    // chrono writes years past 9999 as `+10000`, which DuckDB does not read.
    let datetime = datetime.filter(|d| (0..=9999).contains(&chrono::Datelike::year(d)));
    ScalarValue::Utf8(datetime.map(|d| {
        let text = d.naive_utc().format("%Y-%m-%d %H:%M:%S%.9f").to_string();
        if instant { format!("{text}+00") } else { text }
    }))
}

/// Decimal digits an integer type can hold.
pub(super) fn integer_digits(data_type: &DataType) -> Option<i32> {
    Some(match data_type {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

/// The DuckDB type with the same values as an Arrow type.
pub(crate) fn duck_type(data_type: &DataType) -> Rendered<String> {
    let exact = match data_type {
        DataType::Decimal128(_, s) => *s >= 0,
        // DuckDB keeps instants in microseconds.
        DataType::Timestamp(unit, Some(_)) => *unit == TimeUnit::Microsecond,
        DataType::Timestamp(_, None) => true,
        t => {
            t.is_integer()
                || t.is_floating() && *t != DataType::Float16
                || matches!(
                    t,
                    DataType::Boolean
                        | DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Date32
                )
        }
    };
    if !exact {
        return refuse(format!("type {data_type}"));
    }
    duckdb_type("", data_type).map_err(|e| Refusal(e.to_string()))
}

/// The DuckDB value bound for a literal; `None` for values outside the
/// supported set.
pub(crate) fn bind_value(value: &ScalarValue) -> Option<duckdb::types::Value> {
    use duckdb::types::Value;
    Some(match value {
        ScalarValue::Boolean(Some(v)) => Value::Boolean(*v),
        ScalarValue::Int8(Some(v)) => Value::TinyInt(*v),
        ScalarValue::Int16(Some(v)) => Value::SmallInt(*v),
        ScalarValue::Int32(Some(v)) => Value::Int(*v),
        ScalarValue::Int64(Some(v)) => Value::BigInt(*v),
        ScalarValue::UInt8(Some(v)) => Value::UTinyInt(*v),
        ScalarValue::UInt16(Some(v)) => Value::USmallInt(*v),
        ScalarValue::UInt32(Some(v)) => Value::UInt(*v),
        ScalarValue::UInt64(Some(v)) => Value::UBigInt(*v),
        ScalarValue::Float32(Some(v)) => Value::Float(*v),
        ScalarValue::Float64(Some(v)) => Value::Double(*v),
        ScalarValue::Decimal128(Some(v), p, s) if *s >= 0 => {
            Value::Decimal(duckdb::types::Decimal::new(*p, u8::try_from(*s).ok()?, *v).ok()?)
        }
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v))
            if !v.contains('\0') =>
        {
            Value::Text(v.clone())
        }
        ScalarValue::Date32(Some(v)) => Value::Date32(*v),
        _ => return None,
    })
}

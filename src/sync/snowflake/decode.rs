//! Snowflake's Arrow result encoding, decoded into the types replicas keep.
//!
//! Snowflake sends values in a wire encoding described by each column's
//! `rowtype` entry (and the same facts in field metadata): numbers as
//! unscaled integers of whatever width fits the batch, times and timestamps
//! as integers scaled by `10^-scale` seconds or as structs of epoch seconds,
//! nanosecond fraction and time zone. This module turns one such batch into
//! a batch of the column's lasting type, so every batch of a table has one
//! schema whatever widths Snowflake chose:
//!
//! | Snowflake | replica (Arrow) |
//! |---|---|
//! | NUMBER(p≤18, 0) | Int64 |
//! | NUMBER(p, s) otherwise | Decimal128(p, s) |
//! | FLOAT | Float64 |
//! | VARCHAR, CHAR | Utf8 |
//! | VARIANT, OBJECT, ARRAY | Utf8 holding JSON (`arrow.json` extension) |
//! | BINARY | Binary |
//! | BOOLEAN | Boolean |
//! | DATE | Date32 |
//! | TIME | Time64(µs) |
//! | TIMESTAMP_NTZ | Timestamp(µs) (wall clock, no zone) |
//! | TIMESTAMP_LTZ, TIMESTAMP_TZ | Timestamp(µs, UTC) (the instant) |
//!
//! Sub-microsecond digits are truncated toward negative infinity (DuckDB
//! keeps microseconds). A TIMESTAMP_TZ's own offset is not kept: the
//! instant is.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Int32Type, Int64Type, Schema, SchemaRef,
    Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use serde::Deserialize;

/// One result column as the query response's `rowtype` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ColumnType {
    /// Column name.
    pub name: String,
    /// Logical type, e.g. `fixed`, `text`, `timestamp_ntz` (any case).
    #[serde(rename = "type")]
    pub kind: String,
    /// Digits, for numbers.
    #[serde(default)]
    pub precision: Option<u8>,
    /// Fraction digits: for numbers, and for times and timestamps.
    #[serde(default)]
    pub scale: Option<i8>,
    /// Whether NULL may appear.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

/// A column Snowflake encoded in a way this decoder does not expect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A logical type with no replica mapping.
    #[error("column {column}: Snowflake type {kind} is not supported")]
    Unsupported {
        /// Column.
        column: String,
        /// Its Snowflake type.
        kind: String,
    },
    /// The physical Arrow type does not fit the logical type.
    #[error("column {column}: {kind} arrived as Arrow {arrow}, which airlock cannot decode")]
    Encoding {
        /// Column.
        column: String,
        /// Its Snowflake type.
        kind: String,
        /// The Arrow type received.
        arrow: String,
    },
    /// A value outside what the replica type can hold.
    #[error("column {column}: a value is out of range for {target}")]
    OutOfRange {
        /// Column.
        column: String,
        /// Replica type.
        target: String,
    },
    /// The batch and the row type disagree.
    #[error("the result has {columns} columns but its row type describes {described}")]
    Shape {
        /// Columns in the batch.
        columns: usize,
        /// Entries in rowtype.
        described: usize,
    },
}

/// The replica field of a Snowflake column.
pub fn replica_field(column: &ColumnType) -> Result<Field, DecodeError> {
    let kind = column.kind.to_ascii_lowercase();
    let precision = column.precision.unwrap_or(38).clamp(1, 38);
    let scale = column.scale.unwrap_or(0);
    let data_type = match kind.as_str() {
        "fixed" if scale == 0 && precision <= 18 => DataType::Int64,
        "fixed" => DataType::Decimal128(precision, scale.max(0)),
        "real" => DataType::Float64,
        "text" | "char" | "variant" | "object" | "array" => DataType::Utf8,
        "binary" => DataType::Binary,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp_ltz" | "timestamp_tz" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        _ => {
            return Err(DecodeError::Unsupported {
                column: column.name.clone(),
                kind: column.kind.clone(),
            });
        }
    };
    let field = Field::new(&column.name, data_type, column.nullable);
    Ok(if matches!(kind.as_str(), "variant" | "object" | "array") {
        field.with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            "arrow.json".to_string(),
        )]))
    } else {
        field
    })
}

/// The replica schema of a result.
pub fn replica_schema(columns: &[ColumnType]) -> Result<SchemaRef, DecodeError> {
    let fields = columns
        .iter()
        .map(replica_field)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Decodes one batch of a result into `schema` (from [`replica_schema`]).
pub fn decode_batch(
    batch: &RecordBatch,
    columns: &[ColumnType],
    schema: &SchemaRef,
) -> Result<RecordBatch, DecodeError> {
    if batch.num_columns() != columns.len() {
        return Err(DecodeError::Shape {
            columns: batch.num_columns(),
            described: columns.len(),
        });
    }
    let arrays = batch
        .columns()
        .iter()
        .zip(columns)
        .zip(schema.fields())
        .map(|((array, column), field)| decode_column(array, column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|_| DecodeError::Shape {
        columns: batch.num_columns(),
        described: columns.len(),
    })
}

fn decode_column(
    array: &ArrayRef,
    column: &ColumnType,
    target: &DataType,
) -> Result<ArrayRef, DecodeError> {
    let kind = column.kind.to_ascii_lowercase();
    let scale = i32::from(column.scale.unwrap_or(0));
    let encoding = || DecodeError::Encoding {
        column: column.name.clone(),
        kind: column.kind.clone(),
        arrow: array.data_type().to_string(),
    };
    let out_of_range = || DecodeError::OutOfRange {
        column: column.name.clone(),
        target: target.to_string(),
    };
    match (kind.as_str(), array.data_type()) {
        // Unscaled integers of any width: the raw value is the decimal's
        // unscaled value.
        ("fixed", DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) => {
            let raw = cast(array, &DataType::Int64).map_err(|_| encoding())?;
            let raw = raw.as_primitive::<Int64Type>();
            match target {
                DataType::Decimal128(p, s) => Ok(Arc::new(
                    raw.unary::<_, Decimal128Type>(i128::from)
                        .with_precision_and_scale(*p, *s)
                        .map_err(|_| out_of_range())?,
                )),
                _ => Ok(Arc::new(raw.clone())),
            }
        }
        ("fixed", DataType::Decimal128(_, _)) => {
            let decimal: &Decimal128Array = array.as_primitive();
            match target {
                DataType::Int64 => cast(array, target).map_err(|_| out_of_range()),
                DataType::Decimal128(p, s) => Ok(Arc::new(
                    decimal
                        .clone()
                        .with_precision_and_scale(*p, *s)
                        .map_err(|_| out_of_range())?,
                )),
                _ => Err(encoding()),
            }
        }
        ("time", DataType::Int32 | DataType::Int64) => {
            let raw = cast(array, &DataType::Int64).map_err(|_| encoding())?;
            let micros =
                rescale(raw.as_primitive::<Int64Type>(), scale, 6).ok_or_else(out_of_range)?;
            Ok(Arc::new(micros.reinterpret_cast::<Time64MicrosecondType>()))
        }
        ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz", DataType::Int64) => {
            let micros =
                rescale(array.as_primitive::<Int64Type>(), scale, 6).ok_or_else(out_of_range)?;
            timestamps(micros, target)
        }
        ("timestamp_ntz" | "timestamp_ltz" | "timestamp_tz", DataType::Struct(_)) => {
            let micros = struct_timestamps(array.as_struct(), scale).ok_or_else(encoding)?;
            timestamps(micros, target)
        }
        (_, actual) if actual == target => Ok(Arc::clone(array)),
        // Same logical content, another layout (Utf8View, LargeUtf8,
        // Float32, LargeBinary …).
        (
            "text" | "char" | "variant" | "object" | "array" | "real" | "binary" | "boolean"
            | "date",
            _,
        ) => cast(array, target).map_err(|_| encoding()),
        _ => Err(encoding()),
    }
}

fn timestamps(micros: Int64Array, target: &DataType) -> Result<ArrayRef, DecodeError> {
    let array = micros.reinterpret_cast::<TimestampMicrosecondType>();
    Ok(match target {
        DataType::Timestamp(_, Some(zone)) => Arc::new(array.with_timezone(Arc::clone(zone))),
        _ => Arc::new(array),
    })
}

/// `raw` in units of 10^-`from` seconds, in units of 10^-`to` (rounding
/// toward negative infinity); `None` on overflow.
fn rescale(raw: &Int64Array, from: i32, to: i32) -> Option<Int64Array> {
    let mut out = Vec::with_capacity(raw.len());
    for value in raw.iter() {
        out.push(match value {
            None => None,
            Some(v) if from <= to => Some(v.checked_mul(10_i64.checked_pow((to - from) as u32)?)?),
            Some(v) => Some(v.div_euclid(10_i64.checked_pow((from - to) as u32)?)),
        });
    }
    Some(Int64Array::from(out))
}

/// Microseconds since the epoch from Snowflake's timestamp structs:
/// `{epoch, fraction[, timezone]}` with epoch in seconds and fraction in
/// nanoseconds, or `{epoch, timezone}` with epoch scaled like an integer
/// timestamp. A row is NULL if the struct or its epoch is (emulators send
/// NULL children under a struct without its own null flag).
fn struct_timestamps(array: &StructArray, scale: i32) -> Option<Int64Array> {
    let epoch = cast(array.column_by_name("epoch")?, &DataType::Int64).ok()?;
    let epoch = epoch.as_primitive::<Int64Type>();
    let fraction = match array.column_by_name("fraction") {
        Some(f) => Some(cast(f, &DataType::Int32).ok()?),
        None => None,
    };
    let scaled_epoch = if fraction.is_none() {
        Some(rescale(epoch, scale, 6)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(array.len());
    for row in 0..array.len() {
        if array.is_null(row) || epoch.is_null(row) {
            out.push(None);
            continue;
        }
        out.push(match (&fraction, &scaled_epoch) {
            (Some(fraction), _) => {
                let nanos = fraction.as_primitive::<Int32Type>();
                let nanos = if nanos.is_null(row) {
                    0
                } else {
                    i64::from(nanos.value(row))
                };
                Some(
                    epoch
                        .value(row)
                        .checked_mul(1_000_000)?
                        .checked_add(nanos.div_euclid(1_000))?,
                )
            }
            (None, Some(scaled)) => Some(scaled.value(row)),
            (None, None) => return None,
        });
    }
    Some(Int64Array::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Float64Array, Int8Array, Int16Array, Int32Array,
        StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::arrow::datatypes::Fields;

    fn column(kind: &str, precision: Option<u8>, scale: Option<i8>) -> ColumnType {
        ColumnType {
            name: "c".into(),
            kind: kind.into(),
            precision,
            scale,
            nullable: true,
        }
    }

    fn decode(array: ArrayRef, column: ColumnType) -> ArrayRef {
        let columns = vec![column];
        let schema = replica_schema(&columns).unwrap();
        let batch = RecordBatch::try_from_iter([("c", array)]).unwrap();
        let decoded = decode_batch(&batch, &columns, &schema).unwrap();
        assert_eq!(decoded.schema(), schema, "one schema whatever the encoding");
        Arc::clone(decoded.column(0))
    }

    fn micros(values: &[Option<i64>], zone: bool) -> ArrayRef {
        let array = TimestampMicrosecondArray::from(values.to_vec());
        if zone {
            Arc::new(array.with_timezone("UTC"))
        } else {
            Arc::new(array)
        }
    }

    /// Every mapping, each with a NULL and extreme values, from each wire
    /// encoding Snowflake (or fakesnow) uses for it.
    #[test]
    fn each_type_decodes_with_nulls_and_extremes() {
        let cases: Vec<(&str, ArrayRef, ColumnType, ArrayRef)> = vec![
            (
                "NUMBER(18,0) as int8",
                Arc::new(Int8Array::from(vec![Some(i8::MIN), None, Some(i8::MAX)])),
                column("fixed", Some(18), Some(0)),
                Arc::new(Int64Array::from(vec![Some(-128), None, Some(127)])),
            ),
            (
                "NUMBER(18,0) as int64",
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(i64::MAX)])),
                column("fixed", Some(18), Some(0)),
                Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(i64::MAX)])),
            ),
            (
                "NUMBER(10,2) as unscaled int16",
                Arc::new(Int16Array::from(vec![Some(-12345), None, Some(1)])),
                column("fixed", Some(10), Some(2)),
                Arc::new(
                    Decimal128Array::from(vec![Some(-12345), None, Some(1)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            (
                "NUMBER(38,0) as decimal128",
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(10_i128.pow(38) - 1),
                        None,
                        Some(-(10_i128.pow(38) - 1)),
                    ])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
                ),
                column("fixed", Some(38), Some(0)),
                Arc::new(
                    Decimal128Array::from(vec![
                        Some(10_i128.pow(38) - 1),
                        None,
                        Some(-(10_i128.pow(38) - 1)),
                    ])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
                ),
            ),
            (
                "FLOAT",
                Arc::new(Float64Array::from(vec![
                    Some(f64::MAX),
                    None,
                    Some(f64::MIN_POSITIVE),
                ])),
                column("real", None, None),
                Arc::new(Float64Array::from(vec![
                    Some(f64::MAX),
                    None,
                    Some(f64::MIN_POSITIVE),
                ])),
            ),
            (
                "VARCHAR",
                Arc::new(StringArray::from(vec![Some("ü—€"), None, Some("")])),
                column("text", None, None),
                Arc::new(StringArray::from(vec![Some("ü—€"), None, Some("")])),
            ),
            (
                "VARIANT",
                Arc::new(StringArray::from(vec![
                    Some("{\"a\":[1,2]}"),
                    None,
                    Some("null"),
                ])),
                column("variant", None, None),
                Arc::new(StringArray::from(vec![
                    Some("{\"a\":[1,2]}"),
                    None,
                    Some("null"),
                ])),
            ),
            (
                "BINARY",
                Arc::new(BinaryArray::from(vec![
                    Some(&[0u8, 255][..]),
                    None,
                    Some(&[][..]),
                ])),
                column("binary", None, None),
                Arc::new(BinaryArray::from(vec![
                    Some(&[0u8, 255][..]),
                    None,
                    Some(&[][..]),
                ])),
            ),
            (
                "BOOLEAN",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
                column("boolean", None, None),
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            (
                "DATE",
                Arc::new(Date32Array::from(vec![
                    Some(-719_162),
                    None,
                    Some(2_932_896),
                ])),
                column("date", None, None),
                Arc::new(Date32Array::from(vec![
                    Some(-719_162),
                    None,
                    Some(2_932_896),
                ])),
            ),
            (
                "TIME(9) as int64 nanoseconds",
                Arc::new(Int64Array::from(vec![
                    Some(86_399_999_999_999),
                    None,
                    Some(0),
                ])),
                column("time", None, Some(9)),
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(86_399_999_999),
                    None,
                    Some(0),
                ])),
            ),
            (
                "TIME(0) as int32 seconds",
                Arc::new(Int32Array::from(vec![Some(86_399), None, Some(1)])),
                column("time", None, Some(0)),
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(86_399_000_000),
                    None,
                    Some(1_000_000),
                ])),
            ),
            (
                "TIMESTAMP_NTZ(3) as int64, before 1970",
                Arc::new(Int64Array::from(vec![
                    Some(-1_500),
                    None,
                    Some(253_402_300_799_999),
                ])),
                column("timestamp_ntz", None, Some(3)),
                micros(
                    &[Some(-1_500_000), None, Some(253_402_300_799_999_000)],
                    false,
                ),
            ),
            (
                "TIMESTAMP_LTZ(9) as int64, sub-microseconds floored",
                Arc::new(Int64Array::from(vec![Some(-1), None, Some(1_999)])),
                column("timestamp_ltz", None, Some(9)),
                micros(&[Some(-1), None, Some(1)], true),
            ),
        ];
        for (label, wire, column, expected) in cases {
            let decoded = decode(wire, column);
            assert_eq!(&decoded, &expected, "{label}");
        }
    }

    fn timestamp_struct(fields: Vec<(&str, ArrayRef)>, nulls: Option<NullBuffer>) -> ArrayRef {
        let (names, arrays): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
        let fields: Fields = names
            .iter()
            .zip(&arrays)
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        Arc::new(StructArray::new(fields, arrays, nulls))
    }

    #[test]
    fn timestamp_structs_decode_to_the_instant() {
        // {epoch s, fraction ns}: NTZ, with a NULL flagged on the struct.
        let ntz = timestamp_struct(
            vec![
                (
                    "epoch",
                    Arc::new(Int64Array::from(vec![-1, 0, 1_700_000_000])),
                ),
                (
                    "fraction",
                    Arc::new(Int32Array::from(vec![999_999_999, 0, 123_456_789])),
                ),
            ],
            Some(NullBuffer::from(vec![true, false, true])),
        );
        assert_eq!(
            &decode(ntz, column("timestamp_ntz", None, Some(9))),
            &micros(&[Some(-1), None, Some(1_700_000_000_123_456)], false)
        );
        // {epoch s, fraction ns, timezone}: TZ keeps the instant; a NULL sent
        // as null children under an unflagged struct (fakesnow) is NULL.
        let tz = timestamp_struct(
            vec![
                ("epoch", Arc::new(Int64Array::from(vec![Some(0), None]))),
                (
                    "fraction",
                    Arc::new(Int32Array::from(vec![Some(5_000), None])),
                ),
                (
                    "timezone",
                    Arc::new(Int32Array::from(vec![Some(1440 + 120), None])),
                ),
            ],
            None,
        );
        assert_eq!(
            &decode(tz, column("timestamp_tz", None, Some(9))),
            &micros(&[Some(5), None], true)
        );
        // {epoch scaled, timezone} (byteLength 8).
        let tz8 = timestamp_struct(
            vec![
                ("epoch", Arc::new(Int64Array::from(vec![1_234]))),
                ("timezone", Arc::new(Int32Array::from(vec![1440]))),
            ],
            None,
        );
        assert_eq!(
            &decode(tz8, column("timestamp_tz", None, Some(3))),
            &micros(&[Some(1_234_000)], true)
        );
    }

    #[test]
    fn bad_input_is_named() {
        let columns = vec![column("geography", None, None)];
        let err = replica_schema(&columns).unwrap_err();
        assert!(err.to_string().contains("GEOGRAPHY") || err.to_string().contains("geography"));

        // A value past the replica type's range is refused, not wrapped.
        let columns = vec![column("timestamp_ntz", None, Some(0))];
        let schema = replica_schema(&columns).unwrap();
        let batch = RecordBatch::try_from_iter([(
            "c",
            Arc::new(Int64Array::from(vec![i64::MAX])) as ArrayRef,
        )])
        .unwrap();
        let err = decode_batch(&batch, &columns, &schema).unwrap_err();
        assert!(matches!(err, DecodeError::OutOfRange { .. }), "{err}");

        // A number sent as text is an encoding this decoder does not guess at.
        let columns = vec![column("fixed", Some(10), Some(2))];
        let schema = replica_schema(&columns).unwrap();
        let batch = RecordBatch::try_from_iter([(
            "c",
            Arc::new(StringArray::from(vec!["1.5"])) as ArrayRef,
        )])
        .unwrap();
        let err = decode_batch(&batch, &columns, &schema).unwrap_err();
        assert!(matches!(err, DecodeError::Encoding { .. }), "{err}");
    }

    #[test]
    fn rowtype_entries_parse_from_the_query_response() {
        let rowtype: Vec<ColumnType> = serde_json::from_str(
            r#"[{"name":"AMOUNT","type":"fixed","precision":10,"scale":2,"nullable":true,"length":null,"byteLength":null},
                {"name":"TS","type":"timestamp_tz","precision":0,"scale":9,"nullable":false}]"#,
        )
        .unwrap();
        let schema = replica_schema(&rowtype).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Decimal128(10, 2));
        assert!(!schema.field(1).is_nullable());
    }
}

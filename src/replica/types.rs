//! Arrow → DuckDB type mapping for replica tables.
//!
//! Loads create the staging table from the source's Arrow schema, so the
//! mapping decides what precision survives: integers stay integers of the
//! same width and signedness, decimals keep precision and scale, timestamps
//! keep their unit and whether they carry a time zone. A few Arrow types
//! DuckDB's appender cannot take are first cast to the nearest type that
//! loses nothing ([`storage_type`]).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast_with_options;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::ReplicaError;
use crate::table_name::quote_ident;

/// The Arrow type a column is appended as: `data_type` itself, or a
/// lossless stand-in DuckDB's appender understands.
pub(crate) fn storage_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Null => DataType::Utf8,
        DataType::Float16 => DataType::Float32,
        DataType::Dictionary(_, value) => storage_type(value),
        DataType::Date64 => DataType::Date32,
        DataType::Decimal256(p, s) if *p <= 38 => DataType::Decimal128(*p, *s),
        other => other.clone(),
    }
}

/// The DuckDB column type for an Arrow type.
pub fn duckdb_type(column: &str, data_type: &DataType) -> Result<String, ReplicaError> {
    let unsupported = |reason: &str| ReplicaError::UnsupportedType {
        column: column.to_string(),
        data_type: data_type.to_string(),
        reason: reason.to_string(),
    };
    Ok(match storage_type(data_type) {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        DataType::Duration(_) | DataType::Interval(_) => "INTERVAL".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            if s < 0 {
                return Err(unsupported("negative decimal scale"));
            }
            format!("DECIMAL({p},{s})")
        }
        DataType::Decimal256(..) => {
            return Err(unsupported("DuckDB decimals hold at most 38 digits"));
        }
        DataType::List(field) | DataType::LargeList(field) => {
            format!("{}[]", duckdb_type(column, field.data_type())?)
        }
        DataType::FixedSizeList(field, n) => {
            format!("{}[{n}]", duckdb_type(column, field.data_type())?)
        }
        DataType::Struct(fields) => {
            let members = fields
                .iter()
                .map(|f| {
                    Ok(format!(
                        "{} {}",
                        quote_ident(f.name()),
                        duckdb_type(column, f.data_type())?
                    ))
                })
                .collect::<Result<Vec<_>, ReplicaError>>()?;
            format!("STRUCT({})", members.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                duckdb_type(column, kv[0].data_type())?,
                duckdb_type(column, kv[1].data_type())?
            ),
            _ => return Err(unsupported("malformed map")),
        },
        _ => return Err(unsupported("no DuckDB equivalent")),
    })
}

/// `CREATE TABLE` column list for a schema.
pub(crate) fn column_definitions(schema: &Schema) -> Result<String, ReplicaError> {
    if schema.fields().is_empty() {
        return Err(ReplicaError::UnsupportedType {
            column: String::new(),
            data_type: "empty schema".into(),
            reason: "a table needs at least one column".into(),
        });
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(format!(
                "{} {}",
                quote_ident(f.name()),
                duckdb_type(f.name(), f.data_type())?
            ))
        })
        .collect::<Result<Vec<_>, ReplicaError>>()?;
    Ok(columns.join(", "))
}

/// The schema batches are appended with.
pub(crate) fn storage_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), storage_type(f.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

/// Casts a batch's columns to their storage types.
pub(crate) fn to_storage(
    batch: &RecordBatch,
    storage: &SchemaRef,
) -> Result<RecordBatch, ReplicaError> {
    let columns = batch
        .columns()
        .iter()
        .zip(storage.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast_with_options(column, field.data_type(), &super::STRICT_CAST)
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(storage),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_kept() {
        let cases = [
            (DataType::Int32, "INTEGER"),
            (DataType::UInt64, "UBIGINT"),
            (DataType::Decimal128(38, 10), "DECIMAL(38,10)"),
            (DataType::Decimal256(20, 2), "DECIMAL(20,2)"),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                "TIMESTAMP_NS",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                "TIMESTAMPTZ",
            ),
            (DataType::Utf8View, "VARCHAR"),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                "VARCHAR",
            ),
            (
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                "BIGINT[]",
            ),
        ];
        for (arrow, duck) in cases {
            assert_eq!(duckdb_type("c", &arrow).unwrap(), duck, "{arrow}");
        }
    }

    #[test]
    fn unstorable_types_name_the_column() {
        let err = duckdb_type("big", &DataType::Decimal256(60, 0)).unwrap_err();
        assert!(err.to_string().contains("'big'"), "{err}");
    }

    #[test]
    fn quoted_column_names() {
        let schema = Schema::new(vec![Field::new("we\"ird name", DataType::Int64, true)]);
        assert_eq!(
            column_definitions(&schema).unwrap(),
            "\"we\"\"ird name\" BIGINT"
        );
    }
}

//! Parquet has no type for Arrow's month-day-nanosecond intervals (its own
//! INTERVAL keeps milliseconds), so a snapshot stores such a column as a
//! struct of its three parts, marked in the field's metadata, and turns it
//! back when loading: the replica gets exactly the values written.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, IntervalMonthDayNanoArray, RecordBatch,
    StructArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, Schema,
    SchemaRef,
};
use datafusion::arrow::error::ArrowError;

/// The metadata key marking an encoded interval column.
const MARK: &str = "airlock.snapshot";
const INTERVAL: &str = "interval_month_day_nano";

fn parts() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("nanoseconds", DataType::Int64, false),
    ])
}

fn is_interval(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Interval(IntervalUnit::MonthDayNano))
}

fn is_encoded(field: &Field) -> bool {
    field.metadata().get(MARK).map(String::as_str) == Some(INTERVAL)
}

/// The schema a snapshot file is written with.
pub(super) fn stored_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if is_interval(field.data_type()) {
                let mut metadata = field.metadata().clone();
                metadata.insert(MARK.into(), INTERVAL.into());
                Field::new(field.name(), DataType::Struct(parts()), field.is_nullable())
                    .with_metadata(metadata)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema a snapshot file's rows are loaded with.
pub(super) fn loaded_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if is_encoded(field) {
                let metadata: HashMap<String, String> = field
                    .metadata()
                    .iter()
                    .filter(|(k, _)| k.as_str() != MARK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Field::new(
                    field.name(),
                    DataType::Interval(IntervalUnit::MonthDayNano),
                    field.is_nullable(),
                )
                .with_metadata(metadata)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch to write: interval columns as structs.
pub(super) fn encode(batch: &RecordBatch, stored: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !is_interval(column.data_type()) {
                return Ok(Arc::clone(column));
            }
            let values = column.as_primitive::<IntervalMonthDayNanoType>();
            let months: Int32Array = values.iter().map(|v| v.map_or(0, |v| v.months)).collect();
            let days: Int32Array = values.iter().map(|v| v.map_or(0, |v| v.days)).collect();
            let nanos: Int64Array = values
                .iter()
                .map(|v| v.map_or(0, |v| v.nanoseconds))
                .collect();
            let fields: Vec<ArrayRef> = vec![Arc::new(months), Arc::new(days), Arc::new(nanos)];
            let encoded = StructArray::try_new(parts(), fields, values.nulls().cloned())?;
            Ok(Arc::new(encoded) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(Arc::clone(stored), columns)
}

/// A batch read back: encoded structs as intervals again.
pub(super) fn decode(batch: &RecordBatch, loaded: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(column, field)| {
            if !is_encoded(field) {
                return Ok(Arc::clone(column));
            }
            let encoded = column.as_struct();
            let months = encoded
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let days = encoded
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let nanos = encoded
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let values: IntervalMonthDayNanoArray = (0..encoded.len())
                .map(|i| {
                    encoded.is_valid(i).then(|| {
                        IntervalMonthDayNano::new(months.value(i), days.value(i), nanos.value(i))
                    })
                })
                .collect();
            Ok(Arc::new(values) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(Arc::clone(loaded), columns)
}

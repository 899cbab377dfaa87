//! DuckDB's crate is built on arrow 60, DataFusion on arrow 58. Arrays and
//! schemas cross between the two through the Arrow C data interface, which
//! both implement: no buffer is copied, only the structs describing them.

use std::mem::transmute;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StructArray};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi};
use duckdb::arrow as duck;

/// A chunk DuckDB produced, as DataFusion's array.
pub(crate) fn struct_array(chunk: &duck::array::StructArray) -> Result<StructArray, ArrowError> {
    let data = duck::array::Array::to_data(chunk);
    let (array, schema) = duck::ffi::to_ffi(&data).map_err(foreign)?;
    // SAFETY: both crates define these as the C data interface's
    // `ArrowArray` and `ArrowSchema` (#[repr(C)], the same fields;
    // `transmute` checks the sizes). The release callbacks move with the
    // structs, so each buffer is still freed exactly once, by its owner.
    let (array, schema) = unsafe {
        (
            transmute::<duck::ffi::FFI_ArrowArray, FFI_ArrowArray>(array),
            transmute::<duck::ffi::FFI_ArrowSchema, FFI_ArrowSchema>(schema),
        )
    };
    // SAFETY: `array` and `schema` describe the same, valid array (above).
    let data = unsafe { from_ffi(array, &schema) }?;
    Ok(StructArray::from(data))
}

/// A batch DuckDB produced, as DataFusion's batch.
pub(crate) fn record_batch(
    batch: duck::record_batch::RecordBatch,
) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let array = struct_array(&duck::array::StructArray::from(batch))?;
    let (fields, columns, _) = array.into_parts();
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// A schema DuckDB described, as DataFusion's schema.
pub(crate) fn schema(schema: &duck::datatypes::Schema) -> Result<SchemaRef, ArrowError> {
    let ffi = duck::ffi::FFI_ArrowSchema::try_from(schema).map_err(foreign)?;
    // SAFETY: as in `struct_array`.
    let ffi = unsafe { transmute::<duck::ffi::FFI_ArrowSchema, FFI_ArrowSchema>(ffi) };
    Ok(Arc::new(Schema::try_from(&ffi)?))
}

fn foreign(error: duck::error::ArrowError) -> ArrowError {
    ArrowError::ExternalError(Box::new(error))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Decimal128Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn duckdb_results_cross_to_datafusion_arrow_unchanged() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare("SELECT 7::BIGINT AS n, 'é' AS s, 1.25::DECIMAL(10,2) AS d, NULL::BIGINT AS z UNION ALL SELECT -1, NULL, 0.01, 3")
            .unwrap();
        let arrow = stmt.query_arrow([]).unwrap();
        let schema = super::schema(&arrow.get_schema()).unwrap();
        assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(10, 2));
        let batches: Vec<_> = arrow.map(|b| super::record_batch(b).unwrap()).collect();
        let batch =
            &datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let n = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.values(), &[7, -1]);
        let s = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((s.value(0), s.is_null(1)), ("é", true));
        let d = batch
            .column(2)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(d.values(), &[125, 1]);
        assert_eq!(batch.column(3).null_count(), 1);
    }
}

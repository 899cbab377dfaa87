//! Parquet encoding that keeps every core busy.
//!
//! arrow-rs's `AsyncArrowWriter` encodes a row group's columns one after the
//! other on the task that feeds it, so an export ran on one core while the
//! query that fed it waited. Here the columns of a row group are encoded in
//! parallel on blocking threads, while the next row group is gathered from
//! the stream: the file is the same Parquet, written in the same order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use tokio::task::JoinHandle;

/// Rows per row group: bounds what is held in memory (two row groups: the
/// one encoding and the one being gathered).
const ROW_GROUP_ROWS: usize = 128 * 1024;

type Encoded = Result<Vec<ArrowColumnChunk>, ParquetError>;
/// A leaf column's writer and the slices of it to encode.
type ColumnWork = (ArrowColumnWriter, Vec<ArrowLeafColumn>);

/// A Parquet file built row group by row group; the caller moves the bytes
/// each step returns to the store.
pub(super) struct ParquetEncoder {
    file: SerializedFileWriter<Vec<u8>>,
    factory: Arc<ArrowRowGroupWriterFactory>,
    schema: SchemaRef,
    gathering: Vec<RecordBatch>,
    gathered_rows: usize,
    encoding: Option<JoinHandle<Encoded>>,
    row_groups: usize,
}

impl ParquetEncoder {
    pub(super) fn try_new(schema: &SchemaRef) -> Result<Self, ParquetError> {
        // Snappy, as DuckDB's COPY writes: several times smaller than plain
        // pages, at little CPU, so more fits under the size limit.
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_compression(Compression::SNAPPY)
            .build();
        // Built through ArrowWriter so the file carries the Arrow schema
        // (readers get back exactly the types that were written).
        let (file, factory) =
            ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(properties))?
                .into_serialized_writer()?;
        Ok(Self {
            file,
            factory: Arc::new(factory),
            schema: Arc::clone(schema),
            gathering: Vec::new(),
            gathered_rows: 0,
            encoding: None,
            row_groups: 0,
        })
    }

    /// Adds a batch; returns the bytes of the file completed so far, if a row
    /// group was finished.
    pub(super) async fn write(&mut self, batch: RecordBatch) -> Result<Bytes, ParquetError> {
        let mut done = Vec::new();
        let mut rest = batch;
        while self.gathered_rows + rest.num_rows() >= ROW_GROUP_ROWS {
            let take = ROW_GROUP_ROWS - self.gathered_rows;
            self.gathering.push(rest.slice(0, take));
            rest = rest.slice(take, rest.num_rows() - take);
            done.extend_from_slice(&self.start_row_group().await?);
        }
        if rest.num_rows() > 0 {
            self.gathered_rows += rest.num_rows();
            self.gathering.push(rest);
        }
        Ok(Bytes::from(done))
    }

    /// Encodes what is left and returns the rest of the file, footer last.
    pub(super) async fn finish(mut self) -> Result<Bytes, ParquetError> {
        let mut done = Vec::new();
        if self.gathered_rows > 0 {
            done.extend_from_slice(&self.start_row_group().await?);
        }
        done.extend_from_slice(&self.append_encoded().await?);
        self.file.finish()?;
        done.append(self.file.inner_mut());
        Ok(Bytes::from(done))
    }

    /// Hands the gathered rows to the encoder, once the previous row group
    /// is written (row groups stay in order); returns that one's bytes.
    async fn start_row_group(&mut self) -> Result<Vec<u8>, ParquetError> {
        let previous = self.append_encoded().await?;
        let batches = std::mem::take(&mut self.gathering);
        self.gathered_rows = 0;
        let factory = Arc::clone(&self.factory);
        let schema = Arc::clone(&self.schema);
        let index = self.row_groups;
        self.row_groups += 1;
        self.encoding = Some(tokio::task::spawn_blocking(move || {
            encode_row_group(&factory, index, &schema, &batches)
        }));
        Ok(previous)
    }

    /// Waits for the row group being encoded and appends it to the file.
    async fn append_encoded(&mut self) -> Result<Vec<u8>, ParquetError> {
        let Some(encoding) = self.encoding.take() else {
            return Ok(Vec::new());
        };
        let chunks = encoding
            .await
            .map_err(|e| ParquetError::General(format!("encoding a row group: {e}")))??;
        let mut row_group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.file.flush()?;
        Ok(std::mem::take(self.file.inner_mut()))
    }
}

/// Encodes one row group, its columns spread over the machine's cores.
fn encode_row_group(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Encoded {
    // One writer per leaf column, in the file's column order; a nested
    // field has several leaves.
    let mut columns: Vec<ColumnWork> = factory
        .create_column_writers(index)?
        .into_iter()
        .map(|writer| (writer, Vec::new()))
        .collect();
    for batch in batches {
        let mut leaf = 0;
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            for leaves in compute_leaves(field, array)? {
                let Some((_, queue)) = columns.get_mut(leaf) else {
                    return Err(ParquetError::General(
                        "more leaf columns than the schema has".into(),
                    ));
                };
                queue.push(leaves);
                leaf += 1;
            }
        }
    }
    let work: Vec<Mutex<Option<ColumnWork>>> =
        columns.into_iter().map(|c| Mutex::new(Some(c))).collect();
    let results: Vec<Mutex<Option<Result<ArrowColumnChunk, ParquetError>>>> =
        work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    // Each thread takes the next column not yet taken: wide string columns
    // cost many times a narrow one, so a fixed split would leave a core idle.
    let worker = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = work.get(i) else { break };
            let taken = slot.lock().map(|mut s| s.take()).ok().flatten();
            let Some((mut writer, leaves)) = taken else {
                continue;
            };
            let encoded = leaves
                .iter()
                .try_for_each(|leaf| writer.write(leaf))
                .and_then(|()| writer.close());
            if let Ok(mut result) = results[i].lock() {
                *result = Some(encoded);
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len());
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    results
        .into_iter()
        .map(|result| {
            result
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(ParquetError::General("a column was not encoded".into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray, StringArray, StructArray};
    use datafusion::arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn batch(start: i64, rows: usize) -> RecordBatch {
        let ids: Vec<i64> = (start..start + rows as i64).collect();
        let names: Vec<Option<String>> = ids
            .iter()
            .map(|i| (i % 7 != 0).then(|| format!("name {i}")))
            .collect();
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(
            ids.iter().map(|i| Some(vec![Some(*i as i32), None])),
        );
        let inner = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int64, false)),
            Arc::new(Int64Array::from(ids.clone())) as _,
        )]);
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(lists),
                Arc::new(inner),
            ],
        )
        .unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "list",
                DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
                true,
            ),
            Field::new(
                "inner",
                DataType::Struct(Fields::from(vec![Field::new("x", DataType::Int64, false)])),
                false,
            ),
        ]))
    }

    /// Row groups are cut at ROW_GROUP_ROWS whatever the batch sizes, stay
    /// in order, and nested columns (several leaves per field) round-trip.
    #[tokio::test]
    async fn round_trips_in_order_across_row_groups() {
        let sizes = [1000, ROW_GROUP_ROWS * 2 + 17, 5, ROW_GROUP_ROWS - 1];
        let mut encoder = ParquetEncoder::try_new(&schema()).unwrap();
        let mut file = Vec::new();
        let mut written = Vec::new();
        let mut start = 0;
        for rows in sizes {
            let b = batch(start, rows);
            start += rows as i64;
            written.push(b.clone());
            file.extend_from_slice(&encoder.write(b).await.unwrap());
        }
        file.extend_from_slice(&encoder.finish().await.unwrap());

        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        let total: usize = sizes.iter().sum();
        assert_eq!(groups.iter().sum::<i64>(), total as i64);
        assert!(
            groups[..groups.len() - 1]
                .iter()
                .all(|&n| n == ROW_GROUP_ROWS as i64)
        );
        assert_eq!(reader.schema().as_ref(), schema().as_ref());
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let expected = datafusion::arrow::compute::concat_batches(&schema(), &written).unwrap();
        let actual = datafusion::arrow::compute::concat_batches(&schema(), &read).unwrap();
        assert_eq!(actual, expected);
    }

    #[tokio::test]
    async fn an_empty_upload_is_a_valid_file_with_no_rows() {
        let encoder = ParquetEncoder::try_new(&schema()).unwrap();
        let file = encoder.finish().await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.schema().as_ref(), schema().as_ref());
    }
}

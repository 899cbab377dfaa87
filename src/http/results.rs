//! Query results as bytes on the wire: Arrow IPC stream, Parquet, CSV or
//! JSON, written batch by batch as the query produces them, so memory stays
//! bounded by a batch (Parquet: by a row group) whatever the result's size.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::ArrayWriter;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tonic::Status;

use crate::query::QueryStream;
use crate::status;

/// Rows per Parquet row group of a streamed result.
const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A result format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON array of row objects (`application/json`).
    #[default]
    Json,
    /// Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    Arrow,
    /// One Parquet file (`application/vnd.apache.parquet`).
    Parquet,
    /// CSV with a header row (`text/csv`).
    Csv,
}

impl Format {
    /// The `Content-Type` of a result in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// Writes batches in one format into a buffer drained after each batch.
enum Writer {
    Json(ArrayWriter<Vec<u8>>),
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
    /// The CSV writer gives no access to its buffer: one per batch, the
    /// header with the first (an empty result is its header alone).
    Csv {
        header: bool,
        buffer: Vec<u8>,
        schema: SchemaRef,
    },
}

impl Writer {
    fn new(format: Format, schema: &SchemaRef) -> Result<Self, Status> {
        let failed =
            |e: &dyn std::fmt::Display| status::internal(format!("starting {format:?}: {e}"));
        Ok(match format {
            Format::Json => Self::Json(ArrayWriter::new(Vec::new())),
            Format::Arrow => {
                Self::Arrow(StreamWriter::try_new(Vec::new(), schema).map_err(|e| failed(&e))?)
            }
            Format::Parquet => {
                // Row groups small enough to stream: the default (1M rows)
                // would hold most results back until their end.
                let properties = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(properties))
                    .map_err(|e| failed(&e))?;
                Self::Parquet(writer)
            }
            Format::Csv => Self::Csv {
                header: true,
                buffer: Vec::new(),
                schema: Arc::clone(schema),
            },
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            Self::Json(w) => w.write(batch).map_err(|e| e.to_string()),
            Self::Arrow(w) => w.write(batch).map_err(|e| e.to_string()),
            Self::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            Self::Csv { header, buffer, .. } => {
                let mut w = CsvWriterBuilder::new()
                    .with_header(*header)
                    .build(&mut *buffer);
                *header = false;
                w.write(batch).map_err(|e| e.to_string())
            }
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        match self {
            Self::Json(w) => w.finish().map_err(|e| e.to_string()),
            Self::Arrow(w) => w.finish().map_err(|e| e.to_string()),
            Self::Parquet(w) => w.finish().map(drop).map_err(|e| e.to_string()),
            Self::Csv {
                header: true,
                schema,
                ..
            } => {
                let empty = RecordBatch::new_empty(Arc::clone(schema));
                self.write(&empty)
            }
            Self::Csv { .. } => Ok(()),
        }
    }

    /// The bytes written since the last call.
    fn take(&mut self) -> Bytes {
        let buffer = match self {
            Self::Json(w) => w.get_mut(),
            Self::Arrow(w) => w.get_mut(),
            // The Parquet writer keeps its own count of bytes written, so
            // draining its buffer does not disturb the file's offsets.
            Self::Parquet(w) => w.inner_mut(),
            Self::Csv { buffer, .. } => buffer,
        };
        Bytes::from(std::mem::take(buffer))
    }
}

/// The result of `stream` as a byte stream in `format`. A failure after
/// the first bytes ends the stream with its status (the HTTP body is cut,
/// so the client sees an incomplete response, not a short result).
pub(crate) fn encode(
    format: Format,
    schema: SchemaRef,
    stream: QueryStream,
) -> Result<impl Stream<Item = Result<Bytes, Status>> + Send + 'static, Status> {
    let mut writer = Writer::new(format, &schema)?;
    // The Arrow schema message goes out before the first batch is ready.
    let start = writer.take();
    let body = futures::stream::unfold(Some((writer, stream)), |state| async move {
        let (mut writer, mut stream) = state?;
        loop {
            let written = match stream.next().await {
                Some(Ok(batch)) => writer.write(&batch),
                Some(Err(e)) => return Some((Err(status::query(e)), None)),
                None => {
                    let finished = writer.finish().map(|()| writer.take());
                    return match finished {
                        Ok(bytes) if bytes.is_empty() => None,
                        Ok(bytes) => Some((Ok(bytes), None)),
                        Err(e) => Some((Err(encoding_failed(&e)), None)),
                    };
                }
            };
            if let Err(e) = written {
                return Some((Err(encoding_failed(&e)), None));
            }
            // A Parquet row group in progress writes nothing yet.
            let bytes = writer.take();
            if !bytes.is_empty() {
                return Some((Ok(bytes), Some((writer, stream))));
            }
        }
    });
    let start = (!start.is_empty()).then_some(Ok(start));
    Ok(futures::stream::iter(start).chain(body))
}

fn encoding_failed(error: &str) -> Status {
    status::internal(format!("encoding the result: {error}"))
}

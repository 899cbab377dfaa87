//! Tickets and prepared-statement handles.
//!
//! Both are the same self-contained, versioned protobuf message: the SQL,
//! any bound parameters (one Arrow IPC row), a query id, and in a ticket
//! the epochs of the tables read (a cluster). Nothing is
//! kept on the server between calls, so any airlock node can serve a ticket
//! or a handle, and a restart loses nothing. A ticket grants nothing by
//! itself: whoever redeems it is authenticated and the SQL is planned again
//! under their permissions, so a forged or replayed ticket can only run
//! what its holder could run anyway.

use std::collections::BTreeMap;
use std::io::Cursor;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::ScalarValue;
use prost::Message;

const VERSION: u32 = 1;

/// A statement to run, as carried by a ticket or a prepared-statement handle.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StatementHandle {
    /// Format version; other versions are refused with a clear message.
    #[prost(uint32, tag = "1")]
    pub(crate) version: u32,
    /// Identifies one execution, for CancelFlightInfo.
    #[prost(string, tag = "2")]
    pub(crate) query_id: String,
    /// The SQL text.
    #[prost(string, tag = "3")]
    pub(crate) sql: String,
    /// Bound parameters: an Arrow IPC stream holding one row; empty if none.
    #[prost(bytes = "bytes", tag = "4")]
    pub(crate) parameters: Bytes,
    /// In a ticket: the epoch of each table read, as the planning node
    /// served it (a cluster). A node serving an older one refuses to
    /// redeem it, retryably. Empty in a handle, and outside a cluster.
    #[prost(btree_map = "string, uint64", tag = "5")]
    pub(crate) epochs: BTreeMap<String, u64>,
}

impl StatementHandle {
    /// A handle for `sql` with a fresh query id.
    pub(crate) fn new(sql: &str) -> Self {
        Self {
            version: VERSION,
            query_id: uuid::Uuid::new_v4().to_string(),
            sql: sql.to_string(),
            parameters: Bytes::new(),
            epochs: BTreeMap::new(),
        }
    }

    /// Decodes a handle, refusing garbage and other versions.
    pub(crate) fn decode_from(bytes: &[u8]) -> Result<Self, String> {
        let handle = Self::decode(bytes).map_err(|e| format!("malformed statement handle: {e}"))?;
        if handle.version != VERSION {
            return Err(format!(
                "statement handle version {} is not supported by this server (expects {VERSION}); prepare the statement again",
                handle.version
            ));
        }
        Ok(handle)
    }

    /// The same statement with parameters bound and a fresh query id.
    pub(crate) fn with_parameters(&self, batch: &RecordBatch) -> Result<Self, String> {
        let mut buffer = Vec::new();
        {
            let mut writer =
                StreamWriter::try_new(&mut buffer, &batch.schema()).map_err(|e| e.to_string())?;
            writer.write(batch).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        Ok(Self {
            query_id: uuid::Uuid::new_v4().to_string(),
            parameters: Bytes::from(buffer),
            ..self.clone()
        })
    }

    /// The bound parameter values in order; empty if none were bound.
    pub(crate) fn parameter_values(&self) -> Result<Vec<ScalarValue>, String> {
        if self.parameters.is_empty() {
            return Ok(vec![]);
        }
        let reader = StreamReader::try_new(Cursor::new(self.parameters.as_ref()), None)
            .map_err(|e| format!("malformed parameters in handle: {e}"))?;
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("malformed parameters in handle: {e}"))?;
        let batch = match batches.as_slice() {
            [batch] => batch,
            _ => return Err("parameters must be exactly one batch".into()),
        };
        row_values(batch)
    }
}

/// The values of the only row of `batch`, one per column.
pub(crate) fn row_values(batch: &RecordBatch) -> Result<Vec<ScalarValue>, String> {
    if batch.num_rows() != 1 {
        return Err(format!(
            "bind exactly one row of parameters to a query (got {}); run the statement once per row",
            batch.num_rows()
        ));
    }
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column.as_ref(), 0).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn round_trip_with_parameters() {
        let handle = StatementHandle::new("SELECT $1, $2");
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        let bound = handle.with_parameters(&batch).unwrap();
        assert_ne!(bound.query_id, handle.query_id);
        let decoded = StatementHandle::decode_from(&bound.encode_to_vec()).unwrap();
        assert_eq!(decoded.sql, "SELECT $1, $2");
        assert_eq!(
            decoded.parameter_values().unwrap(),
            vec![
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("x".into()))
            ]
        );
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        assert!(StatementHandle::decode_from(b"\xff\xff\xff").is_err());
        let mut handle = StatementHandle::new("SELECT 1");
        handle.version = 99;
        let err = StatementHandle::decode_from(&handle.encode_to_vec()).unwrap_err();
        assert!(err.contains("version 99"), "{err}");
    }

    #[test]
    fn more_than_one_row_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        assert!(row_values(&batch).unwrap_err().contains("exactly one row"));
    }
}

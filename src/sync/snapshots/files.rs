//! Snapshot files: writing a table version (or the rows one sync loaded)
//! as Parquet parts in the snapshot store, and loading parts into a
//! replica through the staging path a sync uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::TableProvider;
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::parquet::arrow::async_writer::ParquetObjectWriter;
use datafusion::parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::mpsc;

use super::{DeltaOp, SnapshotFile, SnapshotStore, intervals};
use crate::replica::{Merge, Replica, ReplicaTable, StagingTable};
use crate::sync::SyncError;
use crate::sync::pipeline::{Load, Received};
use crate::table_name::TableName;

/// Rows per snapshot file: large enough to stream well, small enough that
/// one file's failure costs little.
pub(super) const FILE_ROWS: u64 = 1_000_000;

/// Writes batches as numbered Parquet parts under one new directory,
/// starting a part every [`FILE_ROWS`] rows.
struct Parts {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    /// What the files hold (intervals encoded).
    schema: SchemaRef,
    current: Option<(Path, AsyncArrowWriter<ParquetObjectWriter>, u64)>,
    files: Vec<SnapshotFile>,
}

impl Parts {
    fn new(snapshots: &SnapshotStore, table: &TableName, schema: &Schema) -> Self {
        Self {
            store: Arc::clone(&snapshots.store),
            dir: snapshots
                .table_dir(table)
                .join(uuid::Uuid::new_v4().simple().to_string()),
            schema: intervals::stored_schema(schema),
            current: None,
            files: Vec::new(),
        }
    }

    fn open_part(&mut self) -> Result<(), String> {
        let path = self
            .dir
            .clone()
            .join(format!("part-{:05}.parquet", self.files.len()));
        let object = ParquetObjectWriter::new(Arc::clone(&self.store), path.clone());
        let file = AsyncArrowWriter::try_new(object, Arc::clone(&self.schema), None)
            .map_err(|e| e.to_string())?;
        self.current = Some((path, file, 0));
        Ok(())
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let batch = intervals::encode(batch, &self.schema).map_err(|e| e.to_string())?;
        if self.current.is_none() {
            self.open_part()?;
        }
        if let Some((_, file, rows)) = self.current.as_mut() {
            *rows += batch.num_rows() as u64;
            file.write(&batch).await.map_err(|e| e.to_string())?;
            if *rows >= FILE_ROWS {
                self.close_part().await?;
            }
        }
        Ok(())
    }

    async fn close_part(&mut self) -> Result<(), String> {
        let Some((path, mut file, rows)) = self.current.take() else {
            return Ok(());
        };
        file.finish().await.map_err(|e| e.to_string())?;
        // With the footer: readers find it at the end of exactly this size.
        self.files.push(SnapshotFile {
            path: path.to_string(),
            rows,
            bytes: file.bytes_written() as u64,
        });
        Ok(())
    }

    /// Closes the last part; with no rows at all, writes one empty part
    /// when `keep_empty` (it still tells readers the columns).
    async fn finish(mut self, keep_empty: bool) -> Result<Vec<SnapshotFile>, String> {
        if keep_empty && self.files.is_empty() && self.current.is_none() {
            self.open_part()?;
        }
        self.close_part().await?;
        Ok(self.files)
    }
}

/// Writes a table version's rows as Parquet files under a new directory
/// of the table's in the snapshot store.
pub(super) async fn export(
    snapshots: &SnapshotStore,
    replica: &Arc<Replica>,
    table: &TableName,
    info: crate::replica::TableInfo,
) -> Result<Vec<SnapshotFile>, SyncError> {
    let failed = |e: &dyn std::fmt::Display| {
        SyncError::Task(format!("writing the snapshot of {table}: {e}"))
    };
    let mut parts = Parts::new(snapshots, table, &info.schema);
    let provider = ReplicaTable::new(Arc::clone(replica), table.clone(), info);
    let context = SessionContext::new();
    let plan = provider
        .scan(&context.state(), None, &[], None)
        .await
        .map_err(|e| SyncError::Task(format!("reading {table} to publish it: {e}")))?;
    let mut batches = datafusion::physical_plan::execute_stream(plan, context.task_ctx())
        .map_err(|e| SyncError::Task(format!("reading {table} to publish it: {e}")))?;
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| failed(&e))?;
        parts.write(&batch).await.map_err(|e| failed(&e))?;
    }
    parts.finish(true).await.map_err(|e| failed(&e))
}

/// The rows an append or upsert sync loads, written to the snapshot store
/// as they arrive: the delta the writer publishes after the commit, so
/// publishing costs what the sync read, not what the table holds.
pub(in crate::sync) struct DeltaWriter {
    parts: Parts,
    op: DeltaOp,
}

/// The files a [`DeltaWriter`] wrote.
#[derive(Debug)]
pub(in crate::sync) struct WrittenDelta {
    pub(super) op: DeltaOp,
    pub(super) files: Vec<SnapshotFile>,
}

impl DeltaWriter {
    /// A writer of the rows a sync merges as `merge` into `table`; none for
    /// a sync that replaces the table (its snapshot is the table).
    pub(in crate::sync) fn new(
        snapshots: &SnapshotStore,
        table: &TableName,
        schema: &Schema,
        merge: &Merge,
    ) -> Option<Self> {
        let op = DeltaOp::of(merge)?;
        Some(Self {
            parts: Parts::new(snapshots, table, schema),
            op,
        })
    }

    pub(in crate::sync) async fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        self.parts.write(batch).await
    }

    /// Closes the files; none when no row came (nothing to publish as a
    /// delta: the columns a merge may have added travel only in a full
    /// snapshot).
    pub(in crate::sync) async fn finish(self) -> Result<Option<WrittenDelta>, String> {
        let files = self.parts.finish(false).await?;
        Ok((!files.is_empty()).then_some(WrittenDelta { op: self.op, files }))
    }
}

/// Loads snapshot files into a new version of `table` and commits it,
/// combined with the current version as `merge` says, with `state`.
pub(super) async fn load(
    snapshots: &SnapshotStore,
    replica: &Arc<Replica>,
    table: &TableName,
    files: &[SnapshotFile],
    merge: Merge,
    state: Option<String>,
) -> Result<(), SyncError> {
    let failed = |e: &dyn std::fmt::Display| {
        SyncError::Task(format!("loading the snapshot of {table}: {e}"))
    };
    let mut streams = Vec::new();
    for file in files {
        let reader =
            ParquetObjectReader::new(Arc::clone(&snapshots.store), Path::from(file.path.as_str()))
                .with_file_size(file.bytes.max(1));
        let builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| failed(&e))?;
        streams.push(builder);
    }
    let Some(schema) = streams
        .first()
        .map(|b| intervals::loaded_schema(b.schema()))
    else {
        // Published with no rows: the table's columns are unknown here.
        return Err(failed(&"the snapshot has no files"));
    };
    let (tx, rx) = mpsc::channel::<Load>(4);
    let received = Received {
        rx,
        finished: Arc::new(AtomicBool::new(false)),
    };
    let target = table.clone();
    let replica = Arc::clone(replica);
    let loader_schema = Arc::clone(&schema);
    let writer = tokio::task::spawn_blocking(move || -> Result<u64, SyncError> {
        let mut staging = StagingTable::create(&replica, &target, &loader_schema)?;
        let finished = Arc::clone(&received.finished);
        staging.load(received)?;
        if !finished.load(Ordering::Acquire) {
            return Err(SyncError::Task(
                "the snapshot stopped before its end".into(),
            ));
        }
        Ok(staging.commit_merge(&merge, state.as_deref())?)
    });
    let mut read_error = None;
    'files: for builder in streams {
        let mut stream = builder.build().map_err(|e| failed(&e))?;
        while let Some(batch) = stream.next().await {
            let batch = match batch
                .map_err(|e| failed(&e))
                .and_then(|batch| intervals::decode(&batch, &schema).map_err(|e| failed(&e)))
            {
                Ok(batch) => batch,
                Err(e) => {
                    read_error = Some(e);
                    break 'files;
                }
            };
            if tx.send(Load::Batch(batch)).await.is_err() {
                break 'files;
            }
        }
    }
    if read_error.is_none() {
        let _ = tx.send(Load::Finish).await;
    }
    drop(tx);
    let written = writer.await.map_err(|e| SyncError::Task(e.to_string()))?;
    match read_error {
        Some(e) => Err(e),
        None => written.map(|_| ()),
    }
}

//! Replica snapshots: how the tables the writer commits reach the other
//! nodes of a cluster.
//!
//! After each committed sync the writer publishes the table's new version
//! as Parquet files in the snapshot store (`sync.snapshot_store`), then
//! its [`Manifest`] as a document of the `snapshots` collection, through
//! its fenced metadata: the manifest is the commit point, and the
//! document's version is the table's *epoch*. Every node follows that
//! collection; a node whose replica is behind loads the files through the
//! same staging path a sync uses and swaps the new version in atomically,
//! with the sync state (watermark) the writer committed, so whichever node
//! writes next continues from it. Parquet files carry their Arrow schema,
//! so every type comes back as it was written.
//!
//! Which epoch a node serves is kept beside its replica
//! (`<data_dir>/snapshots.json`); a node that starts behind restores every
//! table before it reports ready, and before it may become the writer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use datafusion::datasource::TableProvider;
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use datafusion::parquet::arrow::async_writer::ParquetObjectWriter;
use datafusion::parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::pipeline::{Load, Received};
use super::{SyncError, SyncService};
use crate::meta::{Collection, Expect, Labels, Meta};
use crate::replica::{ReplicaTable, StagingTable};
use crate::table_name::TableName;

/// Rows per snapshot file: large enough to stream well, small enough that
/// one file's failure costs little.
const FILE_ROWS: usize = 1_000_000;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Its path in the snapshot store.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

/// A published table version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The table.
    pub table: TableName,
    /// Its files, in order.
    pub files: Vec<SnapshotFile>,
    /// Rows in all.
    pub rows: u64,
    /// The sync state (watermark) committed with this version.
    pub state: Option<String>,
    /// The job that committed it.
    pub job_id: String,
    /// When it was published.
    pub published_at: DateTime<Utc>,
}

/// Where snapshots are kept.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl SnapshotStore {
    /// The store at `location`: an object-store URL (`s3://bucket/prefix`,
    /// `file:///dir`) or a local directory. `options` are the server's
    /// `[object_store]` settings.
    pub fn open(location: &str, options: &BTreeMap<String, String>) -> Result<Self, SyncError> {
        let url = match url::Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            // A path (or a Windows drive letter): a local directory.
            _ => {
                let dir = PathBuf::from(location);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    SyncError::BadSettings(format!("snapshot store {location}: {e}"))
                })?;
                let dir = dir.canonicalize().map_err(|e| {
                    SyncError::BadSettings(format!("snapshot store {location}: {e}"))
                })?;
                url::Url::from_directory_path(&dir).map_err(|()| {
                    SyncError::BadSettings(format!("snapshot store {location}: not a path"))
                })?
            }
        };
        if url.scheme() == "file" {
            std::fs::create_dir_all(url.path()).map_err(|e| {
                SyncError::BadSettings(format!("snapshot store {}: {e}", url.path()))
            })?;
        }
        let (store, prefix) = crate::object_stores::open(&url, options).map_err(|e| {
            SyncError::BadSettings(format!(
                "snapshot store {}: {e}",
                crate::redact::url(location)
            ))
        })?;
        Ok(Self { store, prefix })
    }

    fn table_dir(&self, table: &TableName) -> Path {
        self.prefix.clone().join(table.to_string())
    }
}

/// The epochs this node's replica holds, by table, kept in a small file.
#[derive(Debug)]
pub(super) struct Served {
    path: PathBuf,
    epochs: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Set once every table was restored at start.
    restored: AtomicBool,
    /// Told each time an epoch is served (for waiters).
    changed: tokio::sync::watch::Sender<()>,
}

impl Served {
    pub(super) fn open(data_dir: &std::path::Path) -> Self {
        let path = data_dir.join("snapshots.json");
        // Unreadable or missing: nothing is known to be served, and every
        // table is loaded again (correct, only slower).
        let epochs = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path,
            epochs: std::sync::Mutex::new(epochs),
            restored: AtomicBool::new(false),
            changed: tokio::sync::watch::channel(()).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn epoch(&self, table: &TableName) -> Option<u64> {
        self.lock().get(&table.to_string()).copied()
    }

    fn set(&self, table: &TableName, epoch: Option<u64>) {
        let text = {
            let mut epochs = self.lock();
            match epoch {
                Some(epoch) => epochs.insert(table.to_string(), epoch),
                None => epochs.remove(&table.to_string()),
            };
            serde_json::to_vec(&*epochs).unwrap_or_default()
        };
        // Written whole, then renamed: never half a file.
        let temporary = self.path.with_extension("json.tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not record the epochs served");
        }
        self.changed.send_replace(());
    }

    /// The table is gone from this node's replica.
    pub(super) fn forget(&self, table: &TableName) {
        if self.epoch(table).is_some() {
            self.set(table, None);
        }
    }

    pub(super) fn restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }
}

impl SyncService {
    /// Publishes the table's committed version (the writer does, after a
    /// sync): files first, then the manifest through the writer's fenced
    /// metadata. Returns the epoch; none without a snapshot store.
    pub(super) async fn publish(
        &self,
        writer: &Meta,
        table: &TableName,
        job_id: &str,
    ) -> Result<Option<u64>, SyncError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let Some(info) = self.replica.tables().get(table).cloned() else {
            return Ok(None);
        };
        let replica = Arc::clone(&self.replica);
        let name = table.clone();
        let state = tokio::task::spawn_blocking(move || replica.sync_state(&name))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
        let (dir, files) = export(snapshots, &self.replica, table, info).await?;
        let manifest = Manifest {
            table: table.clone(),
            rows: files.iter().map(|f| f.rows).sum(),
            files,
            state,
            job_id: job_id.to_string(),
            published_at: Utc::now(),
        };
        let epoch = writer
            .put_if(
                Collection::Snapshots,
                &table.to_string(),
                &manifest,
                Labels::new(),
                Expect::Any,
            )
            .await?;
        self.served.set(table, Some(epoch));
        self.remove_old_snapshots(table, &dir).await;
        Ok(Some(epoch))
    }

    /// Deletes a table's snapshot files but the newest two (a reader may
    /// still be loading the previous one).
    async fn remove_old_snapshots(&self, table: &TableName, newest: &Path) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        let listed = snapshots
            .store
            .list_with_delimiter(Some(&snapshots.table_dir(table)))
            .await;
        let Ok(listed) = listed else {
            return;
        };
        let mut dirs: Vec<(DateTime<Utc>, Path)> = Vec::new();
        for dir in listed.common_prefixes {
            let files: Vec<object_store::ObjectMeta> = snapshots
                .store
                .list(Some(&dir))
                .try_collect()
                .await
                .unwrap_or_default();
            let newest_file = files.iter().map(|f| f.last_modified).max();
            dirs.push((newest_file.unwrap_or_default(), dir));
        }
        dirs.sort();
        let keep = 2;
        let old = dirs.len().saturating_sub(keep);
        for (_, dir) in dirs.into_iter().take(old) {
            if &dir == newest {
                continue;
            }
            let files = snapshots
                .store
                .list(Some(&dir))
                .map_ok(|f| f.location)
                .boxed();
            let deleted: Vec<_> = snapshots.store.delete_stream(files).collect().await;
            if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
                tracing::warn!(table = %table, error = %e, "could not remove an old snapshot");
            }
        }
    }

    /// Brings the table to the newest published epoch, if this node is
    /// behind; drops it when it is no longer published. Returns the epoch
    /// served after.
    pub(super) async fn catch_up(&self, table: &TableName) -> Result<Option<u64>, SyncError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let published = self
            .meta
            .get_versioned::<Manifest>(Collection::Snapshots, &table.to_string())
            .await?;
        let Some(published) = published else {
            if self.served.epoch(table).is_some() {
                let replica = Arc::clone(&self.replica);
                let name = table.clone();
                tokio::task::spawn_blocking(move || replica.drop_table(&name))
                    .await
                    .map_err(|e| SyncError::Task(e.to_string()))??;
                self.served.set(table, None);
                tracing::info!(table = %table, "dropped: no longer published");
            }
            return Ok(None);
        };
        if self.writer().is_some() {
            // The writer's replica is the one published.
            return Ok(self.served.epoch(table));
        }
        let held = self.replica.tables().contains_key(table);
        let served = self.served.epoch(table).filter(|_| held);
        if served.is_some_and(|epoch| epoch >= published.version) {
            return Ok(served);
        }
        let manifest = published.value;
        load(snapshots, &self.replica, &manifest).await?;
        self.served.set(table, Some(published.version));
        tracing::info!(table = %table, epoch = published.version, rows = manifest.rows, "loaded a snapshot");
        Ok(Some(published.version))
    }

    /// Brings every published table up to date (at start, and before
    /// taking over as the writer).
    pub(super) async fn catch_up_all(&self) -> Result<(), SyncError> {
        if self.snapshots.is_none() {
            self.served.restored.store(true, Ordering::Release);
            return Ok(());
        }
        let published = self
            .meta
            .page::<Manifest>(Collection::Snapshots, &Default::default())
            .await?;
        let mut names: Vec<TableName> =
            published.items.into_iter().map(|m| m.value.table).collect();
        // Tables this node served that are no longer published.
        for name in self.served.lock().keys() {
            if let Ok(name) = TableName::parse(name)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        for name in names {
            self.catch_up(&name).await?;
        }
        self.served.restored.store(true, Ordering::Release);
        Ok(())
    }

    /// The epoch of `table` this node serves.
    pub fn served_epoch(&self, table: &TableName) -> Option<u64> {
        self.served.epoch(table)
    }

    /// Waits until this node serves `epoch` of `table` or later; returns
    /// the epoch served, or none if `timeout` passed first.
    pub async fn wait_for_epoch(
        &self,
        table: &TableName,
        epoch: u64,
        timeout: std::time::Duration,
    ) -> Option<u64> {
        let mut changed = self.served.changed.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            loop {
                if let Some(served) = self.served.epoch(table).filter(|e| *e >= epoch) {
                    return served;
                }
                if changed.changed().await.is_err() {
                    // The service is closing: nothing more will be served.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        reached.ok()
    }

    /// Whether every published table was restored since this node started.
    pub fn snapshots_restored(&self) -> bool {
        self.served.restored()
    }
}

/// Writes a table version's rows as Parquet files under a new directory
/// of the table's in the snapshot store; returns the directory and files.
async fn export(
    snapshots: &SnapshotStore,
    replica: &Arc<crate::replica::Replica>,
    table: &TableName,
    info: crate::replica::TableInfo,
) -> Result<(Path, Vec<SnapshotFile>), SyncError> {
    let schema = intervals::stored_schema(&info.schema);
    let provider = ReplicaTable::new(Arc::clone(replica), table.clone(), info);
    let context = SessionContext::new();
    let plan = provider
        .scan(&context.state(), None, &[], None)
        .await
        .map_err(|e| SyncError::Task(format!("reading {table} to publish it: {e}")))?;
    let mut batches = datafusion::physical_plan::execute_stream(plan, context.task_ctx())
        .map_err(|e| SyncError::Task(format!("reading {table} to publish it: {e}")))?;
    let dir = snapshots
        .table_dir(table)
        .join(uuid::Uuid::new_v4().simple().to_string());
    let mut files = Vec::new();
    let mut writer_file: Option<(Path, AsyncArrowWriter<ParquetObjectWriter>, u64)> = None;
    let failed = |e: &dyn std::fmt::Display| {
        SyncError::Task(format!("writing the snapshot of {table}: {e}"))
    };
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(|e| failed(&e))?;
        let batch = intervals::encode(&batch, &schema).map_err(|e| failed(&e))?;
        if writer_file.is_none() {
            let path = dir.clone().join(format!("part-{:05}.parquet", files.len()));
            let object = ParquetObjectWriter::new(Arc::clone(&snapshots.store), path.clone());
            let file = AsyncArrowWriter::try_new(object, Arc::clone(&schema), None)
                .map_err(|e| failed(&e))?;
            writer_file = Some((path, file, 0));
        }
        if let Some((_, file, rows)) = writer_file.as_mut() {
            *rows += batch.num_rows() as u64;
            file.write(&batch).await.map_err(|e| failed(&e))?;
            if *rows >= FILE_ROWS as u64
                && let Some((path, file, rows)) = writer_file.take()
            {
                files.push(close(path, file, rows).await.map_err(|e| failed(&e))?);
            }
        }
    }
    if files.is_empty() && writer_file.is_none() {
        // No rows: one empty file still tells readers the columns.
        let path = dir.clone().join("part-00000.parquet");
        let object = ParquetObjectWriter::new(Arc::clone(&snapshots.store), path.clone());
        let file =
            AsyncArrowWriter::try_new(object, Arc::clone(&schema), None).map_err(|e| failed(&e))?;
        writer_file = Some((path, file, 0));
    }
    if let Some((path, file, rows)) = writer_file.take() {
        files.push(close(path, file, rows).await.map_err(|e| failed(&e))?);
    }
    Ok((dir, files))
}

/// Brings tables up to date as their epochs are announced (none: every
/// table), one batch at a time, off the path that delivers announcements:
/// a long load must not hold up a revocation. Failed loads are tried again.
pub(super) async fn loader(
    service: std::sync::Weak<SyncService>,
    mut to_load: mpsc::UnboundedReceiver<Option<TableName>>,
) {
    while let Some(first) = to_load.recv().await {
        let mut everything = first.is_none();
        let mut tables: std::collections::BTreeSet<TableName> = first.into_iter().collect();
        while let Ok(next) = to_load.try_recv() {
            match next {
                None => everything = true,
                Some(table) => {
                    tables.insert(table);
                }
            }
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        let failed = if everything {
            service.catch_up_all().await.err().map(|e| (None, e))
        } else {
            let mut failed = None;
            for table in tables {
                if let Err(e) = service.catch_up(&table).await {
                    failed = Some((Some(table), e));
                    break;
                }
            }
            failed
        };
        if let Some((table, e)) = failed {
            let table = table.map(|t| t.to_string()).unwrap_or_default();
            tracing::warn!(table, error = %e, "loading a snapshot failed; trying again in a second");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            // Everything again: the tables after the failed one were skipped.
            let _ = service.loads.send(None);
        }
    }
}

async fn close(
    path: Path,
    mut file: AsyncArrowWriter<ParquetObjectWriter>,
    rows: u64,
) -> Result<SnapshotFile, datafusion::parquet::errors::ParquetError> {
    file.finish().await?;
    // With the footer: readers find it at the end of exactly this size.
    let bytes = file.bytes_written() as u64;
    Ok(SnapshotFile {
        path: path.to_string(),
        rows,
        bytes,
    })
}

/// Loads a manifest's files into a new version of its table and commits
/// it with the manifest's sync state.
async fn load(
    snapshots: &SnapshotStore,
    replica: &Arc<crate::replica::Replica>,
    manifest: &Manifest,
) -> Result<(), SyncError> {
    let failed = |e: &dyn std::fmt::Display| {
        SyncError::Task(format!("loading the snapshot of {}: {e}", manifest.table))
    };
    let mut streams = Vec::new();
    for file in &manifest.files {
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
    let target = manifest.table.clone();
    let state = manifest.state.clone();
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
        Ok(staging.commit(state.as_deref())?)
    });
    let mut read_error = None;
    'files: for builder in streams {
        let mut stream = builder.build().map_err(|e| failed(&e))?;
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(batch) => {
                    let batch = match intervals::decode(&batch, &schema) {
                        Ok(batch) => batch,
                        Err(e) => {
                            read_error = Some(failed(&e));
                            break 'files;
                        }
                    };
                    if tx.send(Load::Batch(batch)).await.is_err() {
                        break 'files;
                    }
                }
                Err(e) => {
                    read_error = Some(failed(&e));
                    break 'files;
                }
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

mod intervals;
#[cfg(test)]
mod tests;

//! Replica snapshots: how the tables the writer commits reach the other
//! nodes of a cluster.
//!
//! After each committed sync the writer publishes the table's new version
//! in the snapshot store (`sync.snapshot_store`), then its [`Manifest`] as
//! a document of the `snapshots` collection, through its fenced metadata:
//! the manifest is the commit point, and the document's version is the
//! table's *epoch*. A full sync publishes the whole table as Parquet files
//! (the *base*). An append or incremental sync publishes only the rows it
//! loaded, written to the store while it loads (a [`Delta`] on the chain
//! after the base), so its cost follows the rows read; the writer compacts
//! the chain into a new base when it grows long or heavy.
//!
//! Every node follows that collection; a node whose replica is behind
//! applies the deltas after the epoch it serves, or loads the base and the
//! whole chain, through the same staging path and merge a sync uses, and
//! swaps each version in atomically with the sync state (watermark) the
//! writer committed, so whichever node writes next continues from it.
//! Parquet files carry their Arrow schema, so every type comes back as it
//! was written.
//!
//! Which epoch a node serves is kept beside its replica
//! (`<data_dir>/snapshots.json`); a node that starts behind restores every
//! table before it reports ready, and before it may become the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use tokio::sync::mpsc;

use super::{SyncError, SyncService};
use crate::meta::{Collection, Expect, Labels, Meta, Versioned};
use crate::replica::Merge;
use crate::table_name::TableName;

mod files;
mod intervals;
mod manifest;
mod served;
#[cfg(test)]
mod tests;

pub(super) use files::{DeltaWriter, WrittenDelta};
pub use manifest::{Delta, DeltaOp, Manifest, Published, PublishedKind, SnapshotFile};
pub(super) use served::{ReplicaVersion, Served};

/// A chain this long is compacted into a new base at the next sync.
const MAX_DELTAS: usize = 16;

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

impl SyncService {
    /// The sync state (watermark) committed with the table's replica.
    pub(super) async fn committed_state(
        &self,
        table: &TableName,
    ) -> Result<Option<String>, SyncError> {
        let replica = Arc::clone(&self.replica);
        let name = table.clone();
        tokio::task::spawn_blocking(move || replica.sync_state(&name))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))?
            .map_err(SyncError::from)
    }

    /// Which version of the table the replica holds.
    pub(super) fn replica_version(&self, table: &TableName) -> Option<ReplicaVersion> {
        self.replica
            .tables()
            .get(table)
            .map(|info| (info.physical.quoted().to_string(), info.merged_at))
    }

    /// Publishes the table's committed version (the writer does, after a
    /// sync): files first, then the manifest through the writer's fenced
    /// metadata. `before` is the replica's version before the sync and
    /// `delta` the rows it loaded, if it merged them: published as a delta
    /// when the chain allows, or else the whole table as a new base.
    /// Returns the epoch and what was written; none without a snapshot
    /// store.
    pub(super) async fn publish(
        &self,
        writer: &Meta,
        table: &TableName,
        job_id: &str,
        before: Option<ReplicaVersion>,
        delta: Option<WrittenDelta>,
    ) -> Result<Option<(u64, Published)>, SyncError> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(None);
        };
        let Some(info) = self.replica.tables().get(table).cloned() else {
            return Ok(None);
        };
        let state = self.committed_state(table).await?;
        let previous = writer
            .get_versioned::<Manifest>(Collection::Snapshots, &table.to_string())
            .await?;
        let version = self.replica_version(table);
        // A reader may still be loading the manifest before.
        let mut keep = previous
            .as_ref()
            .map(|p| p.value.dirs())
            .unwrap_or_default();
        let (manifest, expect, published) = match (delta, previous) {
            (Some(delta), Some(previous))
                if self.extends(table, &previous, before.as_ref(), &delta) =>
            {
                let published = Published::of(PublishedKind::Delta, &delta.files);
                let mut manifest = previous.value;
                manifest.deltas.push(Delta {
                    after: previous.version,
                    op: delta.op,
                    files: delta.files,
                    state: state.clone(),
                    job_id: job_id.to_string(),
                });
                manifest.rows = info.rows;
                manifest.state = state;
                manifest.job_id = job_id.to_string();
                manifest.published_at = Utc::now();
                (manifest, Expect::Version(previous.version), published)
            }
            _ => {
                let files = files::export(snapshots, &self.replica, table, info).await?;
                let published = Published::of(PublishedKind::Full, &files);
                (
                    Manifest::base(table, files, state, job_id),
                    Expect::Any,
                    published,
                )
            }
        };
        let epoch = writer
            .put_if(
                Collection::Snapshots,
                &table.to_string(),
                &manifest,
                Labels::new(),
                expect,
            )
            .await?;
        self.served.serve(table, Some(epoch), version);
        keep.extend(manifest.dirs());
        self.remove_unused_snapshots(table, &keep).await;
        Ok(Some((epoch, published)))
    }

    /// Whether `delta` may go on the chain of the `previous` manifest: the
    /// writer's replica held exactly that epoch before the sync, and the
    /// chain is still short and lighter than its base.
    fn extends(
        &self,
        table: &TableName,
        previous: &Versioned<Manifest>,
        before: Option<&ReplicaVersion>,
        delta: &WrittenDelta,
    ) -> bool {
        let rows: u64 = delta.files.iter().map(|f| f.rows).sum();
        self.served.epoch(table) == Some(previous.version)
            && before.is_some()
            && self.served.version(table).as_ref() == before
            && previous.value.deltas.len() < MAX_DELTAS
            && previous.value.delta_rows() + rows <= previous.value.base_rows()
    }

    /// Deletes a table's snapshot directories but those in `keep` (the new
    /// manifest's and the one before it, which a reader may still be
    /// loading).
    async fn remove_unused_snapshots(&self, table: &TableName, keep: &BTreeSet<String>) {
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
        for dir in listed.common_prefixes {
            if keep.contains(dir.as_ref()) {
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
    /// behind: the deltas after the epoch it serves, or the base and every
    /// delta. Drops the table when it is no longer published. Returns the
    /// epoch served after.
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
                self.served.serve(table, None, None);
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
        let (manifest, epoch) = (&published.value, published.version);
        // The deltas after the epoch served; all of them after the base if
        // that epoch is not on the chain (compacted since, or none).
        let first = match served.and_then(|e| manifest.deltas.iter().position(|d| d.after == e)) {
            Some(first) => first,
            None => {
                files::load(
                    snapshots,
                    &self.replica,
                    table,
                    &manifest.files,
                    Merge::Replace,
                    manifest.base_state.clone().or_else(|| {
                        // Published before deltas existed: one state.
                        manifest
                            .deltas
                            .is_empty()
                            .then(|| manifest.state.clone())
                            .flatten()
                    }),
                )
                .await?;
                self.served.serve(
                    table,
                    Some(manifest.epoch_after(0, epoch)),
                    self.replica_version(table),
                );
                0
            }
        };
        for (step, delta) in manifest.deltas.iter().enumerate().skip(first) {
            let reached = manifest.epoch_after(step + 1, epoch);
            if delta.op == DeltaOp::Append
                && self.holds_state(table, delta.state.as_deref()).await?
            {
                // Applied before this node could record it (it stopped in
                // between): appending again would double the rows. An
                // append's watermark grows with every row it adds, so the
                // state names the delta. (Upserts may apply twice.)
                self.served
                    .serve(table, Some(reached), self.replica_version(table));
                continue;
            }
            files::load(
                snapshots,
                &self.replica,
                table,
                &delta.files,
                delta.op.merge(),
                delta.state.clone(),
            )
            .await?;
            self.served
                .serve(table, Some(reached), self.replica_version(table));
        }
        tracing::info!(
            table = %table,
            epoch,
            rows = manifest.rows,
            deltas = manifest.deltas.len() - first,
            "loaded a snapshot"
        );
        Ok(Some(epoch))
    }

    /// Whether the replica's table was committed with sync state `state`.
    async fn holds_state(&self, table: &TableName, state: Option<&str>) -> Result<bool, SyncError> {
        let Some(state) = state else {
            return Ok(false);
        };
        Ok(self.committed_state(table).await?.as_deref() == Some(state))
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

    /// Every table's epoch this node serves (in a cluster), by name.
    pub fn all_served_epochs(&self) -> BTreeMap<String, u64> {
        self.served.lock().clone()
    }

    /// The epoch this node serves of each of `tables` that has one (in a
    /// cluster): what a ticket planned here is planned at.
    pub fn served_epochs<'a>(
        &self,
        tables: impl IntoIterator<Item = &'a TableName>,
    ) -> BTreeMap<String, u64> {
        tables
            .into_iter()
            .filter_map(|table| Some((table.to_string(), self.served.epoch(table)?)))
            .collect()
    }

    /// Waits up to `patience` until this node serves at least the epoch
    /// given for each table (those a ticket was planned at); a node still
    /// behind then refuses with a retryable error rather than answer from
    /// an older version than the one planned.
    pub async fn require_epochs(
        &self,
        epochs: &BTreeMap<String, u64>,
        patience: std::time::Duration,
    ) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        for (table, &planned) in epochs {
            let table = TableName::parse(table)?;
            let left = patience.saturating_sub(started.elapsed());
            if self.wait_for_epoch(&table, planned, left).await.is_none() {
                return Err(SyncError::EpochBehind {
                    served: self.served.epoch(&table).unwrap_or(0),
                    table,
                    planned,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
        Ok(())
    }

    /// Whether every published table was restored since this node started.
    pub fn snapshots_restored(&self) -> bool {
        self.served.restored()
    }
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

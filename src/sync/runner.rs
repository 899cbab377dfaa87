//! Running one job: waiting for a slot, retrying transient failures with
//! backoff, recording the outcome, and a single attempt (`sync_once`):
//! check for schema drift, pick up the committed watermark, stream the
//! source into the writer and record the columns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::jobs::{ActiveEntry, Progress};
use super::pipeline::{CommitPlan, Committed, Load, Received};
use super::registration::{Drift, columns_of};
use super::snapshots::{DeltaWriter, ReplicaVersion, WrittenDelta};
use super::watermark::{self, SyncState};
use super::{JobState, OnSchemaChange, Since, Strategy, SyncError, SyncJob, SyncService, job};
use crate::meta::{Collection, Meta};
use crate::replica::{Merge, StagingTable};

/// How often a running job's counters reach its record in a cluster.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl SyncService {
    pub(super) async fn run(
        self: Arc<Self>,
        mut job: SyncJob,
        progress: Arc<Progress>,
        cancel: CancellationToken,
        writer: Meta,
    ) {
        // Whatever happens below, even a panic, the table is free again after.
        let active = ActiveEntry {
            service: Arc::clone(&self),
            table: job.table.clone(),
        };
        let started = Instant::now();
        let result = loop {
            // Waiting for a slot is cancellable; loading checks the token itself.
            let permit = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(SyncError::Cancelled),
                permit = Arc::clone(&self.permits).acquire_owned() => permit,
            };
            let Ok(_permit) = permit else {
                break Err(SyncError::Task("the sync service is shutting down".into()));
            };
            job.state = JobState::Running;
            job.retry_at = None;
            job.started_at.get_or_insert_with(Utc::now);
            self.record(&writer, &job).await;
            let before = self.replica_version(&job.table);
            let job_id = job.job_id.clone();
            let attempt = async {
                let delta = self
                    .sync_once(&mut job, &progress, &cancel, &writer)
                    .await?;
                self.publish_if_changed(&writer, &mut job, before, delta)
                    .await
            };
            let result = self.reporting(attempt, &writer, &job_id, &progress).await;
            match result {
                Err(e) if e.is_transient() && job.attempt <= self.settings.retries => {
                    let wait = job::backoff(
                        self.settings.retry_backoff,
                        self.settings.retry_backoff_max,
                        job.attempt,
                    );
                    tracing::warn!(error = %e, attempt = job.attempt, wait_ms = wait.as_millis() as u64, "transient sync failure; retrying");
                    job.attempt += 1;
                    job.state = JobState::Queued;
                    job.error = Some(e.to_string());
                    job.retry_at = chrono::Duration::from_std(wait)
                        .ok()
                        .map(|w| Utc::now() + w);
                    progress.rows.store(0, Ordering::Relaxed);
                    progress.bytes.store(0, Ordering::Relaxed);
                    self.record(&writer, &job).await;
                    tokio::select! {
                        () = cancel.cancelled() => break Err(SyncError::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                other => break other,
            }
        };
        job.finished_at = Some(Utc::now());
        job.retry_at = None;
        match result {
            Ok(()) => {
                job.state = JobState::Succeeded;
                job.error = None;
                tracing::info!(
                    rows = job.rows,
                    table_rows = job.table_rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sync succeeded"
                );
            }
            Err(SyncError::Cancelled) => {
                job.state = JobState::Cancelled;
                job.error = Some(SyncError::Cancelled.to_string());
                tracing::info!("sync cancelled");
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
                tracing::warn!(error = %e, "sync failed");
            }
        }
        if job.state != JobState::Succeeded {
            job.rows = progress.rows.load(Ordering::Relaxed);
            job.bytes = progress.bytes.load(Ordering::Relaxed);
        }
        crate::telemetry::sync_finished(job.state.as_str(), started.elapsed(), job.rows);
        // Free the table before the final state is visible: a client that
        // sees "succeeded" and starts the next sync at once must get a new
        // job, not this one back as "already running".
        drop(active);
        self.record(&writer, &job).await;
    }

    /// Runs `work`; in a cluster, records the job's progress every
    /// [`PROGRESS_EVERY`] meanwhile, for the nodes that do not run it.
    async fn reporting<T>(
        &self,
        work: impl Future<Output = T>,
        writer: &Meta,
        job_id: &str,
        progress: &Progress,
    ) -> T {
        if self.snapshots.is_none() {
            return work.await;
        }
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick() => self.record_progress(writer, job_id, progress).await,
            }
        }
    }

    /// Publishes the committed version for the cluster's other nodes, unless
    /// the sync changed nothing that was published already. `delta` holds
    /// the rows the sync merged, if it wrote them for the snapshot.
    async fn publish_if_changed(
        &self,
        writer: &Meta,
        job: &mut SyncJob,
        before: Option<ReplicaVersion>,
        delta: Option<WrittenDelta>,
    ) -> Result<(), SyncError> {
        let served = self.served_epoch(&job.table);
        if served.is_some() && self.replica_version(&job.table) == before {
            job.epoch = served;
            return Ok(());
        }
        let published = self
            .publish(writer, &job.table, &job.job_id, before, delta)
            .await
            .map_err(|e| {
                SyncError::Task(format!(
                    "committed on this node, but not published to the others: {e}; \
                     the next sync publishes it"
                ))
            })?;
        if let Some((epoch, published)) = published {
            job.epoch = Some(epoch);
            job.published = Some(published);
        }
        Ok(())
    }

    /// One attempt: read the source, load a new version, commit it with
    /// its watermark, record the columns. With a snapshot store, the rows
    /// of an append or upsert are also written there as they load: they
    /// are returned, for publishing as a delta.
    async fn sync_once(
        &self,
        job: &mut SyncJob,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
        meta: &Meta,
    ) -> Result<Option<WrittenDelta>, SyncError> {
        let registration = self.registration(&job.table).await?;
        let source = self.sources.open(&registration.source)?;
        let schema = source.schema().await?;
        if let Ok(size) = source.size().await {
            job.files = size.files.unwrap_or(0);
            job.source_bytes = size.bytes.unwrap_or(0);
            job.source_rows = size.rows;
            *progress.source.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((job.files, job.source_bytes, job.source_rows));
        }
        let columns = columns_of(&schema)?;
        let drift = if registration.columns.is_empty() {
            Drift::default()
        } else {
            Drift::between(&registration.columns, &columns)
        };
        let mut strategy = registration.strategy;
        if drift.is_breaking() {
            match registration.on_schema_change {
                OnSchemaChange::Fail => {
                    return Err(SyncError::SchemaChanged {
                        table: job.table.clone(),
                        detail: drift.describe(),
                    });
                }
                OnSchemaChange::FullRefresh => {
                    tracing::info!(change = %drift.describe(), "source columns changed; reloading the whole table");
                    strategy = Strategy::Full;
                }
            }
        }
        job.strategy = strategy;
        job.added_columns = drift.added.clone();

        // The committed watermark, if it belongs to this table's cursor.
        let cursor = registration.cursor.clone();
        let cursor_type = cursor
            .as_deref()
            .and_then(|c| schema.field_with_name(c).ok())
            .map(|f| f.data_type().clone());
        let stored = self
            .committed_state(&job.table)
            .await?
            .and_then(|s| serde_json::from_str::<SyncState>(&s).ok())
            .filter(|s| Some(&s.cursor) == cursor.as_ref());
        let has_replica = self.replica.tables().contains_key(&job.table);
        let before = match (&stored, &cursor_type) {
            (Some(state), Some(data_type)) if has_replica => Some(
                watermark::from_text(&state.watermark, data_type)
                    .map_err(SyncError::BadSettings)?,
            ),
            _ => None,
        };
        job.watermark_before = stored.map(|s| s.watermark);
        let since = match (&before, &cursor, strategy) {
            (Some(value), Some(column), Strategy::Incremental | Strategy::Append) => Some(Since {
                column: column.clone(),
                value: match (&registration.overlap, strategy) {
                    (Some(overlap), Strategy::Incremental) => {
                        watermark::lower_bound(value, overlap).map_err(SyncError::BadSettings)?
                    }
                    _ => value.clone(),
                },
                inclusive: strategy == Strategy::Incremental,
            }),
            _ => None,
        };
        let plan = CommitPlan {
            merge: match (&since, strategy) {
                (Some(_), Strategy::Incremental) => Merge::Upsert {
                    key: registration.primary_key.clone(),
                    cursor: cursor.clone().unwrap_or_default(),
                },
                (Some(_), Strategy::Append) => Merge::Append,
                _ => Merge::Replace,
            },
            cursor,
            before: if since.is_some() { before } else { None },
            columns_added: !drift.added.is_empty(),
        };
        let mut stream = source.extract(Arc::clone(&schema), since.as_ref()).await?;
        let mut delta = self
            .snapshots
            .as_ref()
            .and_then(|snapshots| DeltaWriter::new(snapshots, &job.table, &schema, &plan.merge));

        // The writer runs on the blocking pool, where DuckDB pulls batches
        // from a small channel: a few batches in flight, so memory stays
        // bounded.
        let (tx, rx) = mpsc::channel::<Load>(4);
        let replica = Arc::clone(&self.replica);
        let table = job.table.clone();
        let received = Received {
            rx,
            finished: Arc::new(AtomicBool::new(false)),
        };
        let writer = tokio::task::spawn_blocking(move || -> Result<Committed, SyncError> {
            let mut staging = StagingTable::create(&replica, &table, &schema)?;
            let finished = Arc::clone(&received.finished);
            staging.load(received)?;
            if !finished.load(Ordering::Acquire) {
                // The reader stopped without Finish: abandon (Drop removes
                // staging).
                return Err(SyncError::Cancelled);
            }
            plan.commit(staging)
        });

        let mut read_error = None;
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    read_error = Some(SyncError::Cancelled);
                    break;
                }
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(batch)) => {
                    if let Some(writer) = delta.as_mut()
                        && let Err(e) = writer.write(&batch).await
                    {
                        // Not fatal: the snapshot is then the whole table.
                        tracing::warn!(error = %e, "could not write the delta for the snapshot");
                        delta = None;
                    }
                    let rows = batch.num_rows() as u64;
                    let bytes = batch.get_array_memory_size() as u64;
                    if tx.send(Load::Batch(batch)).await.is_err() {
                        break; // The writer failed; its error is reported below.
                    }
                    progress.rows.fetch_add(rows, Ordering::Relaxed);
                    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                    // File sources decode inside this task, and DuckDB now
                    // takes batches as fast as they come: let the runtime's
                    // other tasks (requests, a cancel) in between batches.
                    tokio::task::yield_now().await;
                }
                Some(Err(e)) => {
                    read_error = Some(e.into());
                    break;
                }
            }
        }
        if read_error.is_none() {
            // Ignored if the writer already failed; its error wins below.
            let _ = tx.send(Load::Finish).await;
        }
        drop(tx);
        drop(stream);
        let written = writer.await.map_err(|e| SyncError::Task(e.to_string()))?;
        let committed = match (read_error, written) {
            (Some(e), _) => return Err(e),
            (None, result) => result?,
        };
        job.rows = progress.rows.load(Ordering::Relaxed);
        job.bytes = progress.bytes.load(Ordering::Relaxed);
        job.table_rows = Some(committed.table_rows);
        job.watermark_after = committed.watermark.or(job.watermark_before.clone());

        // Remember the columns the replica now has.
        let changes = self.changes.lock().await;
        let mut registration = self.registration(&job.table).await?;
        registration.columns = columns;
        registration.last_success_job_id = Some(job.job_id.clone());
        // Through the writer's fenced metadata: refused once another node
        // has taken over.
        meta.put(Collection::Tables, &job.table.to_string(), &registration)
            .await?;
        drop(changes);
        let Some(delta) = delta else {
            return Ok(None);
        };
        match delta.finish().await {
            Ok(written) => Ok(written),
            Err(e) => {
                tracing::warn!(error = %e, "could not write the delta for the snapshot");
                Ok(None)
            }
        }
    }
}

//! Sync jobs as callers see them: starting one (at most one per table),
//! cancelling, a job's status with live counters, listing jobs, waiting
//! for one, and the active set that frees a table's slot when its job
//! ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JobQuery, JobState, SyncError, SyncJob, SyncService, Trigger, job};
use crate::meta::{Collection, Expect, ListQuery, Meta};
use crate::table_name::TableName;

/// Live counters of a running job.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) rows: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// The source's size once read (files, bytes, rows when known), so a
    /// running job's progress can be told as a share of it.
    pub(super) source: std::sync::Mutex<Option<(u64, u64, Option<u64>)>>,
}

impl Progress {
    /// Puts the counters so far into `job`.
    pub(super) fn copy_into(&self, job: &mut SyncJob) {
        job.rows = self.rows.load(Ordering::Relaxed);
        job.bytes = self.bytes.load(Ordering::Relaxed);
        let source = *self.source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((files, bytes, rows)) = source {
            job.files = files;
            job.source_bytes = bytes;
            job.source_rows = rows;
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ActiveJob {
    pub(super) job_id: String,
    pub(super) progress: Arc<Progress>,
    pub(super) cancel: CancellationToken,
}

/// A page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<SyncJob>,
    /// Token for the next page.
    pub next_page_token: Option<String>,
}

impl SyncService {
    /// Starts a sync of a table, or returns the job already queued or
    /// running for it (`false` in the second element).
    pub async fn start(self: &Arc<Self>, name: &TableName) -> Result<(SyncJob, bool), SyncError> {
        self.start_with(name, Trigger::Manual, 1).await
    }

    pub(super) async fn start_with(
        self: &Arc<Self>,
        name: &TableName,
        trigger: Trigger,
        attempt: u32,
    ) -> Result<(SyncJob, bool), SyncError> {
        let _changes = self.changes.lock().await;
        let mut registration = self.registration(name).await?;
        let active = self.lock_active().get(name).map(|a| a.job_id.clone());
        if let Some(job_id) = active {
            return Ok((self.status(&job_id).await?, false));
        }
        if let Some(waiting) = self.unfinished_job(name).await? {
            return Ok((waiting, false));
        }
        let mut job = SyncJob::new(name.clone(), registration.strategy, trigger, attempt);
        // On the writer the job runs here; elsewhere it waits, unclaimed,
        // for the writer to claim it.
        let writer = self.writer().map(|(_, writer)| writer);
        if writer.is_some() {
            job.node = Some(self.node.clone());
        }
        writer
            .as_ref()
            .unwrap_or(&self.meta)
            .put_if(
                Collection::Jobs,
                &job.job_id,
                &job,
                job.labels(),
                Expect::Absent,
            )
            .await?;
        if let Some(writer) = writer {
            self.launch(job.clone(), writer);
        }
        registration.last_job_id = Some(job.job_id.clone());
        self.meta
            .put(Collection::Tables, &name.to_string(), &registration)
            .await?;
        Ok((job, true))
    }

    /// A job of the table that is queued or running (on another node, or
    /// waiting to be claimed).
    pub(super) async fn unfinished_job(
        &self,
        name: &TableName,
    ) -> Result<Option<SyncJob>, SyncError> {
        let query = ListQuery::default().label("table", name.to_string());
        let jobs = self.meta.page::<SyncJob>(Collection::Jobs, &query).await?;
        Ok(jobs
            .items
            .into_iter()
            .map(|v| v.value)
            .find(|job| !job.state.ended()))
    }

    /// Runs a recorded job on this node (the writer), unless its table
    /// already has one running here.
    pub(super) fn launch(self: &Arc<Self>, job: SyncJob, writer: Meta) -> bool {
        let progress = Arc::new(Progress::default());
        let cancel = CancellationToken::new();
        {
            let mut active = self.lock_active();
            if active.contains_key(&job.table) {
                return false;
            }
            active.insert(
                job.table.clone(),
                ActiveJob {
                    job_id: job.job_id.clone(),
                    progress: Arc::clone(&progress),
                    cancel: cancel.clone(),
                },
            );
        }
        let service = Arc::clone(self);
        let span = tracing::info_span!("sync", job_id = %job.job_id, table = %job.table);
        tokio::spawn(service.run(job, progress, cancel, writer).instrument(span));
        true
    }

    /// Cancels a queued or running job. Returns it as it is now; it ends
    /// `cancelled` shortly after, unless it was already committing. A job
    /// another node runs is asked to stop through its record; one still
    /// waiting for the writer is cancelled at once.
    pub async fn cancel(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        for _ in 0..5 {
            let job = self.status(job_id).await?;
            let active = self.lock_active().get(&job.table).cloned();
            if let Some(active) = active.filter(|a| a.job_id == job_id) {
                active.cancel.cancel();
                return Ok(job);
            }
            let Some(stored) = self
                .meta
                .get_versioned::<SyncJob>(Collection::Jobs, job_id)
                .await?
            else {
                return Err(SyncError::NoSuchJob(job_id.to_string()));
            };
            let mut job = stored.value;
            if job.state.ended() {
                return Err(SyncError::NotRunning {
                    job_id: job_id.to_string(),
                    state: job.state,
                });
            }
            if job.node.is_none() {
                job.state = JobState::Cancelled;
                job.error = Some(SyncError::Cancelled.to_string());
                job.finished_at = Some(chrono::Utc::now());
            } else {
                job.cancel_requested = true;
            }
            let expect = Expect::Version(stored.version);
            match self
                .meta
                .put_if(Collection::Jobs, job_id, &job, job.labels(), expect)
                .await
            {
                Ok(_) => return Ok(job),
                // Claimed or recorded meanwhile: look again.
                Err(crate::meta::MetaError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SyncError::Task(format!(
            "job '{job_id}' kept changing while being cancelled; try again"
        )))
    }

    /// A job with live counters if it is running.
    pub async fn status(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        let mut job: SyncJob = self
            .meta
            .get(Collection::Jobs, job_id)
            .await?
            .ok_or_else(|| SyncError::NoSuchJob(job_id.to_string()))?;
        self.add_live_counters(&mut job);
        Ok(job)
    }

    /// Rows and bytes so far, for a job that is still going.
    fn add_live_counters(&self, job: &mut SyncJob) {
        if !job.state.ended()
            && let Some(active) = self.lock_active().get(&job.table)
            && active.job_id == job.job_id
        {
            active.progress.copy_into(job);
        }
    }

    /// Jobs, newest first, filtered and paginated.
    pub async fn jobs(&self, query: JobQuery) -> Result<JobPage, SyncError> {
        let table = query.table.as_deref().map(TableName::parse).transpose()?;
        let state = match query.state.as_deref() {
            None => None,
            Some(text) => Some(JobState::parse(text).ok_or_else(|| {
                SyncError::BadSettings(format!(
                    "unknown job state '{text}'; use queued, running, succeeded, failed or cancelled"
                ))
            })?),
        };
        let limit = query.limit.unwrap_or(job::DEFAULT_PAGE);
        if limit == 0 || limit > job::MAX_PAGE {
            return Err(SyncError::BadSettings(format!(
                "limit must be between 1 and {}",
                job::MAX_PAGE
            )));
        }
        let offset = match query.page_token.as_deref() {
            None => 0,
            Some(token) => token.parse::<usize>().map_err(|_| {
                SyncError::BadSettings(format!(
                    "page_token '{token}' is not one this server gave; start without it"
                ))
            })?,
        };
        let mut jobs: Vec<SyncJob> = self
            .meta
            .list::<SyncJob>(Collection::Jobs)
            .await?
            .into_iter()
            .filter(|j| table.as_ref().is_none_or(|t| &j.table == t))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .collect();
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.job_id.cmp(&a.job_id))
        });
        let total = jobs.len();
        let mut page: Vec<SyncJob> = jobs.into_iter().skip(offset).take(limit).collect();
        for job in &mut page {
            self.add_live_counters(job);
        }
        let next = offset + page.len();
        Ok(JobPage {
            jobs: page,
            next_page_token: (next < total).then(|| next.to_string()),
        })
    }

    /// Waits until a job is terminal (used by `--demo` and tests).
    pub async fn wait(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        loop {
            let job = self.status(job_id).await?;
            if job.state.ended() {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, ActiveJob>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frees a table's job slot when its job ends, however it ends.
pub(super) struct ActiveEntry {
    pub(super) service: Arc<SyncService>,
    pub(super) table: TableName,
}

impl Drop for ActiveEntry {
    fn drop(&mut self) {
        self.service.lock_active().remove(&self.table);
    }
}

//! The writer's role. In a cluster one node — the writer, elected through
//! the metadata store ([`Meta::campaign`]) — runs syncs and the scheduler;
//! every node may start a job, which then waits, queued and unclaimed, for
//! the writer to claim it. A single node is the writer for good.
//!
//! Taking over fails the jobs a previous writer left running; stepping down
//! cancels this node's jobs (their records are refused: the metadata a job
//! records through is fenced by the term it started under). A cancel asked
//! on a node that does not run the job is a flag on the job's record,
//! which the writer honours.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use super::jobs::Progress;
use super::{JobState, SyncError, SyncJob, SyncService};
use crate::meta::{Cache, Collection, Expect, ListQuery, Meta, MetaError};
use crate::table_name::TableName;

/// Jobs claimed per scheduler tick at most.
const CLAIMS_PER_TICK: usize = 100;

impl SyncService {
    /// The term and fenced metadata of this node, while it is the writer.
    pub(super) fn writer(&self) -> Option<(u64, Meta)> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node is the writer now (the role it was told about).
    pub fn is_writer(&self) -> bool {
        self.role.borrow().is_some()
    }

    /// Follows the role: takes over or steps down when it changed. Returns
    /// the fenced metadata while this node is the writer.
    pub(super) async fn follow_role(self: &Arc<Self>) -> Option<Meta> {
        let role = *self.role.borrow();
        let held = self.writer().map(|(term, _)| term);
        if role != held {
            if held.is_some() {
                self.step_down();
            }
            // A new writer first loads what the last one published: the
            // next sync builds on it.
            if let Some(term) = role
                && let Err(e) = async {
                    self.catch_up_all().await?;
                    self.take_over(term).await
                }
                .await
            {
                tracing::warn!(term, error = %e, "could not take over as the writer; retrying");
                return None;
            }
        }
        self.writer().map(|(_, meta)| meta)
    }

    /// Becomes the writer under `term`: fails the jobs a previous writer
    /// left unfinished (leaving unclaimed ones to be claimed) and schedules
    /// every scheduled table, the interrupted ones at once.
    pub(super) async fn take_over(&self, term: u64) -> Result<(), SyncError> {
        let writer = self.meta.fenced(term);
        let mut interrupted = HashMap::new();
        let stored = self
            .meta
            .page::<SyncJob>(Collection::Jobs, &ListQuery::default())
            .await?;
        for item in stored.items {
            let mut job = item.value;
            let unclaimed = job.node.is_none() && job.state == JobState::Queued;
            if job.state.ended() || unclaimed {
                continue;
            }
            job.state = JobState::Failed;
            job.error = Some(
                "interrupted: the writer stopped while this job was running (a restart, or \
                 another node took over); the previous replica is intact"
                    .into(),
            );
            job.finished_at = Some(Utc::now());
            job.retry_at = None;
            job.cancel_requested = false;
            let expect = Expect::Version(item.version);
            match writer
                .put_if(Collection::Jobs, &item.key, &job, job.labels(), expect)
                .await
            {
                Ok(_) => {}
                // Someone recorded it meanwhile (the old writer, just before
                // it was fenced): its record stands.
                Err(MetaError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            interrupted.insert(job.table.clone(), job.attempt);
        }
        let now = Utc::now();
        for registration in self.registrations().await? {
            let Some(schedule) = &registration.schedule else {
                continue;
            };
            let next = if interrupted.contains_key(&registration.name) {
                Some(now)
            } else {
                schedule.next_after(self.last_start(&registration).await)
            };
            if let Some(next) = next {
                self.lock_due().insert(registration.name.clone(), next);
            }
        }
        self.lock_interrupted().extend(interrupted);
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some((term, writer));
        tracing::info!(term, node = %self.node, "running syncs as the writer");
        Ok(())
    }

    /// Stops being the writer: this node's jobs are cancelled.
    fn step_down(&self) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for active in self.lock_active().values() {
            active.cancel.cancel();
        }
        tracing::warn!(node = %self.node, "no longer the writer: syncs stopped on this node");
    }

    /// Claims the jobs other nodes queued, for tables not syncing now.
    pub(super) async fn claim_queued(self: &Arc<Self>, writer: &Meta) -> Result<usize, SyncError> {
        let waiting = ListQuery {
            limit: Some(CLAIMS_PER_TICK),
            ..ListQuery::default()
        }
        .label("claimed", "no")
        .label("state", JobState::Queued.as_str());
        let candidates = self
            .meta
            .page::<SyncJob>(Collection::Jobs, &waiting)
            .await?;
        let mut claimed = 0;
        // Taken like a start, so a table never gets two jobs at once.
        let _changes = self.changes.lock().await;
        for candidate in candidates.items {
            if self.lock_active().contains_key(&candidate.value.table) {
                continue;
            }
            let this_one = ListQuery {
                prefix: Some(candidate.key.clone()),
                ..waiting.clone()
            };
            let node = self.node.clone();
            let won = writer
                .claim::<SyncJob, _>(Collection::Jobs, &this_one, |job| {
                    job.node = Some(node.clone());
                    job.labels()
                })
                .await?;
            if let Some(job) = won {
                tracing::info!(job_id = %job.key, table = %job.value.table, "claimed a queued sync");
                self.launch(job.value, writer.clone());
                claimed += 1;
            }
        }
        Ok(claimed)
    }

    /// Cancels the jobs this node runs whose cancel was asked elsewhere.
    pub(super) async fn honour_cancel_requests(&self) {
        let running: Vec<(String, tokio_util::sync::CancellationToken)> = self
            .lock_active()
            .values()
            .map(|a| (a.job_id.clone(), a.cancel.clone()))
            .collect();
        for (job_id, cancel) in running {
            if let Ok(Some(job)) = self.meta.get::<SyncJob>(Collection::Jobs, &job_id).await
                && job.cancel_requested
            {
                cancel.cancel();
            }
        }
    }

    /// Writes a job's record through the writer's fenced metadata, keeping
    /// a cancel request another node added (and honouring it).
    pub(super) async fn record(&self, writer: &Meta, job: &SyncJob) {
        for _ in 0..5 {
            let stored = match writer
                .get_versioned::<SyncJob>(Collection::Jobs, &job.job_id)
                .await
            {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(job_id = %job.job_id, error = %e, "could not record the job");
                    return;
                }
            };
            let mut next = job.clone();
            let expect = match stored {
                Some(stored) => {
                    if stored.value.cancel_requested && !job.state.ended() {
                        next.cancel_requested = true;
                        self.cancel_local(&job.table, &job.job_id);
                    }
                    Expect::Version(stored.version)
                }
                None => Expect::Absent,
            };
            match writer
                .put_if(Collection::Jobs, &job.job_id, &next, next.labels(), expect)
                .await
            {
                Ok(_) => return,
                Err(MetaError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::error!(job_id = %job.job_id, error = %e, "could not record the job");
                    return;
                }
            }
        }
        tracing::error!(job_id = %job.job_id, "could not record the job: it kept changing");
    }

    /// Copies a running job's counters into its record, so every node of
    /// a cluster shows its progress. A record that moved on meanwhile (the
    /// job ended, or was asked to cancel) wins: the write is conditional.
    pub(super) async fn record_progress(&self, writer: &Meta, job_id: &str, progress: &Progress) {
        let Ok(Some(stored)) = writer
            .get_versioned::<SyncJob>(Collection::Jobs, job_id)
            .await
        else {
            return;
        };
        if stored.value.state != JobState::Running {
            return;
        }
        let mut job = stored.value;
        progress.copy_into(&mut job);
        let written = writer
            .put_if(
                Collection::Jobs,
                job_id,
                &job,
                job.labels(),
                Expect::Version(stored.version),
            )
            .await;
        if let Err(e) = written
            && !matches!(e, MetaError::Conflict { .. })
        {
            tracing::debug!(job_id, error = %e, "could not record the job's progress");
        }
    }

    fn cancel_local(&self, table: &TableName, job_id: &str) {
        if let Some(active) = self.lock_active().get(table)
            && active.job_id == job_id
        {
            active.cancel.cancel();
        }
    }

    pub(super) fn lock_interrupted(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, u32>> {
        self.interrupted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// Registrations changed on other nodes reach the writer's schedule, and
// published epochs this node's replica.
#[async_trait::async_trait]
impl Cache for SyncService {
    fn name(&self) -> &'static str {
        "replication"
    }

    fn collections(&self) -> &'static [Collection] {
        &[Collection::Tables, Collection::Snapshots]
    }

    async fn refresh(&self, collection: Collection, key: Option<&str>) -> Result<(), MetaError> {
        if collection == Collection::Snapshots {
            // Loaded by the loader task, not here (loads take long).
            let table = key.and_then(|k| TableName::parse(k).ok());
            let _ = self.loads.send(table);
            return Ok(());
        }
        let registrations = match key.map(TableName::parse) {
            Some(Ok(name)) => match self.meta.get(Collection::Tables, &name.to_string()).await? {
                Some(registration) => vec![registration],
                None => {
                    self.lock_due().remove(&name);
                    return Ok(());
                }
            },
            Some(Err(_)) => return Ok(()),
            None => {
                // Everything: tables gone or new; due times kept as they are.
                let all: Vec<super::TableRegistration> = self.meta.list(Collection::Tables).await?;
                let mut due = self.lock_due();
                due.retain(|name, _| all.iter().any(|r| &r.name == name));
                all.into_iter()
                    .filter(|r| !due.contains_key(&r.name))
                    .collect()
            }
        };
        // As a change made on this node does: the next run counts from now.
        let now = Utc::now();
        for registration in registrations {
            self.reschedule(&registration, now);
        }
        Ok(())
    }
}

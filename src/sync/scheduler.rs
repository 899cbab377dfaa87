//! The scheduler: each table's next due time, a task that starts due
//! syncs every tick, and hourly housekeeping that purges old jobs.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{SyncError, SyncJob, SyncService, TableRegistration, Trigger};
use crate::meta::{Collection, Meta};
use crate::table_name::TableName;

/// How often the scheduler looks for due tables.
const TICK: Duration = Duration::from_secs(1);
/// How often old job records are purged.
const HOUSEKEEPING: Duration = Duration::from_secs(3600);

impl SyncService {
    /// When the table's latest job started (or the table was registered).
    pub(super) async fn last_start(&self, registration: &TableRegistration) -> DateTime<Utc> {
        let last = match &registration.last_job_id {
            Some(id) => self
                .meta
                .get::<SyncJob>(Collection::Jobs, id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        last.and_then(|j| j.started_at.or(Some(j.created_at)))
            .unwrap_or(registration.created_at)
    }

    pub(super) fn lock_due(&self) -> std::sync::MutexGuard<'_, BTreeMap<TableName, DateTime<Utc>>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the syncs that are due; returns how many started.
    async fn run_due(self: &Arc<Self>) -> usize {
        let now = Utc::now();
        let due: Vec<TableName> = self
            .lock_due()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut started = 0;
        for name in due {
            let recovery = self.lock_interrupted().remove(&name);
            let (trigger, attempt) = match recovery {
                Some(attempt) => (Trigger::Recovery, attempt + 1),
                None => (Trigger::Schedule, 1),
            };
            match self.start_with(&name, trigger, attempt).await {
                Ok((_, true)) => started += 1,
                Ok((_, false)) => {} // Still running from before: skip this turn.
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "scheduled sync could not start")
                }
            }
            if let Ok(registration) = self.registration(&name).await {
                self.reschedule(&registration, now);
            } else {
                self.lock_due().remove(&name);
            }
        }
        started
    }

    /// Deletes finished jobs past the retention, keeping each table's
    /// latest and latest successful job.
    async fn purge_jobs(&self, writer: &Meta) -> Result<usize, SyncError> {
        let Ok(retention) = chrono::Duration::from_std(self.settings.job_retention) else {
            return Ok(0);
        };
        let cutoff = Utc::now() - retention;
        let keep: Vec<String> = self
            .registrations()
            .await?
            .into_iter()
            .flat_map(|r| [r.last_job_id, r.last_success_job_id])
            .flatten()
            .collect();
        let mut purged = 0;
        for job in self.meta.list::<SyncJob>(Collection::Jobs).await? {
            let finished = job.finished_at.unwrap_or(job.created_at);
            if job.state.ended() && finished < cutoff && !keep.contains(&job.job_id) {
                writer.delete(Collection::Jobs, &job.job_id).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Every tick: follows the writer's role, and while this node is the
/// writer runs due syncs, claims jobs other nodes queued and honours their
/// cancel requests; housekeeping hourly. Ends when the service goes.
pub(super) async fn scheduler(service: Weak<SyncService>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_housekeeping: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let Some(writer) = service.follow_role().await else {
            continue;
        };
        service.run_due().await;
        if let Err(e) = service.claim_queued(&writer).await {
            tracing::warn!(error = %e, "could not claim queued sync jobs");
        }
        service.honour_cancel_requests().await;
        if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING) {
            last_housekeeping = Some(Instant::now());
            match service.purge_jobs(&writer).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged old sync jobs"),
                Err(e) => tracing::warn!(error = %e, "could not purge old sync jobs"),
            }
        }
    }
}

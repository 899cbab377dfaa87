//! Sync actions: `sync.start`, `sync.status`, `sync.jobs`, `sync.cancel`,
//! `sync.schedule` and `sync.wait_epoch`.
//!
//! Jobs, their states and the scheduler belong to `sync`; this file parses
//! the bodies and shapes the answers. [`JobView`] is the one shape of a
//! job on the wire: `sync.status`, `sync.jobs` and the `last_sync` of
//! `table.list` and `table.status` all use it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Actions, parse};
use crate::sync::{JobQuery, JobState, Published, Schedule, Strategy, SyncError, SyncJob, Trigger};
use crate::table_name::TableName;

/// The body of `sync.start`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TableRequest {
    table: String,
}

/// The body of `sync.status` and `sync.cancel`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobRequest {
    job_id: String,
}

/// The body of `sync.schedule`: exactly one of `every`, `cron` or `clear`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ScheduleRequest {
    table: String,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    clear: bool,
}

/// The body of `sync.wait_epoch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitEpochRequest {
    table: String,
    epoch: u64,
    /// How long to wait [default 30000, at most 300000].
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// `sync.wait_epoch`: the epoch this node serves now.
#[derive(Debug, Serialize)]
pub(super) struct EpochView {
    table: TableName,
    epoch: u64,
    node: String,
}

/// Longest `sync.wait_epoch` waits.
const MAX_EPOCH_WAIT_MS: u64 = 300_000;

/// A sync job as every action shows it.
#[derive(Debug, Serialize)]
pub(super) struct JobView {
    job_id: String,
    table: TableName,
    strategy: Strategy,
    trigger: Trigger,
    state: JobState,
    rows: u64,
    bytes: u64,
    table_rows: Option<u64>,
    files: u64,
    source_bytes: u64,
    source_rows: Option<u64>,
    watermark_before: Option<String>,
    watermark_after: Option<String>,
    added_columns: Vec<String>,
    error: Option<String>,
    attempt: u32,
    retry_at: Option<DateTime<Utc>>,
    /// The epoch its committed version was published at (cluster).
    epoch: Option<u64>,
    /// What it wrote to the snapshot store (cluster): `{"kind": "full" |
    /// "delta", "rows", "bytes"}`.
    published: Option<Published>,
    /// The node that ran it (cluster).
    node: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// From start to finish, or to now while running; null before the start.
    duration_ms: Option<i64>,
    /// `sync.cancel` applies (queued or running).
    cancellable: bool,
    /// It failed or was cancelled: `sync.start` runs the table again.
    retryable: bool,
}

impl From<SyncJob> for JobView {
    fn from(job: SyncJob) -> Self {
        let duration_ms = match (job.started_at, job.finished_at) {
            (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
            (Some(start), None) => Some((Utc::now() - start).num_milliseconds()),
            _ => None,
        };
        Self {
            job_id: job.job_id,
            table: job.table,
            strategy: job.strategy,
            trigger: job.trigger,
            state: job.state,
            rows: job.rows,
            bytes: job.bytes,
            table_rows: job.table_rows,
            files: job.files,
            source_bytes: job.source_bytes,
            source_rows: job.source_rows,
            watermark_before: job.watermark_before,
            watermark_after: job.watermark_after,
            added_columns: job.added_columns,
            error: job.error,
            attempt: job.attempt,
            retry_at: job.retry_at,
            epoch: job.epoch,
            published: job.published,
            node: job.node,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            duration_ms,
            cancellable: !job.state.ended(),
            retryable: job.state.retryable(),
        }
    }
}

/// `sync.start`: the job started, or the one already queued or running.
#[derive(Debug, Serialize)]
pub(super) struct StartedView {
    job_id: String,
    table: TableName,
    state: JobState,
    already_running: bool,
}

/// `sync.jobs`: a page of jobs, newest first.
#[derive(Debug, Serialize)]
pub(super) struct JobPageView {
    jobs: Vec<JobView>,
    next_page_token: Option<String>,
}

/// `sync.cancel`: the job asked to stop.
#[derive(Debug, Serialize)]
pub(super) struct CancellingView {
    job_id: String,
    table: TableName,
    /// Always true: cancelling is asynchronous, `sync.status` tells the end.
    cancelling: bool,
}

/// `sync.schedule`: the table's schedule now and its next run.
#[derive(Debug, Serialize)]
pub(super) struct ScheduleView {
    table: TableName,
    schedule: Option<Schedule>,
    next_run: Option<DateTime<Utc>>,
}

impl Actions {
    /// `sync.start`: starts a sync of a registered table.
    pub(super) async fn sync_start(&self, body: &[u8]) -> Result<StartedView, ActionError> {
        let TableRequest { table } = parse(Action::SyncStart, body)?;
        let name = TableName::parse(&table).map_err(SyncError::from)?;
        let (job, started) = self.sync.start(&name).await?;
        Ok(StartedView {
            job_id: job.job_id,
            table: job.table,
            state: job.state,
            already_running: !started,
        })
    }

    /// `sync.status`: one job.
    pub(super) async fn sync_status(&self, body: &[u8]) -> Result<JobView, ActionError> {
        let JobRequest { job_id } = parse(Action::SyncStatus, body)?;
        Ok(self.sync.status(&job_id).await?.into())
    }

    /// `sync.jobs`: jobs, newest first, filtered and paged.
    pub(super) async fn sync_jobs(&self, body: &[u8]) -> Result<JobPageView, ActionError> {
        let query: JobQuery = parse(Action::SyncJobs, body)?;
        let page = self.sync.jobs(query).await?;
        Ok(JobPageView {
            jobs: page.jobs.into_iter().map(JobView::from).collect(),
            next_page_token: page.next_page_token,
        })
    }

    /// `sync.cancel`: cancels a queued or running job.
    pub(super) async fn sync_cancel(&self, body: &[u8]) -> Result<CancellingView, ActionError> {
        let JobRequest { job_id } = parse(Action::SyncCancel, body)?;
        let job = self.sync.cancel(&job_id).await?;
        Ok(CancellingView {
            job_id: job.job_id,
            table: job.table,
            cancelling: true,
        })
    }

    /// `sync.wait_epoch`: waits until this node serves a table's epoch.
    pub(super) async fn sync_wait_epoch(&self, body: &[u8]) -> Result<EpochView, ActionError> {
        let request: WaitEpochRequest = parse(Action::SyncWaitEpoch, body)?;
        let table = TableName::parse(&request.table).map_err(SyncError::from)?;
        let timeout_ms = request.timeout_ms.unwrap_or(30_000);
        if timeout_ms > MAX_EPOCH_WAIT_MS {
            return Err(ActionError::BadRequest {
                action: Action::SyncWaitEpoch.name(),
                message: format!("timeout_ms must be at most {MAX_EPOCH_WAIT_MS}"),
            });
        }
        self.sync.registration(&table).await?;
        let timeout = std::time::Duration::from_millis(timeout_ms);
        match self
            .sync
            .wait_for_epoch(&table, request.epoch, timeout)
            .await
        {
            Some(epoch) => Ok(EpochView {
                table,
                epoch,
                node: self.sync.node().to_string(),
            }),
            None => Err(SyncError::EpochNotServed {
                served: self.sync.served_epoch(&table).unwrap_or(0),
                table,
                epoch: request.epoch,
                waited_ms: timeout_ms,
            }
            .into()),
        }
    }

    /// `sync.schedule`: sets or clears a table's schedule.
    pub(super) async fn sync_schedule(&self, body: &[u8]) -> Result<ScheduleView, ActionError> {
        let request: ScheduleRequest = parse(Action::SyncSchedule, body)?;
        let name = TableName::parse(&request.table).map_err(SyncError::from)?;
        let schedule = match (request.clear, request.every, request.cron) {
            (true, None, None) => None,
            (false, Some(every), None) => Some(Schedule::Every { every }),
            (false, None, Some(cron)) => Some(Schedule::Cron { cron }),
            _ => {
                return Err(ActionError::BadRequest {
                    action: Action::SyncSchedule.name(),
                    message: "give exactly one of \"every\", \"cron\" or \"clear\": true".into(),
                });
            }
        };
        let (registration, next_run) = self.sync.set_schedule(&name, schedule).await?;
        Ok(ScheduleView {
            table: registration.name,
            schedule: registration.schedule,
            next_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;

    #[test]
    fn job_view_keeps_every_key_and_nulls() {
        let table = TableName::parse("sales.orders").unwrap();
        let job = SyncJob::new(table, Strategy::Full, Trigger::Manual, 1);
        let view = serde_json::to_value(JobView::from(job.clone())).unwrap();
        assert_eq!(
            view,
            json!({
                "job_id": job.job_id,
                "table": "sales.orders",
                "strategy": "full",
                "trigger": "manual",
                "state": "queued",
                "rows": 0,
                "bytes": 0,
                "table_rows": null,
                "files": 0,
                "source_bytes": 0,
                "source_rows": null,
                "watermark_before": null,
                "watermark_after": null,
                "added_columns": [],
                "error": null,
                "attempt": 1,
                "retry_at": null,
                "epoch": null,
                "published": null,
                "node": null,
                "created_at": job.created_at,
                "started_at": null,
                "finished_at": null,
                "duration_ms": null,
                "cancellable": true,
                "retryable": false,
            })
        );
    }

    #[test]
    fn duration_runs_from_start_to_finish() {
        let table = TableName::parse("sales.orders").unwrap();
        let mut job = SyncJob::new(table, Strategy::Full, Trigger::Manual, 1);
        let start = Utc::now() - Duration::seconds(10);
        job.started_at = Some(start);
        job.finished_at = Some(start + Duration::milliseconds(1500));
        assert_eq!(JobView::from(job.clone()).duration_ms, Some(1500));
        job.finished_at = None;
        assert!(JobView::from(job).duration_ms >= Some(10_000));
    }
}

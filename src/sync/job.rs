//! Sync job records: durable, one per sync run (retries are attempts of
//! the same job), listed by `sync.jobs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::registration::Strategy;
use crate::meta::Labels;
use crate::table_name::TableName;

/// States of a sync job: the states of every durable job (queued for a
/// free slot or the next attempt; cancelled and failed leave the previous
/// replica intact).
pub use crate::jobs::JobState;

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `sync.start`.
    Manual,
    /// The table's schedule.
    Schedule,
    /// A scheduled table whose job the previous process left unfinished.
    Recovery,
}

/// A durable sync job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncJob {
    /// Job id.
    pub job_id: String,
    /// Table.
    pub table: TableName,
    /// Strategy this run used (`full` when a schema change forced a refresh).
    pub strategy: Strategy,
    /// What started it.
    #[serde(default = "manual")]
    pub trigger: Trigger,
    /// State.
    pub state: JobState,
    /// Rows read from the source so far (after the job: rows extracted).
    pub rows: u64,
    /// Arrow bytes read so far.
    pub bytes: u64,
    /// Rows in the replica after the commit.
    #[serde(default)]
    pub table_rows: Option<u64>,
    /// Source files (file sources).
    pub files: u64,
    /// Source size on storage.
    pub source_bytes: u64,
    /// Rows at the source, when it keeps a count.
    #[serde(default)]
    pub source_rows: Option<u64>,
    /// Watermark before the run (incremental, append).
    #[serde(default)]
    pub watermark_before: Option<String>,
    /// Watermark committed by the run.
    #[serde(default)]
    pub watermark_after: Option<String>,
    /// Columns the source added since the last sync.
    #[serde(default)]
    pub added_columns: Vec<String>,
    /// Failure message (of the last attempt while retrying).
    pub error: Option<String>,
    /// Attempt number (1 for the first run).
    pub attempt: u32,
    /// When the next attempt starts, while waiting to retry.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Start of loading.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
    /// The writer node running it; none while it waits for the writer to
    /// claim it (started on another node of a cluster).
    #[serde(default)]
    pub node: Option<String>,
    /// `sync.cancel` was asked on a node that does not run the job; the
    /// writer cancels it when it sees this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The epoch the committed version was published at (a cluster's
    /// nodes serve it once they have loaded it; see `sync.wait_epoch`).
    #[serde(default)]
    pub epoch: Option<u64>,
    /// What it wrote to the snapshot store (cluster).
    #[serde(default)]
    pub published: Option<super::snapshots::Published>,
}

fn manual() -> Trigger {
    Trigger::Manual
}

impl SyncJob {
    /// A queued job.
    pub fn new(table: TableName, strategy: Strategy, trigger: Trigger, attempt: u32) -> Self {
        Self {
            job_id: uuid::Uuid::new_v4().to_string(),
            table,
            strategy,
            trigger,
            state: JobState::Queued,
            rows: 0,
            bytes: 0,
            table_rows: None,
            files: 0,
            source_bytes: 0,
            source_rows: None,
            watermark_before: None,
            watermark_after: None,
            added_columns: Vec::new(),
            error: None,
            attempt,
            retry_at: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            node: None,
            cancel_requested: false,
            epoch: None,
            published: None,
        }
    }

    /// What listings filter on: the table, the state and whether a writer
    /// has claimed the job.
    pub(super) fn labels(&self) -> Labels {
        Labels::from([
            ("table", self.table.to_string()),
            ("state", self.state.as_str().to_string()),
            (
                "claimed",
                if self.node.is_some() { "yes" } else { "no" }.to_string(),
            ),
        ])
    }
}

/// `sync.jobs` filters and page.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only this table's jobs.
    #[serde(default)]
    pub table: Option<String>,
    /// Only jobs in this state.
    #[serde(default)]
    pub state: Option<String>,
    /// Page size [default 50, at most 500].
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// Default page size.
pub(super) const DEFAULT_PAGE: usize = 50;
/// Largest page size.
pub(super) const MAX_PAGE: usize = 500;

/// Exponential backoff with full jitter: attempt 1 waits about `base`,
/// each next one twice as long, capped at `max`.
pub(super) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let ceiling = exponential.min(max);
    // Between half and all of the ceiling: spread, but never immediate.
    let half = ceiling / 2;
    half + Duration::from_millis(rand::random_range(0..=half.as_millis().max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for _ in 0..100 {
            let first = backoff(base, max, 1);
            assert!(
                first >= Duration::from_secs(1)
                    && first <= Duration::from_secs(2) + Duration::from_millis(1)
            );
            let third = backoff(base, max, 3);
            assert!(
                third >= Duration::from_secs(4)
                    && third <= Duration::from_secs(8) + Duration::from_millis(1)
            );
            let late = backoff(base, max, 30);
            assert!(late >= Duration::from_secs(30) && late <= max + Duration::from_millis(1));
        }
    }

    #[test]
    fn states_parse_by_name() {
        assert_eq!(JobState::parse("Cancelled"), Some(JobState::Cancelled));
        assert_eq!(JobState::parse("done"), None);
        assert!(JobState::Cancelled.ended());
        assert!(!JobState::Queued.ended());
    }
}

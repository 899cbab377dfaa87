//! The `[sync]` settings: how many syncs run at once, how transient
//! failures are retried and how long finished jobs are kept.

use std::time::Duration;

/// Replication settings, read from `[sync]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Syncs running at once; more wait in the queue.
    pub parallelism: usize,
    /// Further attempts after a transient source failure (network,
    /// throttling, a source restarting).
    pub retries: u32,
    /// Wait before the first retry; doubles per attempt, with jitter.
    #[serde(with = "crate::duration_text")]
    pub retry_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "crate::duration_text")]
    pub retry_backoff_max: Duration,
    /// Finished jobs older than this are purged (each table's latest kept).
    #[serde(with = "crate::duration_text")]
    pub job_retention: Duration,
    /// Where the writer of a cluster publishes each committed table
    /// version for the other nodes: an object-store URL
    /// (`s3://bucket/prefix`) or a directory every node reaches. Required
    /// with a shared metadata store; unused on a single node.
    pub snapshot_store: String,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            parallelism: 2,
            retries: 3,
            retry_backoff: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(300),
            job_retention: Duration::from_secs(30 * 86_400),
            snapshot_store: String::new(),
        }
    }
}

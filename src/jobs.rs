//! Durable jobs beside syncs (exports, context scans; fine-tunes
//! later): one record per job in `meta`, visible to the principal that
//! started it and to admins, with live progress while it runs and a
//! cancellation handle. A job a stopped server left queued or running is
//! marked failed (interrupted) at the next start: its output, if any, was
//! never published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::meta::{Collection, Expect, Labels, ListQuery, Meta, MetaError};
use crate::principal::Owner;
use crate::principal::Principal;

/// Job failures.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No such job, or not one the caller may see.
    #[error("no job '{0}' (it does not exist or is not yours)")]
    NotFound(String),
    /// The job ended already.
    #[error("job '{id}' already {state}; nothing to cancel")]
    Ended {
        /// The job.
        id: String,
        /// Its final state.
        state: JobState,
    },
    /// A listing request is wrong.
    #[error("invalid job request: {0}")]
    BadRequest(String),
    /// The job's task died (a bug in airlock).
    #[error("{0}")]
    Task(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// `query.export`.
    Export,
    /// `context.scan`.
    Scan,
    /// `nl.evaluate`.
    Evaluate,
    /// `finetune.create`.
    Finetune,
}

impl JobKind {
    fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::Scan => "scan",
            JobKind::Evaluate => "evaluate",
            JobKind::Finetune => "finetune",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to start.
    Queued,
    /// Working.
    Running,
    /// Done; its result is in `result`.
    Succeeded,
    /// Stopped by an error (in `error`).
    Failed,
    /// Stopped by `job.cancel`.
    Cancelled,
}

impl JobState {
    /// Parses a state name, in any case.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).ok()
    }

    /// The state's name, as JSON shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended.
    pub fn ended(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job ended this way is worth running again.
    pub fn retryable(self) -> bool {
        matches!(self, JobState::Failed | JobState::Cancelled)
    }

    /// Every state, in the order a job passes through them.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A durable job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolJob {
    /// Id (sorts by creation time).
    pub id: String,
    /// What it does.
    pub kind: JobKind,
    /// Who started it.
    pub owner: Owner,
    /// Where it is.
    pub state: JobState,
    /// The request that started it (secrets never appear in tool requests).
    pub request: serde_json::Value,
    /// Rows processed (live while running).
    pub rows: u64,
    /// Bytes written (live while running).
    pub bytes: u64,
    /// What it produced, when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The node running it (jobs run where they were started).
    #[serde(default)]
    pub node: Option<String>,
}

impl ToolJob {
    fn labels(&self) -> Labels {
        Labels::from([
            ("kind", self.kind.as_str().to_string()),
            ("state", self.state.as_str().to_string()),
            ("owner", self.owner.label()),
        ])
    }
}

/// Counters a running job updates.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows so far.
    pub rows: AtomicU64,
    /// Bytes so far (shared with the writer that counts them).
    pub bytes: Arc<AtomicU64>,
}

/// A running job's live handles.
#[derive(Debug, Clone)]
pub struct Running {
    /// The job's id.
    pub job_id: String,
    /// Counters.
    pub progress: Arc<Progress>,
    /// Cancelled by `job.cancel`.
    pub cancel: CancellationToken,
}

/// Filters of `job.list`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// `export` (admins may also ask for `sync`, answered by the sync service).
    #[serde(default)]
    pub kind: Option<String>,
    /// Only jobs in this state.
    #[serde(default)]
    pub state: Option<JobState>,
    /// Page size (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// The jobs of the data tools.
#[derive(Debug)]
pub struct JobStore {
    meta: Meta,
    /// This node's name: its jobs are the ones it fails after a restart.
    node: String,
    running: Mutex<HashMap<String, Running>>,
}

impl JobStore {
    /// Opens the store; jobs this node (`node`) left unfinished when it
    /// stopped are failed. Other nodes' jobs are theirs to run.
    pub async fn open(meta: Meta, node: String) -> Result<Arc<Self>, JobError> {
        for state in [JobState::Queued, JobState::Running] {
            let query = ListQuery::default().label("state", state.as_str());
            for item in meta
                .page::<ToolJob>(Collection::ToolJobs, &query)
                .await?
                .items
            {
                let mut job = item.value;
                if job.node.as_ref().is_some_and(|n| *n != node) {
                    continue;
                }
                job.state = JobState::Failed;
                job.error = Some("interrupted: the server stopped; start the job again".into());
                job.finished_at = Some(Utc::now());
                meta.put_if(
                    Collection::ToolJobs,
                    &job.id,
                    &job,
                    job.labels(),
                    Expect::Version(item.version),
                )
                .await?;
            }
        }
        Ok(Arc::new(Self {
            meta,
            node,
            running: Mutex::new(HashMap::new()),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn store(&self, job: &ToolJob, expect: Expect) -> Result<(), JobError> {
        self.meta
            .put_if(Collection::ToolJobs, &job.id, job, job.labels(), expect)
            .await?;
        Ok(())
    }

    /// Records a new job, running, and returns it with its live handles.
    pub async fn start(
        &self,
        principal: &Principal,
        kind: JobKind,
        request: serde_json::Value,
    ) -> Result<(ToolJob, Running), JobError> {
        let now = Utc::now();
        let job = ToolJob {
            id: format!(
                "{}-{:013}-{}",
                kind.as_str(),
                now.timestamp_millis(),
                uuid::Uuid::new_v4().simple()
            ),
            kind,
            owner: Owner::of(principal),
            state: JobState::Running,
            request,
            rows: 0,
            bytes: 0,
            result: None,
            error: None,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            node: Some(self.node.clone()),
        };
        self.store(&job, Expect::Absent).await?;
        let running = Running {
            job_id: job.id.clone(),
            progress: Arc::new(Progress::default()),
            cancel: CancellationToken::new(),
        };
        self.lock().insert(job.id.clone(), running.clone());
        Ok((job, running))
    }

    /// Starts a job whose `work` runs in its own task, and records how it
    /// ended. Answers the running job, or with `wait` the ended one.
    pub async fn run<F, Fut>(
        self: &Arc<Self>,
        principal: &Principal,
        kind: JobKind,
        request: serde_json::Value,
        wait: bool,
        work: F,
    ) -> Result<ToolJob, JobError>
    where
        F: FnOnce(Running) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        let (job, running) = self.start(principal, kind, request).await?;
        let started = job.clone();
        let jobs = Arc::clone(self);
        let task = tokio::spawn(async move {
            use futures::FutureExt;
            // A panic in the work still ends the job (failed), rather
            // than leaving it running forever.
            let outcome = std::panic::AssertUnwindSafe(work(running))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err("the job failed unexpectedly (a bug in airlock); see the server log".into())
                });
            jobs.finish(job, outcome).await
        });
        if !wait {
            return Ok(started);
        }
        task.await
            .map_err(|e| JobError::Task(format!("job {} failed: {e}", started.id)))?
    }

    /// Records how a job ended and forgets its live handles.
    pub async fn finish(
        &self,
        mut job: ToolJob,
        outcome: Result<serde_json::Value, String>,
    ) -> Result<ToolJob, JobError> {
        let running = self.lock().remove(&job.id);
        if let Some(running) = &running {
            job.rows = running.progress.rows.load(Ordering::Acquire);
            job.bytes = running.progress.bytes.load(Ordering::Acquire);
        }
        let cancelled = running.is_some_and(|r| r.cancel.is_cancelled());
        job.finished_at = Some(Utc::now());
        match outcome {
            Ok(result) => {
                job.state = JobState::Succeeded;
                job.result = Some(result);
            }
            Err(_) if cancelled => job.state = JobState::Cancelled,
            Err(error) => {
                job.state = JobState::Failed;
                job.error = Some(error);
            }
        }
        self.store(&job, Expect::Any).await?;
        Ok(job)
    }

    /// A job the caller may see, with live counters if it runs.
    pub async fn get(&self, principal: &Principal, id: &str) -> Result<ToolJob, JobError> {
        let job = self
            .meta
            .get::<ToolJob>(Collection::ToolJobs, id)
            .await?
            .filter(|job| principal.is_admin() || job.owner.is(principal))
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        Ok(self.with_progress(job))
    }

    fn with_progress(&self, mut job: ToolJob) -> ToolJob {
        if let Some(running) = self.lock().get(&job.id) {
            job.rows = running.progress.rows.load(Ordering::Acquire);
            job.bytes = running.progress.bytes.load(Ordering::Acquire);
        }
        job
    }

    /// Jobs the caller may see, oldest first, in pages.
    pub async fn list(
        &self,
        principal: &Principal,
        filter: &JobFilter,
    ) -> Result<(Vec<ToolJob>, Option<String>), JobError> {
        let limit = filter.limit.unwrap_or(50);
        if limit == 0 || limit > 500 {
            return Err(JobError::BadRequest(
                "limit must be between 1 and 500".into(),
            ));
        }
        let mut query = ListQuery {
            after: filter.page_token.clone(),
            limit: Some(limit),
            ..ListQuery::default()
        };
        if let Some(kind) = &filter.kind {
            query = query.label("kind", kind.clone());
        }
        if let Some(state) = filter.state {
            query = query.label("state", state.as_str());
        }
        if !principal.is_admin() {
            query = query.label("owner", Owner::of(principal).label());
        }
        let page = self
            .meta
            .page::<ToolJob>(Collection::ToolJobs, &query)
            .await?;
        let jobs = page
            .items
            .into_iter()
            .map(|v| self.with_progress(v.value))
            .collect();
        Ok((jobs, page.next))
    }

    /// Asks a running job to stop; it ends as cancelled, leaving nothing.
    pub async fn cancel(&self, principal: &Principal, id: &str) -> Result<ToolJob, JobError> {
        let job = self.get(principal, id).await?;
        if job.state.ended() {
            return Err(JobError::Ended {
                id: job.id,
                state: job.state,
            });
        }
        if let Some(running) = self.lock().get(id) {
            running.cancel.cancel();
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::meta::DuckDbMetaStore;
    use crate::principal::TokenKind;

    fn agent(name: &str) -> Principal {
        Principal::described(
            TokenKind::Agent,
            Some("s".into()),
            name.into(),
            BTreeMap::new(),
        )
    }

    #[tokio::test]
    async fn jobs_are_private_and_a_restart_fails_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        let store = JobStore::open(meta.clone(), "here:1".into()).await.unwrap();
        let (a1, a2) = (agent("a1"), agent("a2"));
        let (done, _) = store
            .start(&a1, JobKind::Export, serde_json::json!({}))
            .await
            .unwrap();
        let done = store
            .finish(done, Ok(serde_json::json!({"rows": 1})))
            .await
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        let (left, running) = store
            .start(&a1, JobKind::Export, serde_json::json!({}))
            .await
            .unwrap();
        running.progress.rows.store(7, Ordering::Release);
        assert_eq!(store.get(&a1, &left.id).await.unwrap().rows, 7);
        assert!(matches!(
            store.get(&a2, &left.id).await,
            Err(JobError::NotFound(_))
        ));
        let (mine, _) = store.list(&a1, &JobFilter::default()).await.unwrap();
        assert_eq!(mine.len(), 2);
        let (theirs, _) = store.list(&a2, &JobFilter::default()).await.unwrap();
        assert!(theirs.is_empty());
        assert!(matches!(
            store.cancel(&a1, &done.id).await,
            Err(JobError::Ended { .. })
        ));
        // Another node of a cluster runs a job meanwhile.
        let there = JobStore::open(meta.clone(), "there:2".into())
            .await
            .unwrap();
        let (elsewhere, _) = there
            .start(&a1, JobKind::Export, serde_json::json!({}))
            .await
            .unwrap();
        drop(store);
        let reopened = JobStore::open(meta, "here:1".into()).await.unwrap();
        let left = reopened.get(&a1, &left.id).await.unwrap();
        assert_eq!(left.state, JobState::Failed);
        assert_eq!(
            reopened.get(&a1, &elsewhere.id).await.unwrap().state,
            JobState::Running,
            "a restart failed another node's job"
        );
        assert!(left.error.unwrap().contains("interrupted"));
        assert_eq!(
            reopened.get(&a1, &done.id).await.unwrap().state,
            JobState::Succeeded
        );
    }
}

//! Durable job actions: `query.export` starts one; `job.get`, `job.list`
//! and `job.cancel` follow every kind — exports (their owner and admins)
//! and, for admins, syncs (the same records `sync.*` shows).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sync::JobView as SyncJobView;
use super::{Action, ActionError, Actions, parse};
use crate::jobs::{JobError, JobFilter, JobKind, JobState, ToolJob};
use crate::principal::Principal;
use crate::sync::JobQuery;
use crate::tools::export::ExportRequest;

/// The body of `job.get` and `job.cancel`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobIdRequest {
    job_id: String,
}

/// A data-tool job as every action shows it.
#[derive(Debug, Serialize)]
pub(super) struct ToolJobView {
    job_id: String,
    kind: JobKind,
    owner: String,
    state: JobState,
    request: serde_json::Value,
    rows: u64,
    bytes: u64,
    result: Option<serde_json::Value>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<ToolJob> for ToolJobView {
    fn from(job: ToolJob) -> Self {
        Self {
            job_id: job.id,
            kind: job.kind,
            owner: job.owner.label(),
            state: job.state,
            request: job.request,
            rows: job.rows,
            bytes: job.bytes,
            result: job.result,
            error: job.error,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

/// Any job: a data-tool job, or (for admins) a sync job.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum AnyJobView {
    Tool(ToolJobView),
    Sync(Box<SyncJobWithKind>),
}

/// A sync job, marked with its kind.
#[derive(Debug, Serialize)]
pub(super) struct SyncJobWithKind {
    kind: &'static str,
    #[serde(flatten)]
    job: SyncJobView,
}

/// `job.list`: a page of jobs.
#[derive(Debug, Serialize)]
pub(super) struct JobListView {
    jobs: Vec<AnyJobView>,
    next_page_token: Option<String>,
}

impl Actions {
    pub(super) async fn query_export(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ToolJobView, ActionError> {
        let request: ExportRequest = parse(Action::QueryExport, body)?;
        Ok(self.exporter.export(principal, request).await?.into())
    }

    pub(super) async fn job_get(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<AnyJobView, ActionError> {
        let JobIdRequest { job_id } = parse(Action::JobGet, body)?;
        match self.jobs.get(principal, &job_id).await {
            Ok(job) => Ok(AnyJobView::Tool(job.into())),
            Err(JobError::NotFound(_)) if principal.is_admin() => {
                Ok(sync_view(self.sync.status(&job_id).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn job_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<JobListView, ActionError> {
        let filter: JobFilter = parse(Action::JobList, body)?;
        if filter.kind.as_deref() == Some("sync") {
            if !principal.is_admin() {
                return Ok(JobListView {
                    jobs: vec![],
                    next_page_token: None,
                });
            }
            let page = self
                .sync
                .jobs(JobQuery {
                    table: None,
                    state: filter.state.map(|s| s.to_string()),
                    limit: filter.limit,
                    page_token: filter.page_token,
                })
                .await?;
            return Ok(JobListView {
                jobs: page.jobs.into_iter().map(sync_view).collect(),
                next_page_token: page.next_page_token,
            });
        }
        let (jobs, next_page_token) = self.jobs.list(principal, &filter).await?;
        Ok(JobListView {
            jobs: jobs
                .into_iter()
                .map(|j| AnyJobView::Tool(j.into()))
                .collect(),
            next_page_token,
        })
    }

    pub(super) async fn job_cancel(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<AnyJobView, ActionError> {
        let JobIdRequest { job_id } = parse(Action::JobCancel, body)?;
        match self.jobs.cancel(principal, &job_id).await {
            Ok(job) => Ok(AnyJobView::Tool(job.into())),
            Err(JobError::NotFound(_)) if principal.is_admin() => {
                Ok(sync_view(self.sync.cancel(&job_id).await?))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn sync_view(job: crate::sync::SyncJob) -> AnyJobView {
    AnyJobView::Sync(Box::new(SyncJobWithKind {
        kind: "sync",
        job: job.into(),
    }))
}

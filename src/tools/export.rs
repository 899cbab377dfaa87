//! `query.export`: runs a query as the caller and writes its result as an
//! artifact (Parquet, CSV or JSON lines) without passing it through the
//! client. A durable job: the caller's policy, row cap and limits apply to
//! the query, the artifact limits to the output, and a failed or cancelled
//! export leaves no artifact behind.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{BinaryArray, RecordBatch};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::json::LineDelimitedWriter;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::artifacts::{
    ArtifactError, ArtifactService, UploadMode, UploadOptions, Visibility, chunk_schema,
};
use crate::jobs::{JobError, JobKind, JobStore, Running, ToolJob};
use crate::principal::Principal;
use crate::query::{QueryEngine, QueryError};

/// Export failures found before the job starts.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The query does not plan for the caller.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The artifact request is wrong.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The job could not be recorded.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// A tabular artifact, queryable as `artifacts.<name>`.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// The body of `query.export`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// The query.
    pub sql: String,
    /// Output format.
    pub format: ExportFormat,
    /// Artifact name.
    pub name: String,
    /// `private` (default) or `swarm`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Artifact tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Artifact lifetime in seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Answer when the export has ended instead of at once.
    #[serde(default)]
    pub wait: bool,
}

/// Runs exports.
#[derive(Debug)]
pub struct Exporter {
    query: Arc<QueryEngine>,
    artifacts: Arc<ArtifactService>,
    jobs: Arc<JobStore>,
}

impl Exporter {
    /// An exporter over these services.
    pub fn new(
        query: Arc<QueryEngine>,
        artifacts: Arc<ArtifactService>,
        jobs: Arc<JobStore>,
    ) -> Self {
        Self {
            query,
            artifacts,
            jobs,
        }
    }

    /// Starts an export; with `wait`, answers when it has ended.
    pub async fn export(
        &self,
        principal: &Principal,
        request: ExportRequest,
    ) -> Result<ToolJob, ExportError> {
        // Refused now, not in a job: bad SQL, tables the caller cannot see,
        // a bad name.
        super::artifacts::check_artifact_name(&request.name)?;
        let planned = self.query.plan(principal, &request.sql).await?;
        let mut recorded = serde_json::to_value(&request).unwrap_or_default();
        if let Some(map) = recorded.as_object_mut() {
            map.remove("wait");
        }
        let query = Arc::clone(&self.query);
        let artifacts = Arc::clone(&self.artifacts);
        let owner = principal.clone();
        let wait = request.wait;
        let work = move |running: Running| async move {
            let query_id = format!("export:{}", uuid::Uuid::new_v4());
            // A cancelled job cancels its query, whose stream then fails, so
            // the upload aborts and nothing is kept.
            let watcher = {
                let query = Arc::clone(&query);
                let principal = owner.clone();
                let cancel = running.cancel.clone();
                let query_id = query_id.clone();
                tokio::spawn(async move {
                    cancel.cancelled().await;
                    query.cancel(&query_id, &principal);
                })
            };
            let outcome = write(
                &query, &artifacts, &owner, &request, planned, &query_id, &running,
            )
            .await;
            watcher.abort();
            outcome.map_err(|e| e.to_string())
        };
        Ok(self
            .jobs
            .run(principal, JobKind::Export, recorded, wait, work)
            .await?)
    }
}

async fn write(
    query: &QueryEngine,
    artifacts: &ArtifactService,
    principal: &Principal,
    request: &ExportRequest,
    planned: crate::query::PlannedQuery,
    query_id: &str,
    running: &Running,
) -> Result<serde_json::Value, ArtifactError> {
    let stream = query
        .execute(planned, query_id, principal)
        .await
        .map_err(|e| ArtifactError::Input(e.to_string()))?;
    let truncated = stream.truncated();
    let schema = stream.schema();
    let progress = Arc::clone(&running.progress);
    let cancel = running.cancel.clone();
    let batches = stream.map(move |batch| {
        if cancel.is_cancelled() {
            return Err(ArtifactError::Input("the export was cancelled".into()));
        }
        let batch = batch.map_err(|e| ArtifactError::Input(e.to_string()))?;
        progress
            .rows
            .fetch_add(batch.num_rows() as u64, Ordering::AcqRel);
        Ok(batch)
    });
    let content_type = match request.format {
        ExportFormat::Parquet => None,
        ExportFormat::Csv => Some("text/csv".to_string()),
        ExportFormat::Jsonl => Some("application/x-ndjson".to_string()),
    };
    let options = UploadOptions {
        visibility: request.visibility,
        tags: request.tags.clone(),
        ttl_seconds: request.ttl_seconds,
        content_type,
        mode: UploadMode::CreateOrReplace,
        progress: Some(Arc::clone(&running.progress.bytes)),
    };
    let uploaded = match request.format {
        ExportFormat::Parquet => {
            artifacts
                .upload(principal, &request.name, options, schema, batches.boxed())
                .await?
        }
        format => {
            let mut first = true;
            let encoded = batches.and_then(move |batch| {
                let header = std::mem::replace(&mut first, false);
                futures::future::ready(encode(&batch, format, header))
            });
            artifacts
                .upload(
                    principal,
                    &request.name,
                    options,
                    chunk_schema(),
                    encoded.boxed(),
                )
                .await?
        }
    };
    Ok(serde_json::json!({
        "artifact_id": uploaded.artifact.id,
        "name": uploaded.artifact.name,
        "version": uploaded.version.version,
        "format": request.format,
        "rows": query_rows(&uploaded, &running.progress),
        "bytes": uploaded.version.size,
        "sha256": uploaded.version.sha256,
        "truncated": truncated.load(Ordering::Acquire),
    }))
}

fn query_rows(uploaded: &super::artifacts::Uploaded, progress: &crate::jobs::Progress) -> u64 {
    uploaded
        .version
        .rows
        .unwrap_or_else(|| progress.rows.load(Ordering::Acquire))
}

/// One batch as CSV or JSON lines, in a `chunk` batch.
fn encode(
    batch: &RecordBatch,
    format: ExportFormat,
    header: bool,
) -> Result<RecordBatch, ArtifactError> {
    let fail = |e: datafusion::arrow::error::ArrowError| {
        ArtifactError::Input(format!("encoding the export: {e}"))
    };
    let mut bytes = Vec::new();
    match format {
        ExportFormat::Csv => {
            let mut writer = CsvWriterBuilder::new()
                .with_header(header)
                .build(&mut bytes);
            writer.write(batch).map_err(fail)?;
        }
        ExportFormat::Jsonl => {
            let mut writer = LineDelimitedWriter::new(&mut bytes);
            writer.write(batch).map_err(fail)?;
            writer.finish().map_err(fail)?;
        }
        ExportFormat::Parquet => {
            return Err(ArtifactError::Input(
                "Parquet is not encoded per batch".into(),
            ));
        }
    }
    RecordBatch::try_new(
        chunk_schema(),
        vec![Arc::new(BinaryArray::from(vec![bytes.as_slice()]))],
    )
    .map_err(fail)
}

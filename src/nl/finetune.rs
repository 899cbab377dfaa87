//! Golden SQL as training data: `finetune.export` writes it as chat JSONL
//! (system: the schema context the caller may see, exactly as `nl.sql`
//! would prompt; user: the question; assistant: the SQL), and
//! `finetune.create|get|list|cancel|delete` run fine-tuning jobs against
//! the provider's files and fine-tuning API, polling until the provider is
//! done and keeping the resulting model id for `nl.sql {"model"}`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::records::{RecordPage, RecordQuery};
use super::{NlError, NlService, prompt};
use crate::context::SearchRequest;
use crate::context::records::GoldenSql;
use crate::jobs::{JobKind, Running};
use crate::llm::Message;
use crate::llm::finetune::RemoteJob;
use crate::meta::{Collection, Expect, Labels, ListQuery};
use crate::principal::{Owner, Principal};
use crate::tools::artifacts::{UploadOptions, Visibility};

/// The body of `finetune.export`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinetuneExportRequest {
    /// The artifact to write.
    pub name: String,
    /// Golden pairs to include (default: every one the caller may see).
    #[serde(default)]
    pub golden_ids: Option<Vec<String>>,
    /// `private` (default) or `swarm`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
}

/// The body of `finetune.create`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinetuneRequest {
    /// The provider to train with (create).
    #[serde(default)]
    pub provider: Option<String>,
    /// The model to fine-tune (default: the provider's model).
    #[serde(default)]
    pub base_model: Option<String>,
    /// Golden pairs to train on (default: every one the caller may see).
    #[serde(default)]
    pub golden_ids: Option<Vec<String>>,
    /// Added to the resulting model's name.
    #[serde(default)]
    pub suffix: Option<String>,
}

/// The body of `finetune.get`, `.cancel` and `.delete`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FinetuneId {
    /// The fine-tune.
    pub id: String,
}

/// A fine-tune as stored: the job id, the provider's job and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finetune {
    /// Its id (the id of the `job.*` job that runs it).
    pub id: String,
    /// Provider name.
    pub provider: String,
    /// The model trained.
    pub base_model: String,
    /// Training examples sent.
    pub examples: usize,
    /// The uploaded training file.
    pub training_file: Option<String>,
    /// The provider's job id.
    pub remote_id: Option<String>,
    /// The provider's status: `validating_files`, `queued`, `running`,
    /// `succeeded`, `failed` or `cancelled` (`uploading` before it has one).
    pub status: String,
    /// The model to use once it succeeded (`nl.sql {"model": …}`).
    pub fine_tuned_model: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Who started it.
    pub owner: Owner,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Finetune {
    fn ended(&self) -> bool {
        matches!(
            self.status.as_str(),
            "succeeded" | "failed" | "cancelled" | INTERRUPTED
        )
    }
}

/// The status of a fine-tune a stopped server was following; `finetune.get`
/// asks the provider how it went.
const INTERRUPTED: &str = "interrupted";
/// Status polls that may fail in a row before the fine-tune counts as lost.
const POLL_FAILURES: u32 = 10;

impl NlService {
    /// `finetune.export`: the golden set as a chat JSONL artifact.
    pub async fn finetune_export(
        self: &Arc<Self>,
        principal: &Principal,
        request: FinetuneExportRequest,
    ) -> Result<serde_json::Value, NlError> {
        crate::tools::artifacts::check_artifact_name(&request.name)?;
        let golden = self.chosen_golden(principal, request.golden_ids.as_ref())?;
        let (data, examples) = self.training_data(principal, &golden).await?;
        let options = UploadOptions {
            visibility: request.visibility,
            content_type: Some("application/jsonl".into()),
            ..UploadOptions::default()
        };
        let uploaded = self
            .artifacts
            .upload_bytes(principal, &request.name, options, data.to_vec())
            .await?;
        Ok(json!({
            "artifact_id": uploaded.artifact.id,
            "name": uploaded.artifact.name,
            "version": uploaded.version.version,
            "examples": examples,
            "bytes": uploaded.version.size,
        }))
    }

    /// `finetune.create`: uploads the training data and runs the
    /// provider's job to its end, as a `job.*` job.
    pub async fn finetune_create(
        self: &Arc<Self>,
        principal: &Principal,
        request: FinetuneRequest,
    ) -> Result<Finetune, NlError> {
        let provider = self.llm.provider(request.provider.as_deref())?;
        let golden = self.chosen_golden(principal, request.golden_ids.as_ref())?;
        let (data, examples) = self.training_data(principal, &golden).await?;
        let base_model = request
            .base_model
            .clone()
            .unwrap_or_else(|| provider.model().to_string());
        if let Some(suffix) = &request.suffix
            && (suffix.is_empty()
                || suffix.len() > 40
                || !suffix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(NlError::BadRequest(
                "suffix must be 1-40 letters, digits, '-' or '_'".into(),
            ));
        }
        let recorded = json!({
            "provider": provider.name(),
            "base_model": base_model,
            "examples": examples,
            "suffix": request.suffix,
        });
        let service = Arc::clone(self);
        let owner = Owner::of(principal);
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Finetune, String>>();
        let work = move |running: Running| async move {
            service
                .run_finetune(
                    owner,
                    provider,
                    base_model,
                    request.suffix,
                    data,
                    examples,
                    running,
                    tx,
                )
                .await
        };
        let job = self
            .jobs
            .run(principal, JobKind::Finetune, recorded, false, work)
            .await?;
        // The record is written before the first provider call; the job's
        // id is its id.
        match rx.await {
            Ok(Ok(record)) => Ok(record),
            Ok(Err(error)) => Err(NlError::BadRequest(format!(
                "fine-tune {} could not be recorded: {error}",
                job.id
            ))),
            Err(_) => Err(NlError::BadRequest(format!(
                "fine-tune job {} ended before it started; see job.get",
                job.id
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_finetune(
        self: Arc<Self>,
        owner: Owner,
        provider: Arc<crate::llm::Provider>,
        base_model: String,
        suffix: Option<String>,
        data: Bytes,
        examples: usize,
        running: Running,
        started: tokio::sync::oneshot::Sender<Result<Finetune, String>>,
    ) -> Result<serde_json::Value, String> {
        let job_id = running.job_id.clone();
        let now = Utc::now();
        let mut record = Finetune {
            id: job_id.clone(),
            provider: provider.name().to_string(),
            base_model: base_model.clone(),
            examples,
            training_file: None,
            remote_id: None,
            status: "uploading".into(),
            fine_tuned_model: None,
            error: None,
            owner,
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.save_finetune(&record).await {
            let _ = started.send(Err(e.to_string()));
            return Err(e.to_string());
        }
        let _ = started.send(Ok(record.clone()));
        let outcome = self
            .drive_finetune(
                &provider,
                &mut record,
                &base_model,
                suffix.as_deref(),
                data,
                &running,
            )
            .await;
        if let Err(error) = &outcome {
            if !record.ended() {
                record.status = if running.cancel.is_cancelled() {
                    "cancelled".into()
                } else {
                    "failed".into()
                };
            }
            record.error.get_or_insert_with(|| error.clone());
        }
        record.updated_at = Utc::now();
        self.save_finetune(&record)
            .await
            .map_err(|e| e.to_string())?;
        outcome?;
        if record.status != "succeeded" {
            return Err(record
                .error
                .clone()
                .unwrap_or_else(|| format!("the provider's job ended {}", record.status)));
        }
        Ok(json!({
            "finetune_id": record.id,
            "fine_tuned_model": record.fine_tuned_model,
            "remote_id": record.remote_id,
        }))
    }

    async fn drive_finetune(
        &self,
        provider: &crate::llm::Provider,
        record: &mut Finetune,
        base_model: &str,
        suffix: Option<&str>,
        data: Bytes,
        running: &Running,
    ) -> Result<(), String> {
        let file = provider
            .upload_training_file(&format!("airlock-{}.jsonl", record.id), data)
            .await
            .map_err(|e| e.to_string())?;
        record.training_file = Some(file.clone());
        let remote = provider
            .create_fine_tune(base_model, &file, suffix)
            .await
            .map_err(|e| e.to_string())?;
        record.remote_id = Some(remote.id.clone());
        self.update_finetune(record, &remote).await?;
        let poll = self
            .llm
            .settings()
            .finetune_poll_interval
            .max(Duration::from_millis(50));
        let mut cancelled_remote = false;
        let mut failures = 0;
        while !record.ended() {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = running.cancel.cancelled(), if !cancelled_remote => {
                    cancelled_remote = true;
                    let remote = provider.cancel_fine_tune(&remote.id).await.map_err(|e| e.to_string())?;
                    self.update_finetune(record, &remote).await?;
                    continue;
                }
            }
            match provider.fine_tune(&remote.id).await {
                Ok(remote) => {
                    failures = 0;
                    self.update_finetune(record, &remote).await?;
                }
                // The provider's job goes on whatever our polls do; a few
                // failed polls in a row are waited out.
                Err(e) if failures + 1 < POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(finetune = %record.id, error = %e, "fine-tune status poll failed");
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    async fn update_finetune(
        &self,
        record: &mut Finetune,
        remote: &RemoteJob,
    ) -> Result<(), String> {
        if record.status == remote.status && record.fine_tuned_model == remote.fine_tuned_model {
            return Ok(());
        }
        record.status = remote.status.clone();
        record.fine_tuned_model = remote.fine_tuned_model.clone();
        record.error = remote.error_message();
        record.updated_at = Utc::now();
        self.save_finetune(record).await.map_err(|e| e.to_string())
    }

    async fn save_finetune(&self, record: &Finetune) -> Result<(), NlError> {
        self.meta
            .put_if(
                Collection::Finetunes,
                &record.id,
                record,
                Labels::from([("owner", record.owner.label())]),
                Expect::Any,
            )
            .await?;
        Ok(())
    }

    /// Whether `principal` may ask `provider` for `model` in place of the
    /// configured one: admins any model; others a fine-tuned model of their
    /// own (trained on context they may see, which another's may repeat).
    pub(super) async fn may_use_model(
        &self,
        principal: &Principal,
        provider: &str,
        model: &str,
    ) -> Result<bool, NlError> {
        if principal.is_admin() {
            return Ok(!model.trim().is_empty() && model.len() <= 256);
        }
        let query = ListQuery::default().label("owner", Owner::of(principal).label());
        let page = self
            .meta
            .page::<Finetune>(Collection::Finetunes, &query)
            .await?;
        Ok(page.items.iter().any(|f| {
            f.value.provider == provider && f.value.fine_tuned_model.as_deref() == Some(model)
        }))
    }

    /// `finetune.get`. An interrupted fine-tune's provider job is looked
    /// up again, so its result is not lost with the server that followed it.
    pub async fn finetune_get(&self, principal: &Principal, id: &str) -> Result<Finetune, NlError> {
        let mut record = self
            .meta
            .get::<Finetune>(Collection::Finetunes, id)
            .await?
            .filter(|f| principal.is_admin() || f.owner.is(principal))
            .ok_or_else(|| {
                NlError::NotFound(format!(
                    "no fine-tune '{id}' (it does not exist or is not yours)"
                ))
            })?;
        if record.status == INTERRUPTED
            && let (Some(remote_id), Ok(provider)) = (
                record.remote_id.clone(),
                self.llm.provider(Some(&record.provider)),
            )
            && let Ok(remote) = provider.fine_tune(&remote_id).await
            && remote.ended()
        {
            // Best effort: a provider still unreachable leaves it interrupted.
            let _ = self.update_finetune(&mut record, &remote).await;
        }
        Ok(record)
    }

    /// Marks fine-tunes a stopped server was following as interrupted.
    pub(super) async fn interrupt_finetunes(&self) -> Result<(), NlError> {
        for mut record in self.meta.list::<Finetune>(Collection::Finetunes).await? {
            if !record.ended() {
                record.status = INTERRUPTED.into();
                record.error = Some(
                    "the server stopped while following this fine-tune; finetune.get asks the provider \
                     how it ended"
                        .into(),
                );
                record.updated_at = Utc::now();
                self.save_finetune(&record).await?;
            }
        }
        Ok(())
    }

    /// `finetune.list`.
    pub async fn finetune_list(
        &self,
        principal: &Principal,
        request: RecordQuery,
    ) -> Result<RecordPage<Finetune>, NlError> {
        if let Some(id) = &request.id {
            return Ok(RecordPage {
                items: vec![self.finetune_get(principal, id).await?],
                next_page_token: None,
            });
        }
        let limit = request.limit.unwrap_or(50);
        if limit == 0 || limit > 500 {
            return Err(NlError::BadRequest(
                "limit must be between 1 and 500".into(),
            ));
        }
        let mut query = ListQuery {
            after: request.page_token,
            limit: Some(limit),
            ..ListQuery::default()
        };
        if !principal.is_admin() {
            query = query.label("owner", Owner::of(principal).label());
        }
        let page = self
            .meta
            .page::<Finetune>(Collection::Finetunes, &query)
            .await?;
        Ok(RecordPage {
            items: page.items.into_iter().map(|v| v.value).collect(),
            next_page_token: page.next,
        })
    }

    /// `finetune.cancel`: the job asks the provider to cancel, and ends
    /// when the provider says it has.
    pub async fn finetune_cancel(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Finetune, NlError> {
        let record = self.finetune_get(principal, id).await?;
        if record.ended() {
            return Err(NlError::BadRequest(format!(
                "fine-tune '{}' already {}; nothing to cancel",
                record.id, record.status
            )));
        }
        self.jobs.cancel(principal, &record.id).await?;
        Ok(record)
    }

    /// `finetune.delete`: forgets an ended fine-tune and deletes its
    /// training file at the provider.
    pub async fn finetune_delete(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<serde_json::Value, NlError> {
        let record = self.finetune_get(principal, id).await?;
        if !record.ended() {
            return Err(NlError::BadRequest(format!(
                "fine-tune '{}' is {}; cancel it first (finetune.cancel)",
                record.id, record.status
            )));
        }
        let mut file_deleted = false;
        if let (Some(file), Ok(provider)) = (
            &record.training_file,
            self.llm.provider(Some(&record.provider)),
        ) {
            file_deleted = provider.delete_file(file).await.is_ok();
        }
        self.meta.delete(Collection::Finetunes, &record.id).await?;
        Ok(json!({"id": record.id, "deleted": true, "training_file_deleted": file_deleted}))
    }

    /// One chat example per golden pair, as `nl.sql` would prompt for it
    /// (its own pair held out of the context).
    async fn training_data(
        self: &Arc<Self>,
        principal: &Principal,
        golden: &[GoldenSql],
    ) -> Result<(Bytes, usize), NlError> {
        let mut out = Vec::new();
        for pair in golden {
            let search = SearchRequest {
                question: pair.question.clone(),
                k: None,
                exclude_golden: BTreeSet::from([pair.id.clone()]),
            };
            let context = self.context.search(principal, &search).await?;
            let mut messages = prompt::messages(&pair.question, &context);
            messages.push(Message::new(
                "assistant",
                format!("```sql\n{}\n```", pair.sql.trim()),
            ));
            let line = serde_json::to_string(&json!({"messages": messages}))
                .map_err(|e| NlError::BadRequest(format!("training example: {e}")))?;
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok((Bytes::from(out), golden.len()))
    }
}

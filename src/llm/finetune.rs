//! The OpenAI-compatible files and fine-tuning endpoints: upload a
//! training file, create a job, read and cancel it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{LlmError, Provider};

/// A fine-tuning job as the provider reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteJob {
    /// The provider's job id (`ftjob-…`).
    pub id: String,
    /// `validating_files`, `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The model it trains.
    #[serde(default)]
    pub model: Option<String>,
    /// The resulting model, once it succeeded.
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<Value>,
    /// Tokens trained on.
    #[serde(default)]
    pub trained_tokens: Option<u64>,
}

impl RemoteJob {
    /// Whether the provider is done with it.
    pub fn ended(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }

    /// The failure as a sentence.
    pub fn error_message(&self) -> Option<String> {
        let error = self.error.as_ref().filter(|e| !e.is_null())?;
        let message = error.get("message").and_then(Value::as_str);
        let code = error.get("code").and_then(Value::as_str);
        Some(match (code, message) {
            (Some(code), Some(message)) => format!("{message} ({code})"),
            (None, Some(message)) => message.to_string(),
            _ => error.to_string(),
        })
    }
}

impl Provider {
    /// Uploads a JSONL training file; its id.
    pub async fn upload_training_file(&self, name: &str, data: Bytes) -> Result<String, LlmError> {
        let answer = self
            .post_file("files", &[("purpose", "fine-tune")], name, data)
            .await?;
        self.string_field(&answer, "id")
    }

    /// Deletes an uploaded file.
    pub async fn delete_file(&self, id: &str) -> Result<(), LlmError> {
        self.delete(&format!("files/{id}")).await.map(|_| ())
    }

    /// Starts fine-tuning `model` on an uploaded file.
    pub async fn create_fine_tune(
        &self,
        model: &str,
        training_file: &str,
        suffix: Option<&str>,
    ) -> Result<RemoteJob, LlmError> {
        let mut body = json!({"model": model, "training_file": training_file});
        if let Some(suffix) = suffix {
            body["suffix"] = json!(suffix);
        }
        let answer = self.post_json_once("fine_tuning/jobs", &body).await?;
        self.job(answer)
    }

    /// A job's current state.
    pub async fn fine_tune(&self, id: &str) -> Result<RemoteJob, LlmError> {
        let answer = self.get_json(&format!("fine_tuning/jobs/{id}")).await?;
        self.job(answer)
    }

    /// Asks the provider to cancel a job.
    pub async fn cancel_fine_tune(&self, id: &str) -> Result<RemoteJob, LlmError> {
        let answer = self
            .post_json(&format!("fine_tuning/jobs/{id}/cancel"), &json!({}))
            .await?;
        self.job(answer)
    }

    fn job(&self, answer: Value) -> Result<RemoteJob, LlmError> {
        serde_json::from_value(answer).map_err(|e| LlmError::Malformed {
            provider: self.name().to_string(),
            detail: format!("not a fine-tuning job: {e}"),
        })
    }

    fn string_field(&self, answer: &Value, field: &str) -> Result<String, LlmError> {
        answer
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| LlmError::Malformed {
                provider: self.name().to_string(),
                detail: format!("no '{field}' in the answer"),
            })
    }
}

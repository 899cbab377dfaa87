//! `nl.answer`: run a query as the caller and ask the model for a short
//! answer grounded in its rows. The model sees at most `max_rows` rows of
//! the caller's own result, under the caller's policy: never a value the
//! caller could not read.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use super::{NlError, NlService, check_question};
use crate::llm::{Message, Usage};
use crate::principal::Principal;

/// Rows shown to the model by default, and at most.
const DEFAULT_ROWS: usize = 50;
const MAX_ROWS: usize = 200;

/// The body of `nl.answer`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// A generation of the caller's (its question and SQL).
    #[serde(default)]
    pub generation_id: Option<String>,
    /// Or SQL to run…
    #[serde(default)]
    pub sql: Option<String>,
    /// …and the question it answers.
    #[serde(default)]
    pub question: Option<String>,
    /// The provider to ask.
    #[serde(default)]
    pub provider: Option<String>,
    /// Rows shown to the model (default 50, at most 200).
    #[serde(default)]
    pub max_rows: Option<usize>,
}

/// What `nl.answer` answers.
#[derive(Debug, Serialize)]
pub struct NlAnswer {
    /// The model's answer.
    pub answer: String,
    /// The question.
    pub question: String,
    /// The query run.
    pub sql: String,
    /// The generation, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_id: Option<String>,
    /// The rows shown to the model, as objects.
    pub rows: Vec<serde_json::Value>,
    /// Whether the result had more rows than were shown.
    pub truncated: bool,
    /// Tokens of the call.
    pub tokens: Usage,
    /// Wall time, query and model.
    pub latency_ms: u64,
    /// Provider name.
    pub provider: String,
    /// Model asked.
    pub model: String,
}

impl NlService {
    /// `nl.answer`.
    pub async fn answer(
        self: &Arc<Self>,
        principal: &Principal,
        request: AnswerRequest,
    ) -> Result<NlAnswer, NlError> {
        let started = Instant::now();
        let max_rows = request.max_rows.unwrap_or(DEFAULT_ROWS);
        if max_rows == 0 || max_rows > MAX_ROWS {
            return Err(NlError::BadRequest(format!(
                "max_rows must be between 1 and {MAX_ROWS}"
            )));
        }
        let (question, sql, generation_id) = match (&request.generation_id, &request.sql) {
            (Some(id), None) => {
                let generation = self.generation(principal, id).await?;
                let Some(sql) = generation
                    .sql
                    .filter(|_| generation.status == super::Status::Valid)
                else {
                    return Err(NlError::BadRequest(format!(
                        "generation '{id}' has no valid SQL ({}); ask nl.sql again",
                        generation.error.as_deref().unwrap_or("invalid")
                    )));
                };
                (generation.question, sql, Some(generation.id))
            }
            (None, Some(sql)) => {
                let question = request.question.as_deref().ok_or_else(|| {
                    NlError::BadRequest("with \"sql\", give the \"question\" it answers".into())
                })?;
                (check_question(question)?.to_string(), sql.clone(), None)
            }
            _ => {
                return Err(NlError::BadRequest(
                    "give \"generation_id\", or \"sql\" and \"question\"".into(),
                ));
            }
        };
        let provider = self.llm.provider(request.provider.as_deref())?;
        let planned = self.query.plan(principal, &sql).await?;
        let collected = self.query.first_rows(principal, planned, max_rows).await?;
        let table = rows_text(&collected.batches);
        let shown = if collected.truncated {
            format!("the first {} rows of a larger result", collected.rows)
        } else {
            format!("all {} rows", collected.rows)
        };
        let messages = [
            Message::new(
                "system",
                "You answer questions about data in one to three sentences, using only the rows given. \
                 If the rows do not answer the question, say so. Do not invent values.",
            ),
            Message::new(
                "user",
                format!("Question: {question}\n\nQuery:\n{sql}\n\nResult ({shown}):\n{table}"),
            ),
        ];
        let completion = provider.chat(&messages, None).await?;
        Ok(NlAnswer {
            answer: completion.content.trim().to_string(),
            question,
            sql,
            generation_id,
            rows: rows_json(&collected.batches)?,
            truncated: collected.truncated,
            tokens: completion.usage,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            provider: provider.name().to_string(),
            model: provider.model().to_string(),
        })
    }
}

/// Rows as an aligned text table, for the model.
fn rows_text(batches: &[RecordBatch]) -> String {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return "(no rows)".into();
    }
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .map(|table| table.to_string())
        .unwrap_or_else(|e| format!("(rows could not be shown: {e})"))
}

/// Rows as JSON objects, for the caller.
pub(super) fn rows_json(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, NlError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| NlError::BadRequest(format!("rows cannot be shown as JSON: {e}")))?;
    }
    writer
        .finish()
        .map_err(|e| NlError::BadRequest(format!("rows cannot be shown as JSON: {e}")))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| NlError::BadRequest(format!("rows cannot be shown as JSON: {e}")))
}

//! `nl.evaluate`: the golden set as a test set. Each golden question is
//! answered by `nl.sql` with its own pair held out of the context; the
//! rows of the generated SQL are compared with the rows of the golden SQL
//! (execution accuracy: the same multiset of rows, or the same sequence
//! when the golden SQL orders its result). Both run as the caller, so the
//! evaluation measures what the caller would get. Runs as a job.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::records::Status;
use super::{NlError, NlService};
use crate::context::SearchRequest;
use crate::jobs::{JobKind, Running, ToolJob};
use crate::llm::Usage;
use crate::principal::Principal;

/// Rows of each result compared; results beyond it count as not equal.
const COMPARED_ROWS: usize = 10_000;

/// The body of `nl.evaluate`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The provider to evaluate (default: the default one).
    #[serde(default)]
    pub provider: Option<String>,
    /// Golden pairs to use (default: every one the caller may see).
    #[serde(default)]
    pub golden_ids: Option<Vec<String>>,
    /// Answer when the evaluation has ended.
    #[serde(default)]
    pub wait: bool,
}

/// The outcome for one golden question.
#[derive(Debug, Serialize)]
struct Outcome {
    golden_id: String,
    question: String,
    golden_sql: String,
    generation_id: Option<String>,
    sql: Option<String>,
    status: Option<Status>,
    correct: bool,
    error: Option<String>,
    attempts: usize,
    tokens: u64,
    latency_ms: u64,
}

impl NlService {
    /// Starts `nl.evaluate` as a job.
    pub async fn evaluate(
        self: &Arc<Self>,
        principal: &Principal,
        request: EvaluateRequest,
    ) -> Result<ToolJob, NlError> {
        let provider = self.llm.provider(request.provider.as_deref())?;
        let golden = self.chosen_golden(principal, request.golden_ids.as_ref())?;
        let recorded = json!({
            "provider": provider.name(),
            "model": provider.model(),
            "golden_ids": golden.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
        });
        let service = Arc::clone(self);
        let owner = principal.clone();
        let provider_name = provider.name().to_string();
        let work = move |running: Running| async move {
            let mut outcomes = Vec::with_capacity(golden.len());
            let mut tokens = Usage::default();
            for pair in &golden {
                if running.cancel.is_cancelled() {
                    return Err("cancelled".to_string());
                }
                let (outcome, usage) = service
                    .evaluate_one(&owner, &provider_name, &pair.id, &pair.question, &pair.sql)
                    .await
                    .map_err(|e| e.to_string())?;
                tokens += usage;
                outcomes.push(outcome);
                running.progress.rows.fetch_add(1, Ordering::Release);
            }
            let correct = outcomes.iter().filter(|o| o.correct).count();
            let total = outcomes.len();
            Ok(json!({
                "provider": provider_name,
                "model": service.llm.provider(Some(&provider_name)).map(|p| p.model().to_string()).unwrap_or_default(),
                "total": total,
                "correct": correct,
                "accuracy": ((correct as f64 / total as f64) * 1000.0).round() / 1000.0,
                "attempts": outcomes.iter().map(|o| o.attempts).sum::<usize>(),
                "tokens": tokens,
                "questions": outcomes,
            }))
        };
        Ok(self
            .jobs
            .run(principal, JobKind::Evaluate, recorded, request.wait, work)
            .await?)
    }

    /// Generates SQL for one golden question (its pair held out) and
    /// compares results. Provider failures end the evaluation; a wrong or
    /// failing query is an incorrect answer.
    async fn evaluate_one(
        self: &Arc<Self>,
        principal: &Principal,
        provider: &str,
        golden_id: &str,
        question: &str,
        golden_sql: &str,
    ) -> Result<(Outcome, Usage), NlError> {
        let search = SearchRequest {
            question: question.to_string(),
            k: None,
            exclude_golden: BTreeSet::from([golden_id.to_string()]),
        };
        let generation = match self
            .generate(principal, search, Some(provider), None, false)
            .await
        {
            Ok(generation) => generation,
            // A query the caller's limits or deadline stopped is a wrong
            // answer, not a broken evaluation; a failing provider is.
            Err(NlError::Query(error)) => {
                let outcome = Outcome {
                    golden_id: golden_id.to_string(),
                    question: question.to_string(),
                    golden_sql: golden_sql.to_string(),
                    generation_id: None,
                    sql: None,
                    status: None,
                    correct: false,
                    error: Some(error.to_string()),
                    attempts: 0,
                    tokens: 0,
                    latency_ms: 0,
                };
                return Ok((outcome, Usage::default()));
            }
            Err(other) => return Err(other),
        };
        let mut outcome = Outcome {
            golden_id: golden_id.to_string(),
            question: question.to_string(),
            golden_sql: golden_sql.to_string(),
            generation_id: Some(generation.id.clone()),
            sql: generation.sql.clone(),
            status: Some(generation.status),
            correct: false,
            error: generation.error.clone(),
            attempts: generation.attempts.len(),
            tokens: generation.tokens.total_tokens,
            latency_ms: generation.latency_ms,
        };
        if let (Status::Valid, Some(sql)) = (generation.status, &generation.sql) {
            match self.same_result(principal, golden_sql, sql).await {
                Ok(true) => outcome.correct = true,
                Ok(false) => {
                    outcome.error = Some("the result differs from the golden SQL's".into())
                }
                Err(e) => outcome.error = Some(e.to_string()),
            }
        }
        Ok((outcome, generation.tokens))
    }

    /// Whether two queries give the same rows (in order, when the golden
    /// one orders them).
    async fn same_result(
        &self,
        principal: &Principal,
        golden_sql: &str,
        sql: &str,
    ) -> Result<bool, NlError> {
        let golden = self.query.plan(principal, golden_sql).await?;
        let ordered = golden.is_ordered();
        let expected = self
            .query
            .first_rows(principal, golden, COMPARED_ROWS)
            .await?;
        let planned = self.query.plan(principal, sql).await?;
        let actual = self
            .query
            .first_rows(principal, planned, COMPARED_ROWS)
            .await?;
        if expected.truncated || actual.truncated {
            return Ok(false);
        }
        if expected.schema.fields().len() != actual.schema.fields().len() {
            return Ok(false);
        }
        let mut expected = canonical_rows(&expected.batches)?;
        let mut actual = canonical_rows(&actual.batches)?;
        if !ordered {
            expected.sort();
            actual.sort();
        }
        Ok(expected == actual)
    }
}

/// Rows as comparable text. Numbers compare by value whatever their type:
/// integral values (integers, `3.00`, `3.0`) exactly as integers, others
/// to 12 significant digits (so a DECIMAL and a DOUBLE holding the same
/// amount agree, and distinct ids never do). Other values as Arrow
/// displays them.
fn canonical_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, NlError> {
    let bad = |e: datafusion::arrow::error::ArrowError| {
        NlError::BadRequest(format!("results cannot be compared: {e}"))
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<(ArrayFormatter<'_>, bool)> = batch
            .columns()
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(c.as_ref(), &options)
                    .map(|f| (f, c.data_type().is_numeric()))
            })
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|(formatter, numeric)| {
                        let text = formatter.value(row).to_string();
                        if *numeric { number_text(text) } else { text }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn number_text(text: String) -> String {
    let integral = |t: &str| {
        let digits = t.strip_prefix('-').unwrap_or(t);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    if integral(&text) {
        return text;
    }
    // `3.00` and `3.0`: integral, written as the integer.
    if let Some((whole, fraction)) = text.split_once('.')
        && integral(whole)
        && fraction.bytes().all(|b| b == b'0')
    {
        return if whole == "-0" {
            "0".into()
        } else {
            whole.to_string()
        };
    }
    match text.parse::<f64>() {
        Ok(0.0) => "0".into(),
        Ok(value) if value.is_finite() => format!("{value:.11e}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn numbers_compare_across_types() {
        let ints = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(3), None])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let decimals = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("total", DataType::Decimal128(12, 2), true),
                Field::new("label", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(
                    Decimal128Array::from(vec![Some(300), None])
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        assert_eq!(
            canonical_rows(&[ints]).unwrap(),
            canonical_rows(&[decimals]).unwrap()
        );
        let third = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("f", DataType::Float64, false)])),
            vec![Arc::new(Float64Array::from(vec![1.0 / 3.0]))],
        )
        .unwrap();
        assert_eq!(canonical_rows(&[third]).unwrap()[0][0], "3.33333333333e-1");
        // Distinct big integers stay distinct; a decimal and a double with
        // the same amount agree.
        assert_ne!(
            number_text("1234567890".into()),
            number_text("1234567891".into())
        );
        assert_eq!(number_text("12.50".into()), number_text("12.5".into()));
        assert_eq!(number_text("-0.0".into()), "0");
    }
}

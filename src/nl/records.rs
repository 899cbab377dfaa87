//! Durable prompts and generations (`nl.prompts`, `nl.generations`), each
//! visible to the principal that made it and to admins.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{NlError, NlService};
use crate::llm::{Message, Usage};
use crate::meta::{Collection, Expect, Labels, ListQuery};
use crate::principal::{Owner, Principal};

/// What was sent to a model for one `nl.sql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Its id.
    pub id: String,
    /// The question.
    pub question: String,
    /// Provider name.
    pub provider: String,
    /// Model asked.
    pub model: String,
    /// The conversation, retries included.
    pub messages: Vec<Message>,
    /// The tables of the context, best first.
    pub context_tables: Vec<String>,
    /// Who asked.
    pub owner: Owner,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Whether a generation's SQL can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It plans under the caller's policy and runs.
    Valid,
    /// No usable query came out of the attempts.
    Invalid,
}

/// One model answer and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The query taken from the answer, if any.
    pub sql: Option<String>,
    /// Why it was not accepted.
    pub error: Option<String>,
}

/// The checks behind a generation's confidence; none needs a model but
/// `model_agrees`, asked for with `"self_check": true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checks {
    /// It plans under the caller's policy.
    pub plans: bool,
    /// It ran without error.
    pub runs: bool,
    /// It returned at least one row.
    pub returns_rows: bool,
    /// Every table it reads was in the ranked context.
    pub uses_ranked_tables: bool,
    /// It reads the same tables as the most similar golden SQL (none when
    /// no golden SQL was similar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches_golden: Option<bool>,
    /// The model, asked whether the query answers the question, said yes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_agrees: Option<bool>,
}

impl Checks {
    /// A score in [0, 1]: the weighted share of checks passed.
    pub fn confidence(&self) -> f64 {
        let mut weighted = vec![
            (0.35, self.plans),
            (0.25, self.runs),
            (0.15, self.returns_rows),
            (0.15, self.uses_ranked_tables),
        ];
        weighted.extend(self.matches_golden.map(|ok| (0.10, ok)));
        weighted.extend(self.model_agrees.map(|ok| (0.10, ok)));
        let total: f64 = weighted.iter().map(|(w, _)| w).sum();
        let passed: f64 = weighted.iter().filter(|(_, ok)| *ok).map(|(w, _)| w).sum();
        ((passed / total) * 100.0).round() / 100.0
    }
}

/// An `nl.sql` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Its id (for `nl.answer`).
    pub id: String,
    /// The prompt it answered.
    pub prompt_id: String,
    /// The question.
    pub question: String,
    /// The accepted query (the last one tried when invalid).
    pub sql: Option<String>,
    /// `valid` or `invalid`.
    pub status: Status,
    /// Why it is invalid.
    pub error: Option<String>,
    /// Each model answer in order.
    pub attempts: Vec<Attempt>,
    /// Tokens of all model calls.
    pub tokens: Usage,
    /// Wall time, model calls and checks.
    pub latency_ms: u64,
    /// From the checks, in [0, 1].
    pub confidence: f64,
    /// The checks.
    pub checks: Checks,
    /// Tables the query reads.
    pub tables: Vec<String>,
    /// Provider name.
    pub provider: String,
    /// Model asked.
    pub model: String,
    /// Who asked.
    pub owner: Owner,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// `nl.prompts` and `nl.generations`: one by id, or a page.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// One record.
    #[serde(default)]
    pub id: Option<String>,
    /// Page size (default 50, at most 500).
    #[serde(default)]
    pub limit: Option<usize>,
    /// From the previous page's `next_page_token`.
    #[serde(default)]
    pub page_token: Option<String>,
    /// Newest first (default: oldest first).
    #[serde(default)]
    pub newest_first: bool,
}

/// A page of records.
#[derive(Debug, Serialize)]
pub struct RecordPage<T> {
    /// Oldest first, or newest first when asked.
    pub items: Vec<T>,
    /// The next page, when this one is full.
    pub next_page_token: Option<String>,
}

/// A key that sorts by time: `prefix-<millis>-<uuid>`.
pub(super) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:013}-{}",
        Utc::now().timestamp_millis(),
        uuid::Uuid::new_v4().simple()
    )
}

fn labels(owner: &Owner) -> Labels {
    Labels::from([("owner", owner.label())])
}

impl NlService {
    pub(super) async fn store_prompt(&self, prompt: &PromptRecord) -> Result<(), NlError> {
        self.meta
            .put_if(
                Collection::NlPrompts,
                &prompt.id,
                prompt,
                labels(&prompt.owner),
                Expect::Any,
            )
            .await?;
        Ok(())
    }

    pub(super) async fn store_generation(&self, generation: &Generation) -> Result<(), NlError> {
        self.meta
            .put_if(
                Collection::NlGenerations,
                &generation.id,
                generation,
                labels(&generation.owner),
                Expect::Absent,
            )
            .await?;
        Ok(())
    }

    /// One generation the caller may see.
    pub async fn generation(&self, principal: &Principal, id: &str) -> Result<Generation, NlError> {
        self.meta
            .get::<Generation>(Collection::NlGenerations, id)
            .await?
            .filter(|g| principal.is_admin() || g.owner.is(principal))
            .ok_or_else(|| {
                NlError::NotFound(format!(
                    "no generation '{id}' (it does not exist or is not yours)"
                ))
            })
    }

    /// `nl.generations`.
    pub async fn generations(
        &self,
        principal: &Principal,
        query: RecordQuery,
    ) -> Result<RecordPage<Generation>, NlError> {
        if let Some(id) = &query.id {
            return Ok(RecordPage {
                items: vec![self.generation(principal, id).await?],
                next_page_token: None,
            });
        }
        self.page(Collection::NlGenerations, principal, query).await
    }

    /// `nl.prompts`.
    pub async fn prompts(
        &self,
        principal: &Principal,
        query: RecordQuery,
    ) -> Result<RecordPage<PromptRecord>, NlError> {
        if let Some(id) = &query.id {
            let prompt = self
                .meta
                .get::<PromptRecord>(Collection::NlPrompts, id)
                .await?
                .filter(|p| principal.is_admin() || p.owner.is(principal))
                .ok_or_else(|| {
                    NlError::NotFound(format!(
                        "no prompt '{id}' (it does not exist or is not yours)"
                    ))
                })?;
            return Ok(RecordPage {
                items: vec![prompt],
                next_page_token: None,
            });
        }
        self.page(Collection::NlPrompts, principal, query).await
    }

    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        collection: Collection,
        principal: &Principal,
        query: RecordQuery,
    ) -> Result<RecordPage<T>, NlError> {
        let limit = query.limit.unwrap_or(50);
        if limit == 0 || limit > 500 {
            return Err(NlError::BadRequest(
                "limit must be between 1 and 500".into(),
            ));
        }
        let mut list = ListQuery {
            after: query.page_token,
            limit: Some(limit),
            descending: query.newest_first,
            ..ListQuery::default()
        };
        if !principal.is_admin() {
            list = list.label("owner", Owner::of(principal).label());
        }
        let page = self.meta.page::<T>(collection, &list).await?;
        Ok(RecordPage {
            items: page.items.into_iter().map(|v| v.value).collect(),
            next_page_token: page.next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_weighs_the_checks_that_apply() {
        let all = Checks {
            plans: true,
            runs: true,
            returns_rows: true,
            uses_ranked_tables: true,
            matches_golden: None,
            model_agrees: None,
        };
        assert_eq!(all.confidence(), 1.0);
        let no_rows = Checks {
            returns_rows: false,
            ..all.clone()
        };
        assert_eq!(no_rows.confidence(), 0.83);
        let golden_disagrees = Checks {
            matches_golden: Some(false),
            ..all
        };
        assert_eq!(golden_disagrees.confidence(), 0.9);
        assert_eq!(Checks::default().confidence(), 0.0);
    }
}

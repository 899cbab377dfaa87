//! `nl.sql`: a question in, one checked query out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Deserialize;

use super::extract::{NoSql, extract_sql};
use super::records::{Attempt, Checks, Generation, PromptRecord, Status, new_id};
use super::{NlError, NlService, check_question, prompt};
use crate::context::{SearchAnswer, SearchRequest};
use crate::llm::{LlmError, Message, Provider, Usage};
use crate::principal::{Owner, Principal};
use crate::query::{Collected, QueryError};

/// Rows a generated query is run for, to check that it runs and returns rows.
pub(super) const CHECK_ROWS: usize = 10;

/// The body of `nl.sql`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// The question, in words.
    pub question: String,
    /// The provider to ask (default: `llm.default_provider`).
    #[serde(default)]
    pub provider: Option<String>,
    /// A model other than the provider's (a fine-tuned one, say).
    #[serde(default)]
    pub model: Option<String>,
    /// Also ask the model whether its query answers the question.
    #[serde(default)]
    pub self_check: bool,
    /// Tables and golden pairs in the context (default 5).
    #[serde(default)]
    pub k: Option<usize>,
}

/// A query the checks accepted, with what running it showed.
struct Accepted {
    sql: String,
    collected: Collected,
}

impl NlService {
    /// `nl.sql`.
    pub async fn sql(
        self: &Arc<Self>,
        principal: &Principal,
        request: SqlRequest,
    ) -> Result<Generation, NlError> {
        let search = SearchRequest {
            question: request.question,
            k: request.k,
            exclude_golden: BTreeSet::new(),
        };
        self.generate(
            principal,
            search,
            request.provider.as_deref(),
            request.model.as_deref(),
            request.self_check,
        )
        .await
    }

    /// Generates SQL for `search.question` from the context `search` finds
    /// (golden pairs it excludes stay out), checks it as `principal` and
    /// stores the prompt and the generation.
    pub(super) async fn generate(
        self: &Arc<Self>,
        principal: &Principal,
        search: SearchRequest,
        provider: Option<&str>,
        model: Option<&str>,
        self_check: bool,
    ) -> Result<Generation, NlError> {
        let started = Instant::now();
        let question = check_question(&search.question)?.to_string();
        let provider = self.llm.provider(provider)?;
        if let Some(model) = model
            && model != provider.model()
            && !self
                .may_use_model(principal, provider.name(), model)
                .await?
        {
            return Err(NlError::BadRequest(format!(
                "model '{model}' is neither {}'s model nor a fine-tuned model of yours (finetune.list)",
                provider.name()
            )));
        }
        let model_name = model.unwrap_or(provider.model()).to_string();
        let settings = self.llm.settings();
        let deadline = started + settings.generation_timeout;
        let context = self.context.search(principal, &search).await?;
        let mut messages = prompt::messages(&question, &context);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut tokens = Usage::default();
        let mut accepted: Option<Accepted> = None;
        let mut plans = false;
        let mut error: Option<String> = None;
        for _ in 0..settings.max_attempts.max(1) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                error = Some(format!(
                    "no valid query within llm.generation_timeout ({} s)",
                    settings.generation_timeout.as_secs()
                ));
                break;
            }
            let completion = tokio::time::timeout(remaining, provider.chat(&messages, model))
                .await
                .map_err(|_| LlmError::Timeout {
                    provider: provider.name().to_string(),
                    seconds: settings.generation_timeout.as_secs(),
                })??;
            tokens += completion.usage;
            messages.push(Message::new("assistant", completion.content.clone()));
            let sql = match extract_sql(&completion.content) {
                Ok(sql) => sql,
                Err(NoSql::Declined(reason)) => {
                    attempts.push(Attempt {
                        sql: None,
                        error: Some(reason.clone()),
                    });
                    error = Some(format!("the model could not answer: {reason}"));
                    break;
                }
                Err(NoSql::Unusable(reason)) => {
                    attempts.push(Attempt {
                        sql: None,
                        error: Some(reason.clone()),
                    });
                    messages.push(prompt::feedback(&reason));
                    error = Some(reason);
                    continue;
                }
            };
            match self.check(principal, &sql).await {
                Ok(collected) => {
                    plans = true;
                    attempts.push(Attempt {
                        sql: Some(sql.clone()),
                        error: None,
                    });
                    accepted = Some(Accepted { sql, collected });
                    error = None;
                    break;
                }
                Err(failure) => {
                    let message = failure.error.to_string();
                    if failure.fatal() {
                        return Err(failure.error.into());
                    }
                    plans = plans || failure.planned;
                    attempts.push(Attempt {
                        sql: Some(sql),
                        error: Some(message.clone()),
                    });
                    messages.push(prompt::feedback(&message));
                    error = Some(message);
                }
            }
        }
        // The last message is feedback nobody answered when attempts ran out.
        if accepted.is_none() && messages.last().is_some_and(|m| m.role == "user") {
            messages.pop();
        }
        let mut checks = Checks::default();
        let mut tables = Vec::new();
        if let Some(accepted) = &accepted {
            checks = self.checks(principal, &context, accepted).await;
            if self_check {
                let (agrees, usage) = self
                    .self_check(&provider, model, &question, &accepted.sql)
                    .await?;
                checks.model_agrees = Some(agrees);
                tokens += usage;
            }
            tables = accepted
                .collected
                .tables
                .iter()
                .map(ToString::to_string)
                .collect();
        } else {
            checks.plans = plans;
        }
        let owner = Owner::of(principal);
        let prompt = PromptRecord {
            id: new_id("prompt"),
            question: question.clone(),
            provider: provider.name().to_string(),
            model: model_name.clone(),
            messages,
            context_tables: context.tables.iter().map(|t| t.table.clone()).collect(),
            owner: owner.clone(),
            created_at: Utc::now(),
        };
        self.store_prompt(&prompt).await?;
        let generation = Generation {
            id: new_id("gen"),
            prompt_id: prompt.id,
            question,
            sql: accepted
                .as_ref()
                .map(|a| a.sql.clone())
                .or_else(|| attempts.iter().rev().find_map(|a| a.sql.clone())),
            status: if accepted.is_some() {
                Status::Valid
            } else {
                Status::Invalid
            },
            error,
            attempts,
            tokens,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            confidence: checks.confidence(),
            checks,
            tables,
            provider: provider.name().to_string(),
            model: model_name.clone(),
            owner,
            created_at: Utc::now(),
        };
        self.store_generation(&generation).await?;
        tracing::info!(
            generation = %generation.id,
            status = ?generation.status,
            attempts = generation.attempts.len(),
            tokens = generation.tokens.total_tokens,
            "nl.sql"
        );
        Ok(generation)
    }

    /// Plans and runs `sql` as `principal`, for a few rows.
    async fn check(&self, principal: &Principal, sql: &str) -> Result<Collected, CheckFailure> {
        let planned = self
            .query
            .plan(principal, sql)
            .await
            .map_err(|error| CheckFailure {
                error,
                planned: false,
            })?;
        self.query
            .first_rows(principal, planned, CHECK_ROWS)
            .await
            .map_err(|error| CheckFailure {
                error,
                planned: true,
            })
    }

    /// The checks of an accepted query that need no model.
    async fn checks(
        &self,
        principal: &Principal,
        context: &SearchAnswer,
        accepted: &Accepted,
    ) -> Checks {
        let ranked: BTreeSet<&str> = context.tables.iter().map(|t| t.table.as_str()).collect();
        let read: BTreeSet<String> = accepted
            .collected
            .tables
            .iter()
            .map(ToString::to_string)
            .collect();
        let matches_golden = match context.golden_sql.first() {
            Some(golden) => match self.query.plan(principal, &golden.sql).await {
                Ok(planned) => {
                    let golden_tables: BTreeSet<String> = planned
                        .columns_by_table()
                        .into_keys()
                        .map(|t| t.to_string())
                        .collect();
                    Some(golden_tables == read)
                }
                Err(_) => None,
            },
            None => None,
        };
        Checks {
            plans: true,
            runs: true,
            returns_rows: accepted.collected.rows > 0,
            uses_ranked_tables: !read.is_empty()
                && read.iter().all(|t| ranked.contains(t.as_str())),
            matches_golden,
            model_agrees: None,
        }
    }

    /// Asks the model whether `sql` answers `question`.
    async fn self_check(
        &self,
        provider: &Provider,
        model: Option<&str>,
        question: &str,
        sql: &str,
    ) -> Result<(bool, Usage), NlError> {
        let messages = [
            Message::new("system", "You review SQL. Answer with one word: yes or no."),
            Message::new(
                "user",
                format!(
                    "Question: {question}\n```sql\n{sql}\n```\nDoes this query answer the question correctly?"
                ),
            ),
        ];
        let completion = provider.chat(&messages, model).await?;
        let verdict = completion
            .content
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("yes");
        Ok((verdict, completion.usage))
    }
}

/// Why a query was not accepted.
struct CheckFailure {
    error: QueryError,
    /// It planned; running it failed.
    planned: bool,
}

impl CheckFailure {
    /// Failures the model cannot fix by rewriting the query: the caller's
    /// limits, timeouts, cancellation, airlock bugs.
    fn fatal(&self) -> bool {
        matches!(
            self.error,
            QueryError::Overloaded(_)
                | QueryError::Timeout(_)
                | QueryError::Cancelled
                | QueryError::Internal(_)
        )
    }
}

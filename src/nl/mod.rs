//! Questions in words: `nl.sql` (question → SQL), `nl.answer` (rows →
//! a short answer), `nl.evaluate` (golden SQL as a test set) and
//! `finetune.*` (golden SQL as training data).
//!
//! ```text
//!  question ─► context.search (the caller's catalog only) ─► prompt
//!           ─► model ─► extract SQL ─► plan + run as the caller ─┬─► generation
//!                  ▲                                              │
//!                  └──── the error, while attempts and time last ─┘
//! ```
//!
//! The model sees only what [`crate::context`] gives the caller, and its
//! SQL runs through the same query path as typed SQL, under the caller's
//! policy and limits: a generated query can never do more than the caller
//! could by hand. Where things live: `prompt` (messages), `extract` (SQL
//! out of an answer), `generate` (`nl.sql`), `answer` (`nl.answer`),
//! `evaluate` (`nl.evaluate`), `finetune` (`finetune.*`), `records`
//! (durable prompts and generations).

mod answer;
mod evaluate;
pub mod extract;
pub mod finetune;
mod generate;
pub mod prompt;
mod records;

use std::sync::Arc;

pub use answer::{AnswerRequest, NlAnswer};
pub use evaluate::EvaluateRequest;
pub use finetune::{FinetuneExportRequest, FinetuneId, FinetuneRequest};
pub use generate::SqlRequest;
pub use records::{Attempt, Checks, Generation, PromptRecord, RecordPage, RecordQuery, Status};

use crate::context::records::GoldenSql;
use crate::context::{ContextError, ContextService};
use crate::jobs::{JobError, JobStore};
use crate::llm::{Llm, LlmError};
use crate::meta::{Meta, MetaError};
use crate::principal::Principal;
use crate::query::{QueryEngine, QueryError};
use crate::tools::artifacts::{ArtifactError, ArtifactService};

/// Longest question accepted, in characters.
const MAX_QUESTION: usize = 4_000;

/// Why an `nl.*` or `finetune.*` request failed.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The request is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// No such record, or not the caller's.
    #[error("{0}")]
    NotFound(String),
    /// The model provider failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// Building the context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// Running SQL failed in a way the model cannot fix (limits, timeouts).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Jobs.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Generation, answers, evaluation and fine-tuning.
#[derive(Debug)]
pub struct NlService {
    llm: Arc<Llm>,
    context: Arc<ContextService>,
    query: Arc<QueryEngine>,
    artifacts: Arc<ArtifactService>,
    jobs: Arc<JobStore>,
    meta: Meta,
}

impl NlService {
    /// The service; fine-tunes a stopped server was following are marked
    /// interrupted.
    pub async fn open(
        llm: Arc<Llm>,
        context: Arc<ContextService>,
        query: Arc<QueryEngine>,
        artifacts: Arc<ArtifactService>,
        jobs: Arc<JobStore>,
        meta: Meta,
    ) -> Result<Arc<Self>, NlError> {
        let service = Arc::new(Self {
            llm,
            context,
            query,
            artifacts,
            jobs,
            meta,
        });
        service.interrupt_finetunes().await?;
        Ok(service)
    }
}

impl NlService {
    /// Whether a default model is configured.
    pub fn configured(&self) -> bool {
        self.llm.provider(None).is_ok()
    }

    /// The golden pairs a request names, among those the caller may see.
    pub(super) fn chosen_golden(
        &self,
        principal: &Principal,
        ids: Option<&Vec<String>>,
    ) -> Result<Vec<GoldenSql>, NlError> {
        let mut golden = self.context.golden(principal);
        if let Some(ids) = ids {
            if let Some(missing) = ids.iter().find(|id| !golden.iter().any(|g| &g.id == *id)) {
                return Err(NlError::NotFound(format!(
                    "no golden SQL '{missing}' (it does not exist or you may not see it)"
                )));
            }
            golden.retain(|g| ids.contains(&g.id));
        }
        if golden.is_empty() {
            return Err(NlError::BadRequest(
                "there is no golden SQL you may see; add pairs with context.golden.add".into(),
            ));
        }
        Ok(golden)
    }
}

fn check_question(question: &str) -> Result<&str, NlError> {
    let question = question.trim();
    if question.is_empty() {
        return Err(NlError::BadRequest("question must not be empty".into()));
    }
    if question.chars().count() > MAX_QUESTION {
        return Err(NlError::BadRequest(format!(
            "question is longer than {MAX_QUESTION} characters"
        )));
    }
    Ok(question)
}

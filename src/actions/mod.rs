//! Flight actions: JSON in, JSON out.
//!
//! Each action is an [`Action`] variant with a name, a description (shown by
//! ListActions) and the permission it needs, checked in one exhaustive
//! match before its body is even parsed. [`Actions::run`] then hands the
//! body to the file of the action's family, which parses it into a typed
//! request (unknown fields are errors), calls the module that owns the
//! behaviour and answers with a typed `Serialize` response:
//!
//! ```text
//!  run ── permission ──┬─ tokens.rs   token.create/revoke/list, whoami      → auth
//!                      ├─ tables.rs   table.register/list/remove/status     → sync
//!                      ├─ sources.rs  sources.create/list/get/update/       → sync::connections
//!                      │              delete/test/list_tables
//!                      ├─ sync.rs     sync.start/status/jobs/cancel/schedule → sync
//!                      ├─ grants.rs   grant.set/get/list/delete, explain     → policy, query
//!                      ├─ artifacts.rs artifact.list/get/share/delete/extend → tools::artifacts
//!                      ├─ tools.rs    table.sample (answers with a query),   → tools::sample,
//!                      │              table.profile, query.shape,            → query
//!                      │              query.running, query.cancel
//!                      │              table.describe                         → context
//!                      ├─ jobs.rs     query.export, job.get/list/cancel      → tools::export, jobs, sync
//!                      ├─ context.rs  context.describe/instruction.*/        → context
//!                      │              golden.*/search/scan
//!                      └─ nl.rs       nl.sql/answer/evaluate/prompts/        → nl
//!                                     generations, finetune.*
//! ```
//!
//! This module and its files hold no business rules of their own.

mod artifacts;
mod catalog;
mod context;
mod descriptions;
mod grants;
mod jobs;
mod nl;
mod schemas;
mod sources;
mod sync;
mod tables;
mod tokens;
mod tools;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{AuthError, Authenticator};
use crate::context::{ContextError, ContextService};
use crate::jobs::{JobError, JobStore};
use crate::nl::{NlError, NlService};
use crate::policy::{GrantStore, PolicyError};
use crate::principal::Principal;
use crate::query::{QueryEngine, QueryError};
use crate::sync::{SyncError, SyncService};
use crate::tools::artifacts::{ArtifactError, ArtifactService};
use crate::tools::export::{ExportError, Exporter};
use crate::tools::sample::SampleError;

pub use catalog::{Action, Permission};

/// Action failures.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such action.
    #[error("unknown action '{0}'; ListActions shows the available ones")]
    Unknown(String),
    /// The body is not the JSON the action expects.
    #[error("invalid JSON body for {action}: {message}")]
    BadRequest {
        /// Action name.
        action: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Authentication or token rules.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Registration or sync.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Grants.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Planning for `explain`.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Artifacts.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Sampling.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// Exports.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Jobs.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Agent context.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// Questions in words and fine-tuning.
    #[error(transparent)]
    Nl(#[from] NlError),
    /// A response could not be turned into JSON: a bug in airlock.
    #[error("could not encode the response of {action} as JSON: {message}")]
    Internal {
        /// Action name.
        action: &'static str,
        /// What serde_json said.
        message: String,
    },
}

/// Runs actions.
#[derive(Debug)]
pub struct Actions {
    auth: Arc<Authenticator>,
    sync: Arc<SyncService>,
    query: Arc<QueryEngine>,
    grants: Arc<GrantStore>,
    artifacts: Arc<ArtifactService>,
    exporter: Arc<Exporter>,
    jobs: Arc<JobStore>,
    context: Arc<ContextService>,
    nl: Arc<NlService>,
}

/// The body of actions that take none: empty, or `{}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The services actions call.
#[derive(Debug)]
pub struct Services {
    /// Tokens and logins.
    pub auth: Arc<Authenticator>,
    /// Registrations, syncs and connections.
    pub sync: Arc<SyncService>,
    /// Planning and running queries.
    pub query: Arc<QueryEngine>,
    /// Grants.
    pub grants: Arc<GrantStore>,
    /// Artifacts.
    pub artifacts: Arc<ArtifactService>,
    /// Durable jobs.
    pub jobs: Arc<JobStore>,
    /// Agent context.
    pub context: Arc<ContextService>,
    /// Questions in words and fine-tuning.
    pub nl: Arc<NlService>,
}

impl Actions {
    /// Builds the action runner.
    pub fn new(services: Services) -> Self {
        let Services {
            auth,
            sync,
            query,
            grants,
            artifacts,
            jobs,
            context,
            nl,
        } = services;
        let exporter = Arc::new(Exporter::new(
            Arc::clone(&query),
            Arc::clone(&artifacts),
            Arc::clone(&jobs),
        ));
        Self {
            auth,
            sync,
            query,
            grants,
            artifacts,
            exporter,
            jobs,
            context,
            nl,
        }
    }

    /// Whether a language model is configured (for `nl.sql`, `nl.answer`).
    pub fn nl_configured(&self) -> bool {
        self.nl.configured()
    }

    /// Runs the action `name` for `principal` with a JSON `body`.
    pub async fn run(
        &self,
        principal: &Principal,
        name: &str,
        body: &[u8],
    ) -> Result<Answer, ActionError> {
        let action =
            Action::from_name(name).ok_or_else(|| ActionError::Unknown(name.to_string()))?;
        match action.permission() {
            Permission::Admin => principal
                .require_admin(action.name())
                .map_err(AuthError::from)?,
            Permission::Authenticated => {}
        }
        let json = match action {
            Action::TokenCreate => respond(action, self.token_create(principal, body).await?),
            Action::TokenRevoke => respond(action, self.token_revoke(principal, body).await?),
            Action::TokenList => respond(action, self.token_list(principal, body)?),
            Action::Whoami => respond(action, tokens::whoami(principal, body)?),
            Action::TableRegister => respond(action, self.table_register(principal, body).await?),
            Action::TableList => respond(action, self.table_list(principal, body).await?),
            Action::TableRemove => respond(action, self.table_remove(body).await?),
            Action::SyncStart => respond(action, self.sync_start(body).await?),
            Action::SyncStatus => respond(action, self.sync_status(body).await?),
            Action::SyncJobs => respond(action, self.sync_jobs(body).await?),
            Action::SyncCancel => respond(action, self.sync_cancel(body).await?),
            Action::SyncSchedule => respond(action, self.sync_schedule(body).await?),
            Action::SyncWaitEpoch => respond(action, self.sync_wait_epoch(body).await?),
            Action::TableStatus => respond(action, self.table_status(body).await?),
            Action::SourcesListTables => respond(action, self.sources_list_tables(body).await?),
            Action::SourcesCreate => respond(action, self.sources_create(principal, body).await?),
            Action::SourcesList => respond(action, self.sources_list(body).await?),
            Action::SourcesGet => respond(action, self.sources_get(body).await?),
            Action::SourcesUpdate => respond(action, self.sources_update(body).await?),
            Action::SourcesDelete => respond(action, self.sources_delete(body).await?),
            Action::SourcesTest => respond(action, self.sources_test(body).await?),
            Action::GrantSet => respond(action, self.grant_set(body).await?),
            Action::GrantGet => respond(action, self.grant_get(body)?),
            Action::GrantList => respond(action, self.grant_list(body)?),
            Action::GrantDelete => respond(action, self.grant_delete(body).await?),
            Action::Explain => respond(action, self.explain(principal, body).await?),
            Action::ArtifactList => respond(action, self.artifact_list(principal, body)?),
            Action::ArtifactGet => respond(action, self.artifact_get(principal, body)?),
            Action::ArtifactShare => respond(action, self.artifact_share(principal, body).await?),
            Action::ArtifactDelete => respond(action, self.artifact_delete(principal, body).await?),
            Action::ArtifactExtend => respond(action, self.artifact_extend(principal, body).await?),
            Action::TableProfile => respond(action, self.table_profile(principal, body).await?),
            Action::TableDescribe => respond(action, self.table_describe(principal, body).await?),
            Action::QueryShape => respond(action, self.query_shape(principal, body).await?),
            Action::QueryRunning => respond(action, self.query_running(principal, body)?),
            Action::QueryCancel => respond(action, self.query_cancel(principal, body)?),
            Action::QueryExport => respond(action, self.query_export(principal, body).await?),
            Action::JobGet => respond(action, self.job_get(principal, body).await?),
            Action::JobList => respond(action, self.job_list(principal, body).await?),
            Action::JobCancel => respond(action, self.job_cancel(principal, body).await?),
            Action::ContextDescribe => {
                respond(action, self.context_describe(principal, body).await?)
            }
            Action::ContextInstructionAdd => {
                respond(action, self.context_instruction_add(principal, body).await?)
            }
            Action::ContextInstructionList => {
                respond(action, self.context_instruction_list(principal, body)?)
            }
            Action::ContextInstructionUpdate => respond(
                action,
                self.context_instruction_update(principal, body).await?,
            ),
            Action::ContextInstructionDelete => {
                respond(action, self.context_instruction_delete(body).await?)
            }
            Action::ContextGoldenAdd => {
                respond(action, self.context_golden_add(principal, body).await?)
            }
            Action::ContextGoldenList => {
                respond(action, self.context_golden_list(principal, body)?)
            }
            Action::ContextGoldenDelete => {
                respond(action, self.context_golden_delete(principal, body).await?)
            }
            Action::ContextSearch => respond(action, self.context_search(principal, body).await?),
            Action::ContextScan => respond(action, self.context_scan(principal, body).await?),
            Action::NlSql => respond(action, self.nl_sql(principal, body).await?),
            Action::NlAnswer => respond(action, self.nl_answer(principal, body).await?),
            Action::NlEvaluate => respond(action, self.nl_evaluate(principal, body).await?),
            Action::NlPrompts => respond(action, self.nl_prompts(principal, body).await?),
            Action::NlGenerations => respond(action, self.nl_generations(principal, body).await?),
            Action::FinetuneExport => respond(action, self.finetune_export(principal, body).await?),
            Action::FinetuneCreate => respond(action, self.finetune_create(principal, body).await?),
            Action::FinetuneGet => respond(action, self.finetune_get(principal, body).await?),
            Action::FinetuneList => respond(action, self.finetune_list(principal, body).await?),
            Action::FinetuneCancel => respond(action, self.finetune_cancel(principal, body).await?),
            Action::FinetuneDelete => respond(action, self.finetune_delete(principal, body).await?),
            Action::TableSample => {
                let (sql, plan) = self.table_sample(principal, body)?;
                return Ok(Answer::Query {
                    sql,
                    answer: respond(action, plan)?,
                });
            }
        }?;
        Ok(Answer::Json(json))
    }
}

/// What an action answers: JSON, or JSON about a query whose rows the
/// caller fetches as it fetches any query's (Flight: a ticket for DoGet).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The whole answer.
    Json(Value),
    /// A query to run as the caller, and what to say about it.
    Query {
        /// The SQL, generated by airlock and run through the caller's policy.
        sql: String,
        /// The rest of the answer.
        answer: Value,
    },
}

/// Parses an action's body; an empty body reads as `{}`.
fn parse<T: DeserializeOwned>(action: Action, body: &[u8]) -> Result<T, ActionError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // serde would read a struct from an array of its fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ActionError::BadRequest {
            action: action.name(),
            message: "the body must be a JSON object".into(),
        });
    }
    serde_json::from_slice(body).map_err(|e| ActionError::BadRequest {
        action: action.name(),
        message: e.to_string(),
    })
}

/// Turns a typed response into the JSON the wire carries.
fn respond(action: Action, response: impl Serialize) -> Result<Value, ActionError> {
    serde_json::to_value(response).map_err(|e| ActionError::Internal {
        action: action.name(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::tokens::IdRequest;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names = std::collections::HashSet::new();
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.name()), Some(action));
            assert!(names.insert(action.name()));
            assert!(!action.description().is_empty());
        }
        assert_eq!(Action::from_name("nope"), None);
    }

    #[test]
    fn bodies_are_strict() {
        assert!(parse::<Empty>(Action::Whoami, b"").is_ok());
        assert!(parse::<Empty>(Action::Whoami, b"  ").is_ok());
        let err = parse::<IdRequest>(Action::TokenRevoke, b"{\"id\": 1}").unwrap_err();
        assert!(err.to_string().contains("token.revoke"), "{err}");
        let err =
            parse::<IdRequest>(Action::TokenRevoke, b"{\"id\": \"x\", \"extra\": 1}").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        assert!(parse::<IdRequest>(Action::TokenRevoke, b"{not json").is_err());
        let err = parse::<IdRequest>(Action::TokenRevoke, b" [\"x\"]").unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"), "{err}");
    }
}

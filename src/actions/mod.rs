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
//!                      ├─ tables.rs   table.register/list/remove/status,    → sync
//!                      │              sources.list_tables
//!                      ├─ sync.rs     sync.start/status/jobs/cancel/schedule → sync
//!                      ├─ grants.rs   grant.set/get/list/delete, explain     → policy, query
//!                      ├─ artifacts.rs artifact.list/get/share/delete/extend → tools::artifacts
//!                      ├─ tools.rs    table.sample (answers with a query),   → tools::sample,
//!                      │              table.profile                          → query
//!                      └─ jobs.rs     query.export, job.get/list/cancel      → tools::export, jobs, sync
//! ```
//!
//! This module and its files hold no business rules of their own.

mod artifacts;
mod grants;
mod jobs;
mod sync;
mod tables;
mod tokens;
mod tools;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{AuthError, Authenticator};
use crate::policy::{GrantStore, PolicyError};
use crate::principal::Principal;
use crate::query::{QueryEngine, QueryError};
use crate::sync::{SyncError, SyncService};
use crate::tools::artifacts::{ArtifactError, ArtifactService};
use crate::tools::export::{ExportError, Exporter};
use crate::tools::jobs::{JobError, JobStore};
use crate::tools::sample::SampleError;

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
    /// A response could not be turned into JSON: a bug in airlock.
    #[error("could not encode the response of {action} as JSON: {message}")]
    Internal {
        /// Action name.
        action: &'static str,
        /// What serde_json said.
        message: String,
    },
}

/// Who may call an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Admins only.
    Admin,
    /// Any authenticated principal (the handler may narrow further).
    Authenticated,
}

/// Every action airlock offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Mint a swarm or agent token.
    TokenCreate,
    /// Revoke a token (and the tokens it created).
    TokenRevoke,
    /// List tokens.
    TokenList,
    /// Describe the caller.
    Whoami,
    /// Register a table.
    TableRegister,
    /// List tables.
    TableList,
    /// Unregister a table and drop its replica.
    TableRemove,
    /// Start a sync.
    SyncStart,
    /// Job status.
    SyncStatus,
    /// List jobs.
    SyncJobs,
    /// Cancel a job.
    SyncCancel,
    /// Set or clear a table's schedule.
    SyncSchedule,
    /// Freshness and size of a table.
    TableStatus,
    /// List the tables of a Snowflake schema.
    SourcesListTables,
    /// Create or replace a grant.
    GrantSet,
    /// Read a grant.
    GrantGet,
    /// List grants.
    GrantList,
    /// Delete a grant.
    GrantDelete,
    /// Show the plan of a query as a principal would run it.
    Explain,
    /// List the artifacts the caller may read.
    ArtifactList,
    /// An artifact's metadata and a download ticket.
    ArtifactGet,
    /// Change who may read an artifact.
    ArtifactShare,
    /// Delete an artifact and all its versions.
    ArtifactDelete,
    /// Move an artifact's expiry.
    ArtifactExtend,
    /// A sample of a table's rows, as a query to run.
    TableSample,
    /// Column statistics of a table.
    TableProfile,
    /// Write a query's result as an artifact (a durable job).
    QueryExport,
    /// A job's state and progress.
    JobGet,
    /// List jobs.
    JobList,
    /// Cancel a job.
    JobCancel,
}

impl Action {
    /// All actions, in ListActions order.
    pub const ALL: [Action; 30] = [
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::TokenList,
        Action::Whoami,
        Action::TableRegister,
        Action::TableList,
        Action::TableRemove,
        Action::SyncStart,
        Action::SyncStatus,
        Action::SyncJobs,
        Action::SyncCancel,
        Action::SyncSchedule,
        Action::TableStatus,
        Action::SourcesListTables,
        Action::GrantSet,
        Action::GrantGet,
        Action::GrantList,
        Action::GrantDelete,
        Action::Explain,
        Action::ArtifactList,
        Action::ArtifactGet,
        Action::ArtifactShare,
        Action::ArtifactDelete,
        Action::ArtifactExtend,
        Action::TableSample,
        Action::TableProfile,
        Action::QueryExport,
        Action::JobGet,
        Action::JobList,
        Action::JobCancel,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::TokenList => "token.list",
            Action::Whoami => "whoami",
            Action::TableRegister => "table.register",
            Action::TableList => "table.list",
            Action::TableRemove => "table.remove",
            Action::SyncStart => "sync.start",
            Action::SyncStatus => "sync.status",
            Action::SyncJobs => "sync.jobs",
            Action::SyncCancel => "sync.cancel",
            Action::SyncSchedule => "sync.schedule",
            Action::TableStatus => "table.status",
            Action::SourcesListTables => "sources.list_tables",
            Action::GrantSet => "grant.set",
            Action::GrantGet => "grant.get",
            Action::GrantList => "grant.list",
            Action::GrantDelete => "grant.delete",
            Action::Explain => "explain",
            Action::ArtifactList => "artifact.list",
            Action::ArtifactGet => "artifact.get",
            Action::ArtifactShare => "artifact.share",
            Action::ArtifactDelete => "artifact.delete",
            Action::ArtifactExtend => "artifact.extend",
            Action::TableSample => "table.sample",
            Action::TableProfile => "table.profile",
            Action::QueryExport => "query.export",
            Action::JobGet => "job.get",
            Action::JobList => "job.list",
            Action::JobCancel => "job.cancel",
        }
    }

    /// Looks an action up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// What ListActions says about it.
    pub fn description(self) -> &'static str {
        match self {
            Action::TokenCreate => {
                "Mint a token. Body: {\"kind\":\"swarm\",\"name\":\"emea\",\"ttl_seconds\":86400} (admin) or \
                 {\"kind\":\"agent\",\"name\":\"a1\",\"attributes\":{\"region\":\"EU\"}} (admin with \"swarm\", or a swarm token for its own swarm). \
                 Returns {\"id\",\"token\",\"expires_at\"}; the token is shown only once."
            }
            Action::TokenRevoke => {
                "Revoke a token and every token it created. Body: {\"id\":\"…\"}. Admins revoke any token, a swarm its agents."
            }
            Action::TokenList => {
                "List the tokens you may manage (never their secrets). Body: empty or {}."
            }
            Action::Whoami => {
                "Describe the calling principal: kind, name, swarm, token id, expiry. Body: empty."
            }
            Action::TableRegister => {
                "Register a table (admin). Body: {\"name\":\"schema.table\",\"source\":\"file:///data/*.parquet\"} \
                 plus optional \"format\" (parquet|csv|json), \"csv\" {\"has_header\",\"delimiter\"}, \"primary_key\" [columns], \
                 \"strategy\" (full|incremental|append), \"cursor\" (column), \"overlap\" (\"10m\" or a number), \
                 \"on_schema_change\" (fail|full_refresh), \"every\" (\"15m\") or \"cron\" (\"0 */2 * * *\", UTC). \
                 The source is any object_store URL (file, s3, gs, az, https: one file, a directory ending in '/' or a glob) \
                 or snowflake://CONNECTION/DATABASE.SCHEMA.TABLE. The source's columns are checked now."
            }
            Action::TableList => {
                "List tables: registrations with replica status for admins, queryable tables for others."
            }
            Action::TableRemove => {
                "Unregister a table and drop its replica (admin). Body: {\"name\":\"schema.table\"}."
            }
            Action::SyncStart => {
                "Start a sync of a registered table with its strategy (admin). Body: {\"table\":\"schema.table\"}. Returns {\"job_id\"}; \
                 if a sync of the table is already queued or running, returns that job with \"already_running\": true."
            }
            Action::SyncStatus => {
                "Status of a sync job (admin): state, rows, bytes, watermark before/after, error, attempt, timings. Body: {\"job_id\":\"…\"}."
            }
            Action::SyncJobs => {
                "List sync jobs, newest first (admin). Body: {} or {\"table\":\"schema.table\",\"state\":\"failed\",\"limit\":50,\
                 \"page_token\":\"…\"}. Returns {\"jobs\":[…],\"next_page_token\"}."
            }
            Action::SyncCancel => {
                "Cancel a queued or running sync job (admin); the replica keeps its previous version. Body: {\"job_id\":\"…\"}."
            }
            Action::SyncSchedule => {
                "Set or clear a table's schedule (admin). Body: {\"table\":\"schema.table\",\"every\":\"15m\"}, \
                 {\"table\":…,\"cron\":\"0 */2 * * *\"} (UTC) or {\"table\":…,\"clear\":true}. Returns the next run."
            }
            Action::TableStatus => {
                "Freshness of a table (admin): rows and bytes on disk of the replica (bytes count once DuckDB checkpoints), last sync, last success, watermark, \
                 schedule and next run. Body: {\"name\":\"schema.table\"}."
            }
            Action::SourcesListTables => {
                "List the tables of a Snowflake schema with row counts and bytes (admin). \
                 Body: {\"connection\":\"prod\",\"database\":\"DB\",\"schema\":\"PUBLIC\"}."
            }
            Action::GrantSet => {
                "Create or replace a grant (admin). Body: {\"swarm\":\"emea\",\"agent\":null,\"tables\":{\"sales.orders\":\
                 {\"row_filter\":\"region = agent_attr('region')\",\"columns\":{\"email\":{\"mask\":\"'***'\"},\"ssn\":\"deny\"}},\
                 \"sales.*\":{}},\"limits\":{\"max_rows\":10000,\"timeout_s\":30,\"max_concurrent\":4,\"per_minute\":600}}. \
                 Applies from the next query."
            }
            Action::GrantGet => {
                "Read a grant (admin). Body: {\"swarm\":\"emea\"} or {\"swarm\":\"emea\",\"agent\":\"a1\"}."
            }
            Action::GrantList => "List all grants (admin). Body: empty or {}.",
            Action::GrantDelete => {
                "Delete a grant (admin). Body: {\"swarm\":\"emea\"} or {\"swarm\":\"emea\",\"agent\":\"a1\"}."
            }
            Action::Explain => {
                "Show how a query runs for a principal, policies applied (admin). Body: {\"sql\":\"SELECT …\",\
                 \"as\":{\"token_id\":\"…\"}} or \"as\":{\"kind\":\"agent\",\"swarm\":\"emea\",\"name\":\"a1\",\"attributes\":{}}; \
                 without \"as\", for the caller. Returns the principal's access and the logical and physical plans."
            }
            Action::ArtifactList => {
                "List the artifacts you may read. Body (all optional): {\"tag\":\"q3\",\"owner\":\"a1\",                 \"visibility\":\"private|swarm\",\"name_prefix\":\"eu_\",\"created_after\":\"2026-01-01T00:00:00Z\",                 \"created_before\":\"…\",\"limit\":100,\"page_token\":\"…\"}."
            }
            Action::ArtifactGet => {
                "An artifact's metadata and a DoGet ticket (base64). Body: {\"id\":\"…\"} or {\"name\":\"eu_orders\"},                  optionally \"version\":N for an older version. Upload with DoPut, descriptor path [\"artifact\", name]."
            }
            Action::ArtifactShare => {
                "Change who may read your artifact. Body: {\"id\":\"…\",\"visibility\":\"private|swarm\"}."
            }
            Action::ArtifactDelete => {
                "Delete your artifact and all its versions. Body: {\"id\":\"…\"}."
            }
            Action::QueryExport => {
                "Write a query's result as an artifact, as a job. Body: {\"sql\":\"SELECT …\",\"format\":\"parquet|csv|jsonl\",\
                 \"name\":\"eu_orders\"}, optional \"visibility\", \"tags\", \"ttl_seconds\", \"wait\":true (answer when done). \
                 Answers the job; its result names the artifact, rows and bytes."
            }
            Action::JobGet => {
                "A job's state and progress (yours; admins: any, syncs too). Body: {\"job_id\":\"…\"}."
            }
            Action::JobList => {
                "List jobs (yours; admins: all). Body (optional): {\"kind\":\"export|sync\",\"state\":\"running\",\
                 \"limit\":50,\"page_token\":\"…\"}."
            }
            Action::JobCancel => {
                "Cancel a running job; a cancelled export leaves no artifact. Body: {\"job_id\":\"…\"}."
            }
            Action::TableProfile => {
                "Column statistics of a table as you see it (filtered rows, masked values). Body: \
                 {\"table\":\"sales.orders\"}, optional \"columns\":[…] and \"sample\":N (rows). Per column: type, count, \
                 nulls, approx_distinct, min, max, mean, stddev, quartiles, string lengths, top values, histogram. \
                 In SQL: SELECT * FROM airlock.profile('sales.orders')."
            }
            Action::TableSample => {
                "A sample of the rows you may see. Body: {\"table\":\"sales.orders\",\"rows\":100} or \
                 {\"table\":…,\"fraction\":0.01,\"method\":\"bernoulli|system\"}, optional \"seed\":N and (with rows) \
                 \"stratify_by\":\"column\". Answers {\"table\",\"method\",\"seed\",\"sql\",\"ticket\"}: DoGet the ticket for the rows."
            }
            Action::ArtifactExtend => {
                "Set your artifact to expire ttl_seconds from now. Body: {\"id\":\"…\",\"ttl_seconds\":86400}."
            }
        }
    }

    /// Who may call it.
    pub fn permission(self) -> Permission {
        match self {
            Action::TokenCreate
            | Action::TokenRevoke
            | Action::TokenList
            | Action::Whoami
            | Action::TableList
            | Action::ArtifactList
            | Action::ArtifactGet
            | Action::ArtifactShare
            | Action::ArtifactDelete
            | Action::ArtifactExtend
            | Action::TableSample
            | Action::TableProfile
            | Action::QueryExport
            | Action::JobGet
            | Action::JobList
            | Action::JobCancel => Permission::Authenticated,
            Action::TableRegister
            | Action::TableRemove
            | Action::SyncStart
            | Action::SyncStatus
            | Action::SyncJobs
            | Action::SyncCancel
            | Action::SyncSchedule
            | Action::TableStatus
            | Action::SourcesListTables
            | Action::GrantSet
            | Action::GrantGet
            | Action::GrantList
            | Action::GrantDelete
            | Action::Explain => Permission::Admin,
        }
    }
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
}

/// The body of actions that take none: empty, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl Actions {
    /// Builds the action runner.
    pub fn new(
        auth: Arc<Authenticator>,
        sync: Arc<SyncService>,
        query: Arc<QueryEngine>,
        grants: Arc<GrantStore>,
        artifacts: Arc<ArtifactService>,
        jobs: Arc<JobStore>,
    ) -> Self {
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
        }
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
            Action::TableStatus => respond(action, self.table_status(body).await?),
            Action::SourcesListTables => respond(action, self.sources_list_tables(body).await?),
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
            Action::QueryExport => respond(action, self.query_export(principal, body).await?),
            Action::JobGet => respond(action, self.job_get(principal, body).await?),
            Action::JobList => respond(action, self.job_list(principal, body).await?),
            Action::JobCancel => respond(action, self.job_cancel(principal, body).await?),
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
    }
}

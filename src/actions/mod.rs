//! Flight actions: JSON in, JSON out.
//!
//! Each action is an [`Action`] variant with a name, a description (shown by
//! ListActions) and the permission it needs, checked in one exhaustive
//! match before its body is even parsed. Handlers parse the body into a
//! typed request (unknown fields are errors) and call the module that owns
//! the behaviour; this module holds no business rules of its own.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{AuthError, Authenticator, Principal, TokenKind, TokenRecord, TokenRequest};
use crate::policy::{Access, Grant, GrantStore, PolicyError, grant_key};
use crate::query::QueryEngine;
use crate::query::QueryError;
use crate::sync::{
    JobQuery, RegisterRequest, Schedule, SourceSpec, SyncError, SyncJob, SyncService,
    TableRegistration, TableStatus,
};
use crate::table_name::TableName;

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
}

impl Action {
    /// All actions, in ListActions order.
    pub const ALL: [Action; 19] = [
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
        }
    }

    /// Who may call it.
    pub fn permission(self) -> Permission {
        match self {
            Action::TokenCreate
            | Action::TokenRevoke
            | Action::TokenList
            | Action::Whoami
            | Action::TableList => Permission::Authenticated,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdRequest {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableRequest {
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest {
    job_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRequest {
    table: String,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    clear: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListTablesRequest {
    connection: String,
    database: String,
    schema: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantKey {
    swarm: String,
    #[serde(default)]
    agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    sql: String,
    #[serde(default, rename = "as")]
    as_principal: Option<AsPrincipal>,
}

/// Whom `explain` plans for: an existing token, or a described principal.
#[derive(Debug, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum AsPrincipal {
    Token {
        token_id: String,
    },
    Described {
        kind: TokenKind,
        #[serde(default)]
        swarm: Option<String>,
        name: String,
        #[serde(default)]
        attributes: std::collections::BTreeMap<String, String>,
    },
}

impl Actions {
    /// Builds the action runner.
    pub fn new(
        auth: Arc<Authenticator>,
        sync: Arc<SyncService>,
        query: Arc<QueryEngine>,
        grants: Arc<GrantStore>,
    ) -> Self {
        Self {
            auth,
            sync,
            query,
            grants,
        }
    }

    /// Runs the action `name` for `principal` with a JSON `body`.
    pub async fn run(
        &self,
        principal: &Principal,
        name: &str,
        body: &[u8],
    ) -> Result<Value, ActionError> {
        let action =
            Action::from_name(name).ok_or_else(|| ActionError::Unknown(name.to_string()))?;
        match action.permission() {
            Permission::Admin => principal.require_admin(action.name())?,
            Permission::Authenticated => {}
        }
        match action {
            Action::TokenCreate => {
                let request: TokenRequest = parse(action, body)?;
                let issued = self.auth.create_token(principal, request).await?;
                Ok(json!({
                    "id": issued.record.id,
                    "token": issued.token,
                    "kind": issued.record.kind,
                    "name": issued.record.name,
                    "swarm": issued.record.swarm,
                    "expires_at": issued.record.expires_at,
                }))
            }
            Action::TokenRevoke => {
                let IdRequest { id } = parse(action, body)?;
                let outcome = self.auth.revoke_token(principal, &id).await?;
                Ok(json!({
                    "id": outcome.record.id,
                    "revoked": true,
                    "revoked_at": outcome.record.revoked_at,
                    "newly_revoked": outcome.revoked,
                }))
            }
            Action::TokenList => {
                let Empty {} = parse(action, body)?;
                let tokens: Vec<Value> = self
                    .auth
                    .list_tokens(principal)
                    .iter()
                    .map(token_json)
                    .collect();
                Ok(json!({ "tokens": tokens }))
            }
            Action::Whoami => {
                let Empty {} = parse(action, body)?;
                Ok(json!({
                    "kind": principal.kind,
                    "name": principal.name,
                    "swarm": principal.swarm,
                    "token_id": principal.token_id,
                    "expires_at": principal.expires_at,
                    "attributes": principal.attributes,
                }))
            }
            Action::TableRegister => {
                let request: RegisterRequest = parse(action, body)?;
                let registration = self.sync.register(&principal.label(), request).await?;
                Ok(registration_json(&registration, None))
            }
            Action::TableList => {
                let Empty {} = parse(action, body)?;
                self.table_list(principal).await
            }
            Action::TableRemove => {
                let NameRequest { name } = parse(action, body)?;
                let name = TableName::parse(&name).map_err(SyncError::from)?;
                let dropped = self.sync.remove(&name).await?;
                Ok(json!({ "name": name, "removed": true, "replica_dropped": dropped }))
            }
            Action::SyncStart => {
                let TableRequest { table } = parse(action, body)?;
                let name = TableName::parse(&table).map_err(SyncError::from)?;
                let (job, started) = self.sync.start(&name).await?;
                Ok(json!({
                    "job_id": job.job_id,
                    "table": job.table,
                    "state": job.state,
                    "already_running": !started,
                }))
            }
            Action::SyncStatus => {
                let JobRequest { job_id } = parse(action, body)?;
                Ok(job_json(&self.sync.status(&job_id).await?))
            }
            Action::SyncJobs => {
                let query: JobQuery = parse(action, body)?;
                let page = self.sync.jobs(query).await?;
                Ok(json!({
                    "jobs": page.jobs.iter().map(job_json).collect::<Vec<_>>(),
                    "next_page_token": page.next_page_token,
                }))
            }
            Action::SyncCancel => {
                let JobRequest { job_id } = parse(action, body)?;
                let job = self.sync.cancel(&job_id).await?;
                Ok(json!({ "job_id": job.job_id, "table": job.table, "cancelling": true }))
            }
            Action::SyncSchedule => {
                let request: ScheduleRequest = parse(action, body)?;
                let name = TableName::parse(&request.table).map_err(SyncError::from)?;
                let schedule = match (request.clear, request.every, request.cron) {
                    (true, None, None) => None,
                    (false, Some(every), None) => Some(Schedule::Every { every }),
                    (false, None, Some(cron)) => Some(Schedule::Cron { cron }),
                    _ => {
                        return Err(ActionError::BadRequest {
                            action: action.name(),
                            message: "give exactly one of \"every\", \"cron\" or \"clear\": true"
                                .into(),
                        });
                    }
                };
                let (registration, next) = self.sync.set_schedule(&name, schedule).await?;
                Ok(json!({
                    "table": registration.name,
                    "schedule": registration.schedule,
                    "next_run": next,
                }))
            }
            Action::TableStatus => {
                let NameRequest { name } = parse(action, body)?;
                let name = TableName::parse(&name).map_err(SyncError::from)?;
                Ok(table_status_json(&self.sync.table_status(&name).await?))
            }
            Action::SourcesListTables => {
                let request: ListTablesRequest = parse(action, body)?;
                let tables = self
                    .sync
                    .list_source_tables(&request.connection, &request.database, &request.schema)
                    .await?;
                Ok(json!({ "tables": tables }))
            }
            Action::GrantSet => {
                let grant: Grant = parse(action, body)?;
                let grant = grant.validate()?;
                self.query.check_grant(&grant)?;
                let stored = self.grants.set(grant).await?;
                Ok(json!({ "key": stored.key(), "grant": stored }))
            }
            Action::GrantGet => {
                let GrantKey { swarm, agent } = parse(action, body)?;
                let grant = self.grants.get(&grant_key(&swarm, agent.as_deref()))?;
                Ok(json!({ "key": grant.key(), "grant": grant }))
            }
            Action::GrantList => {
                let Empty {} = parse(action, body)?;
                let snapshot = self.grants.snapshot();
                let grants: Vec<&Grant> = snapshot.grants.values().collect();
                Ok(json!({ "grants": grants }))
            }
            Action::GrantDelete => {
                let GrantKey { swarm, agent } = parse(action, body)?;
                let key = grant_key(&swarm, agent.as_deref());
                self.grants.delete(&key).await?;
                Ok(json!({ "key": key, "deleted": true }))
            }
            Action::Explain => {
                let ExplainRequest { sql, as_principal } = parse(action, body)?;
                let target = match as_principal {
                    None => principal.clone(),
                    Some(AsPrincipal::Token { token_id }) => self
                        .auth
                        .principal_of(&token_id)
                        .ok_or(AuthError::NotFound(token_id))?,
                    Some(AsPrincipal::Described {
                        kind,
                        swarm,
                        name,
                        attributes,
                    }) => Principal::described(kind, swarm, name, attributes),
                };
                let explained = self.query.explain(&target, &sql).await?;
                Ok(json!({
                    "principal": target.label(),
                    "access": access_json(&self.query.access(&target)),
                    "logical_plan": explained.logical,
                    "physical_plan": explained.physical,
                }))
            }
        }
    }

    /// The declared primary key of a table the principal can see (empty
    /// for tables it cannot see, so metadata never confirms they exist).
    pub async fn primary_key(&self, principal: &Principal, name: &TableName) -> Vec<String> {
        if self.query.visible_tables(principal).get(name).is_none() {
            return vec![];
        }
        self.sync
            .registration(name)
            .await
            .map(|r| r.primary_key)
            .unwrap_or_default()
    }

    async fn table_list(&self, principal: &Principal) -> Result<Value, ActionError> {
        let visible = self.query.visible_tables(principal);
        if !principal.is_admin() {
            let tables: Vec<Value> = visible
                .tables()
                .map(|(schema, table, arrow)| {
                    json!({
                        "name": format!("{schema}.{table}"),
                        "columns": arrow.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return Ok(json!({ "tables": tables }));
        }
        let mut tables = Vec::new();
        for registration in self.sync.registrations().await? {
            // A missing job record (purged, say) must not hide the table.
            let last_job = match &registration.last_job_id {
                Some(id) => self.sync.status(id).await.ok(),
                None => None,
            };
            let mut entry = registration_json(&registration, last_job.as_ref());
            entry["replicated"] = json!(visible.get(&registration.name).is_some());
            tables.push(entry);
        }
        Ok(json!({ "tables": tables }))
    }
}

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

fn access_json(access: &Access) -> Value {
    match access {
        Access::Unrestricted => json!("unrestricted"),
        Access::Restricted { tables, limits } => {
            let tables: serde_json::Map<String, Value> = tables
                .iter()
                .map(|(name, rules)| {
                    (
                        name.to_string(),
                        json!({
                            "row_filters": rules.row_filters,
                            "denied": rules.denied,
                            "masks": rules.masks,
                        }),
                    )
                })
                .collect();
            json!({ "tables": tables, "limits": limits })
        }
    }
}

fn token_json(record: &TokenRecord) -> Value {
    json!({
        "id": record.id,
        "kind": record.kind,
        "name": record.name,
        "swarm": record.swarm,
        "parent": record.parent,
        "attributes": record.attributes,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "active": record.revoked_at.is_none() && record.expires_at > chrono::Utc::now(),
    })
}

fn registration_json(registration: &TableRegistration, last_job: Option<&SyncJob>) -> Value {
    let mut entry = json!({
        "name": registration.name,
        "source": registration.source.display(),
        "primary_key": registration.primary_key,
        "strategy": registration.strategy,
        "cursor": registration.cursor,
        "overlap": registration.overlap,
        "on_schema_change": registration.on_schema_change,
        "schedule": registration.schedule,
        "columns": registration.columns,
        "created_by": registration.created_by,
        "created_at": registration.created_at,
        "last_sync": last_job.map(job_json),
    });
    if let SourceSpec::Files(files) = &registration.source {
        entry["format"] = json!(files.format);
        entry["csv"] = json!(files.csv);
    }
    entry
}

fn table_status_json(status: &TableStatus) -> Value {
    let freshness_s = status
        .last_success
        .as_ref()
        .and_then(|job| job.finished_at)
        .map(|at| (chrono::Utc::now() - at).num_seconds());
    json!({
        "name": status.registration.name,
        "source": status.registration.source.display(),
        "strategy": status.registration.strategy,
        "schedule": status.registration.schedule,
        "next_run": status.next_run,
        "rows": status.rows,
        "bytes_on_disk": status.bytes,
        "watermark": status.watermark,
        "freshness_s": freshness_s,
        "last_success_at": status.last_success.as_ref().and_then(|job| job.finished_at),
        "last_sync": status.last_job.as_ref().map(job_json),
    })
}

fn job_json(job: &SyncJob) -> Value {
    let duration_ms = match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => Some((end - start).num_milliseconds()),
        (Some(start), None) => Some((chrono::Utc::now() - start).num_milliseconds()),
        _ => None,
    };
    json!({
        "job_id": job.job_id,
        "table": job.table,
        "strategy": job.strategy,
        "trigger": job.trigger,
        "state": job.state,
        "rows": job.rows,
        "bytes": job.bytes,
        "table_rows": job.table_rows,
        "files": job.files,
        "source_bytes": job.source_bytes,
        "source_rows": job.source_rows,
        "watermark_before": job.watermark_before,
        "watermark_after": job.watermark_after,
        "added_columns": job.added_columns,
        "error": job.error,
        "attempt": job.attempt,
        "retry_at": job.retry_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration_ms": duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! Query planning and execution.
//!
//! ```text
//! SQL text ─► statement::parse_query      one read-only query, or refused
//!          ─► table check                 every referenced table visible?
//!          ─► DataFusion planning         against the principal's catalog
//!          ─► bind parameters             prepared statements
//!          ─► physical plan ─► QueryStream   deadline, cancel, schema labels
//!                      └─ DuckDbScanExec (replica) pushes projection,
//!                         filters and limit into DuckDB
//! ```
//!
//! Planning is deterministic for a given principal, SQL text and
//! parameters, which is what lets tickets carry just the SQL: any node can
//! re-plan and serve them.

mod admission;
mod catalog;
mod executor;
mod governed;
mod guard;
mod statement;
mod stream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue, TableReference};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

pub use catalog::{CATALOG, VisibleTables};
use stream::Guards;
pub use stream::{QueryStream, RunningQueries};

use crate::auth::Principal;
use crate::auth::TokenKind;
use crate::config::{LimitDefaults, QueryConfig};
use crate::policy::{
    self, Access, Grant, GrantStore, Limits, PolicyError, TableAccess, TablePattern,
};
use crate::replica::{Replica, ReplicaTable, TableSnapshot};
use crate::table_name::{DEFAULT_SCHEMA, TableName};
use catalog::VisibleTable;
use governed::GovernedTable;
use std::collections::{BTreeMap, HashMap};

/// What one query of a principal plans with.
struct Session {
    state: SessionState,
    visible: VisibleTables,
    limits: Option<Limits>,
    access: Arc<Access>,
}

/// The columns a physical plan reads from the replica, as
/// `schema.table.column`, each once.
fn columns_read(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut columns = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<crate::replica::DuckDbScanExec>() {
            for column in scan.columns() {
                let name = format!("{}.{column}", scan.table());
                if !columns.contains(&name) {
                    columns.push(name);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    columns
}

/// Why a query could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Longer than `query.max_sql_length`.
    #[error("SQL text is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Expressions nested deeper than `query.max_expression_depth`.
    #[error(
        "expression nested deeper than {0} levels; simplify it (an IN list instead of a chain of ORs, say)"
    )]
    TooDeep(usize),
    /// No statement at all.
    #[error("empty query: send one SELECT statement")]
    Empty,
    /// Does not parse.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// Several statements in one text.
    #[error("{0} statements in one request; airlock runs exactly one query per request")]
    MultipleStatements(usize),
    /// Parses, but is not a query.
    #[error("{0} is not allowed: airlock is read-only and runs only SELECT queries")]
    NotAQuery(String),
    /// A restricted principal called a table function.
    #[error("table function '{0}' is not available: agents read only the tables granted to them")]
    TableFunction(String),
    /// A referenced table is not visible.
    #[error(
        "table '{0}' does not exist or is not visible to you; list tables with GetTables or the table.list action"
    )]
    UnknownTable(String),
    /// Planning failed (unknown column, type error, unsupported feature, …).
    #[error("{}", describe(.0))]
    Plan(DataFusionError),
    /// Parameter binding failed.
    #[error("parameters: {0}")]
    Parameters(String),
    /// Execution failed.
    #[error("{}", describe(.0))]
    Execution(DataFusionError),
    /// Ran past `query.timeout`.
    #[error("query exceeded the time limit of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Cancelled by CancelFlightInfo.
    #[error("query cancelled")]
    Cancelled,
    /// Over a concurrency or rate limit.
    #[error("{0}")]
    Overloaded(String),
    /// A cancel named a query that is not running (or not the caller's).
    #[error("query {0} is not running (it finished, never started, or belongs to someone else)")]
    NotRunning(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// DataFusion's message without its wrapper prefixes, plus the position of
/// the problem in the SQL text when DataFusion knows it.
fn describe(error: &DataFusionError) -> String {
    let root = error.find_root();
    let mut message = match root {
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m) => m.clone(),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::SQL(e, _) => e.to_string(),
        DataFusionError::ResourcesExhausted(m) => format!("out of query memory: {m}"),
        other => other.to_string(),
    };
    if let Some(span) = error.diagnostic().and_then(|d| d.span) {
        message.push_str(&format!(
            " (at line {}, column {})",
            span.start.line, span.start.column
        ));
    }
    message
}

/// A planned query, ready to run.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    plan: LogicalPlan,
    state: SessionState,
    schema: SchemaRef,
    tables: Vec<TableName>,
    /// The principal's limits; `None` for unrestricted principals.
    limits: Option<Limits>,
    /// The rules applied to the tables read, for the audit.
    policy: String,
}

impl PlannedQuery {
    /// The result schema (what FlightInfo announces and the stream carries).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The policy applied to the tables read (JSON per table), or
    /// `unrestricted`.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The tables the query names (each once, in order of appearance).
    pub fn tables(&self) -> &[TableName] {
        &self.tables
    }

    /// Placeholders `$1..$n` with the types DataFusion inferred (Null when
    /// it could not tell), in order.
    pub fn parameter_schema(&self) -> Result<SchemaRef, QueryError> {
        let types = self.plan.get_parameter_types().map_err(QueryError::Plan)?;
        let mut params: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
        for (name, data_type) in types {
            let index = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    QueryError::Parameters(format!(
                        "named placeholder {name} is not supported; use ? or $1, $2, …"
                    ))
                })?;
            params.push((index, data_type));
        }
        params.sort_by_key(|(i, _)| *i);
        Ok(Arc::new(Schema::new(
            params
                .into_iter()
                .map(|(i, t)| Field::new(format!("${i}"), t.unwrap_or(DataType::Null), true))
                .collect::<Vec<_>>(),
        )))
    }

    /// Whether the query has placeholders.
    pub fn has_parameters(&self) -> Result<bool, QueryError> {
        Ok(!self.parameter_schema()?.fields().is_empty())
    }

    /// Substitutes parameter values (in placeholder order).
    pub fn bind(self, values: Vec<ScalarValue>) -> Result<Self, QueryError> {
        let expected = self.parameter_schema()?.fields().len();
        if values.len() != expected {
            return Err(QueryError::Parameters(format!(
                "the query has {expected} placeholders but {} values were bound",
                values.len()
            )));
        }
        let plan = self
            .plan
            .with_param_values(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            ))
            .map_err(|e| QueryError::Parameters(describe(&e)))?;
        Ok(Self { plan, ..self })
    }

    /// The same query returning at most `rows` rows.
    fn capped(self, rows: u64) -> Result<Self, QueryError> {
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(self.plan.clone())
            .limit(0, Some(usize::try_from(rows).unwrap_or(usize::MAX)))
            .and_then(|b| b.build())
            .map_err(QueryError::Plan)?;
        Ok(Self { plan, ..self })
    }

    /// The logical plan, for tests and EXPLAIN-style displays.
    pub fn logical_plan(&self) -> &LogicalPlan {
        &self.plan
    }
}

/// A query's plans, as text.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The logical plan.
    pub logical: String,
    /// The physical plan: what DuckDB is asked and what runs above it.
    pub physical: String,
}

/// Plans and runs queries against the replica.
#[derive(Debug)]
pub struct QueryEngine {
    replica: Arc<Replica>,
    base: SessionState,
    config: QueryConfig,
    running: Arc<RunningQueries>,
    executor: executor::QueryExecutor,
    grants: Arc<GrantStore>,
    defaults: LimitDefaults,
    admission: admission::Admission,
    /// Tables only unrestricted principals see (`airlock.audit`).
    system_tables: Vec<(TableName, crate::replica::TableInfo)>,
    sessions: std::sync::Mutex<Vec<CachedSession>>,
}

/// Sessions kept (most recently used first).
const CACHED_SESSIONS: usize = 128;

/// A session state with the catalog one principal sees in one table
/// snapshot under one version of the grants. Building one registers every
/// function again and compiles the principal's policies, which costs more
/// than planning a point lookup; cloning a built one is cheap.
#[derive(Debug)]
struct CachedSession {
    snapshot: TableSnapshot,
    grants_version: u64,
    /// Token id for restricted principals; `None` for admins, who all see
    /// the same.
    principal: Option<String>,
    state: SessionState,
    visible: VisibleTables,
    limits: Option<Limits>,
    access: Arc<Access>,
}

impl QueryEngine {
    /// An engine over `replica`; DataFusion spills under `spill_dir`.
    pub fn new(
        replica: Arc<Replica>,
        grants: Arc<GrantStore>,
        config: QueryConfig,
        defaults: LimitDefaults,
        system_tables: Vec<(TableName, crate::replica::TableInfo)>,
        spill_dir: &std::path::Path,
    ) -> Result<Self, QueryError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit.as_u64() as usize, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![spill_dir.to_path_buf()])),
            )
            .build_arc()
            .map_err(|e| QueryError::Internal(format!("query runtime: {e}")))?;
        let session = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(false);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        // One worker per core: measured fastest for scans (more workers spin
        // and steal CPU from DuckDB). The gRPC side stays responsive either
        // way, since results cross a channel and deadlines are checked there.
        let executor = executor::QueryExecutor::new(threads)
            .map_err(|e| QueryError::Internal(format!("query executor threads: {e}")))?;
        let mut base = SessionStateBuilder::new()
            .with_config(session.with_target_partitions(threads))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(guard::BatchGuard {
                max_bytes: config.max_batch_bytes.as_u64() as usize,
            }))
            .build();
        for udf in guard::capped_functions(&base) {
            datafusion::execution::FunctionRegistry::register_udf(&mut base, udf)
                .map_err(|e| QueryError::Internal(format!("registering capped functions: {e}")))?;
        }
        Ok(Self {
            replica,
            base,
            config,
            running: Arc::new(RunningQueries::default()),
            executor,
            grants,
            defaults,
            admission: admission::Admission::default(),
            system_tables,
            sessions: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// What `principal` may see, as it sees it.
    pub fn visible_tables(&self, principal: &Principal) -> VisibleTables {
        self.session(principal).visible
    }

    /// A restricted principal's limits, the grant's where it sets them and
    /// the configured defaults otherwise.
    fn limits(&self, access: &Access) -> Option<Limits> {
        match access {
            Access::Unrestricted => None,
            Access::Restricted { limits, .. } => Some(Limits {
                max_rows: limits.max_rows.or(Some(self.defaults.max_rows)),
                timeout_s: limits.timeout_s,
                max_concurrent: limits.max_concurrent.or(Some(self.defaults.max_concurrent)),
                per_minute: limits.per_minute.or(Some(self.defaults.per_minute)),
            }),
        }
    }

    /// What `principal` may read under the current grants.
    pub fn access(&self, principal: &Principal) -> Access {
        let snapshot = self.replica.tables();
        policy::access_for(principal, &self.grants.snapshot().grants, snapshot.keys())
    }

    /// A fresh session for one query of `principal`: the cached state for
    /// its catalog, cloned, with its start time set (so `now()` is the
    /// query's time, not the cache's).
    fn session(&self, principal: &Principal) -> Session {
        let snapshot = self.replica.tables();
        let grants = self.grants.snapshot();
        let key = (!principal.is_admin()).then(|| principal.token_id.clone());
        let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.iter().position(|c| {
            Arc::ptr_eq(&c.snapshot, &snapshot)
                && c.grants_version == grants.version
                && c.principal == key
        });
        let cached = match hit {
            Some(i) => cache.remove(i),
            None => {
                drop(cache);
                let access = policy::access_for(principal, &grants.grants, snapshot.keys());
                let visible = self.build_visible(principal, &snapshot, &access);
                let mut builder = SessionStateBuilder::new_from_existing(self.base.clone())
                    .with_catalog_list(visible.catalog_list());
                if access != Access::Unrestricted {
                    // Table functions (range, generate_series, …) are off for
                    // restricted principals: they may read only granted tables.
                    builder = builder.with_table_functions(HashMap::new());
                }
                let state = builder.build();
                cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                CachedSession {
                    snapshot,
                    grants_version: grants.version,
                    principal: key,
                    state,
                    visible,
                    limits: self.limits(&access),
                    access: Arc::new(access),
                }
            }
        };
        let mut state = cached.state.clone();
        let visible = cached.visible.clone();
        let limits = cached.limits;
        let access = Arc::clone(&cached.access);
        cache.insert(0, cached);
        cache.truncate(CACHED_SESSIONS);
        drop(cache);
        state.mark_start_execution();
        Session {
            state,
            visible,
            limits,
            access,
        }
    }

    /// The providers a principal's catalog holds: plain replica tables for
    /// unrestricted principals and for tables without rules, governed ones
    /// otherwise. A table whose rules do not compile is left out (fail
    /// closed) and logged for the admin.
    fn build_visible(
        &self,
        principal: &Principal,
        snapshot: &TableSnapshot,
        access: &Access,
    ) -> VisibleTables {
        let mut tables = Vec::new();
        for (name, info) in snapshot.iter() {
            if !access.allows(name) {
                continue;
            }
            let plain = ReplicaTable::new(Arc::clone(&self.replica), name.clone(), info.clone());
            let table = match access
                .table(name)
                .filter(|rules| **rules != TableAccess::default())
            {
                None => VisibleTable {
                    schema: Arc::clone(&info.schema),
                    provider: Arc::new(plain),
                },
                Some(rules) => {
                    match policy::compile_table(&self.base, name, &info.schema, rules, principal) {
                        Ok(compiled) => VisibleTable {
                            schema: Arc::clone(&compiled.schema),
                            provider: Arc::new(GovernedTable::new(plain, compiled)),
                        },
                        Err(e) => {
                            tracing::warn!(table = %name, principal = %principal.label(), error = %e, "hiding a table whose grant does not compile");
                            continue;
                        }
                    }
                }
            };
            tables.push((name.clone(), table));
        }
        if *access == Access::Unrestricted {
            for (name, info) in &self.system_tables {
                let plain =
                    ReplicaTable::new(Arc::clone(&self.replica), name.clone(), info.clone());
                tables.push((
                    name.clone(),
                    VisibleTable {
                        schema: Arc::clone(&info.schema),
                        provider: Arc::new(plain),
                    },
                ));
            }
        }
        VisibleTables::new(tables)
    }

    /// Checks that a grant's rules for existing tables it names exactly
    /// plan against those tables, so mistakes surface when the grant is
    /// set rather than as a hidden table later.
    pub fn check_grant(&self, grant: &Grant) -> Result<(), PolicyError> {
        let snapshot = self.replica.tables();
        let principal = Principal::described(
            if grant.agent.is_some() {
                TokenKind::Agent
            } else {
                TokenKind::Swarm
            },
            Some(grant.swarm.clone()),
            grant.agent.clone().unwrap_or_else(|| grant.swarm.clone()),
            Default::default(),
        );
        for (pattern, rule) in &grant.tables {
            let Ok(TablePattern::Exact(name)) = TablePattern::parse(pattern) else {
                continue;
            };
            let Some(info) = snapshot.get(&name) else {
                continue;
            };
            for column in rule.columns.keys() {
                if info.schema.field_with_name(column).is_err() {
                    return Err(PolicyError::Compile {
                        what: "column rules".into(),
                        table: name,
                        message: format!("there is no column '{column}'"),
                    });
                }
            }
            let single = BTreeMap::from([(
                grant.key(),
                Grant {
                    agent: None,
                    ..grant.clone()
                },
            )]);
            let access = policy::access_for(&principal, &single, [&name]);
            if let Some(rules) = access.table(&name) {
                policy::compile_table(&self.base, &name, &info.schema, rules, &principal)?;
            }
        }
        Ok(())
    }

    /// The plans of `sql` as `principal` would run it, policies applied.
    pub async fn explain(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
    ) -> Result<Explained, QueryError> {
        let planned = self.plan(principal, sql).await?;
        let physical = self.physical_plan(&planned).await?;
        Ok(Explained {
            logical: planned.plan.display_indent().to_string(),
            physical: datafusion::physical_plan::displayable(physical.as_ref())
                .indent(true)
                .to_string(),
        })
    }

    /// Queries now streaming.
    pub fn running(&self) -> &Arc<RunningQueries> {
        &self.running
    }

    /// Parses and plans `sql` for `principal`, placeholders left unbound
    /// (for preparing). Planning runs on the query executor: it is CPU work
    /// that can be large for large SQL.
    pub async fn plan(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
    ) -> Result<PlannedQuery, QueryError> {
        let engine = Arc::clone(self);
        let principal = principal.clone();
        let sql = sql.to_string();
        self.executor
            .run(async move { engine.plan_here(&principal, &sql).await })
            .await
            .map_err(|e| QueryError::Internal(format!("planning task failed: {e}")))?
    }

    /// Plans `sql` with `values` bound to its placeholders, ready to run: a
    /// placeholder without a value is an error.
    pub async fn plan_bound(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
        values: Vec<ScalarValue>,
    ) -> Result<PlannedQuery, QueryError> {
        let planned = self.plan(principal, sql).await?;
        if !values.is_empty() {
            return planned.bind(values);
        }
        if planned.has_parameters()? {
            return Err(QueryError::Parameters(
                "the query has placeholders but no values were bound; prepare it and bind parameters"
                    .into(),
            ));
        }
        Ok(planned)
    }

    async fn plan_here(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<PlannedQuery, QueryError> {
        let statement = statement::parse_query(
            sql,
            statement::StatementLimits {
                max_length: self.config.max_sql_length,
                max_depth: self.config.max_expression_depth,
            },
        )?;
        let Session {
            state,
            visible,
            limits,
            access,
        } = self.session(principal);
        if limits.is_some()
            && let Some(name) = statement::first_table_function(&statement)
        {
            return Err(QueryError::TableFunction(name));
        }

        let references = state
            .resolve_table_references(&statement)
            .map_err(QueryError::Plan)?;
        let mut tables = Vec::new();
        let mut seen = HashSet::new();
        for reference in references {
            let name = resolve(&reference, &visible)?;
            if seen.insert(name.clone()) {
                tables.push(name);
            }
        }

        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(QueryError::Plan)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(QueryError::Plan)?;
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Ok(PlannedQuery {
            plan,
            state,
            schema,
            policy: access.describe(&tables),
            tables,
            limits,
        })
    }

    /// The physical plan of a planned query (tests inspect the SQL pushed
    /// into DuckDB through it).
    pub async fn physical_plan(
        &self,
        planned: &PlannedQuery,
    ) -> Result<Arc<dyn ExecutionPlan>, QueryError> {
        if planned.has_parameters()? {
            return Err(QueryError::Parameters(
                "the query has placeholders with no values bound".into(),
            ));
        }
        planned
            .state
            .create_physical_plan(&planned.plan)
            .await
            .map_err(QueryError::Plan)
    }

    /// Starts a query for `principal`; its batches arrive through the
    /// returned stream.
    pub async fn execute(
        &self,
        planned: PlannedQuery,
        query_id: &str,
        principal: &Principal,
    ) -> Result<QueryStream, QueryError> {
        let limits = planned.limits.unwrap_or_default();
        // Admitted before any work; the permit lives as long as the stream.
        let permit = match planned.limits {
            Some(limits) => Some(self.admission.admit(
                &principal.label(),
                limits.max_concurrent.unwrap_or(u32::MAX >> 3),
                limits.per_minute.unwrap_or(u32::MAX >> 3),
            )?),
            None => None,
        };
        let timeout = match limits.timeout_s {
            Some(seconds) => self.config.timeout.min(Duration::from_secs(seconds)),
            None => self.config.timeout,
        };
        let planned = match limits.max_rows {
            // One row past the cap tells a capped result from one that fits.
            Some(max_rows) => planned.capped(max_rows.saturating_add(1))?,
            None => planned,
        };
        let physical = self.physical_plan(&planned).await?;
        let columns = columns_read(&physical);
        let (token, registration) = self.running.register(query_id, &principal.token_id);
        let deadline = tokio::time::Instant::now() + timeout;
        let inner =
            self.executor
                .execute(physical, planned.state.task_ctx(), token.clone(), deadline);
        Ok(QueryStream::new(
            inner,
            planned.schema(),
            Guards {
                timeout,
                deadline,
                token,
                registration,
                max_rows: limits.max_rows,
                permit,
            },
        )
        .with_columns(columns))
    }

    /// Cancels a running query by id; only the token that started it or an
    /// admin may.
    pub fn cancel(&self, query_id: &str, principal: &Principal) -> bool {
        self.running.cancel(query_id, |owner| {
            principal.is_admin() || owner == principal.token_id
        })
    }
}

/// A table reference of the query, as a visible table name.
fn resolve(reference: &TableReference, visible: &VisibleTables) -> Result<TableName, QueryError> {
    let (catalog, schema, table) = match reference {
        TableReference::Bare { table } => (None, DEFAULT_SCHEMA, table.as_ref()),
        TableReference::Partial { schema, table } => (None, schema.as_ref(), table.as_ref()),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => (Some(catalog.as_ref()), schema.as_ref(), table.as_ref()),
    };
    let unknown = || QueryError::UnknownTable(reference.to_string());
    if catalog.is_some_and(|c| c != CATALOG) {
        return Err(unknown());
    }
    let name = TableName::from_parts(schema, table).map_err(|_| unknown())?;
    if visible.get(&name).is_none() {
        return Err(unknown());
    }
    Ok(name)
}

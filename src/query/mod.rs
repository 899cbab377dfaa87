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
//! re-plan and serve them. `planning.rs` plans (reusing plans per catalog:
//! `session.rs` keeps them), `collect.rs` runs a query to its first rows.

mod admission;
mod catalog;
mod collect;
mod error;
mod executor;
mod governed;
mod guard;
mod information_schema;
mod planned;
mod planning;
mod profile;
mod profile_sql;
mod pushdown;
mod sample;
mod session;
mod settings;
mod statement;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;

use admission::Admitted;
pub use catalog::{CATALOG, ExtraTables, VisibleTables};
pub use collect::Collected;
pub use error::QueryError;
pub use planned::{Explained, PlannedQuery};
pub use profile::{Bucket, ColumnProfile, ProfileRequest, Stat, TableProfile, TopValue};
pub use sample::sample_key_sql;
pub use settings::{LimitDefaults, QueryConfig};
use stream::Guards;
pub use stream::{QueryStream, RunningQueries, RunningQuery};

use crate::policy::{self, Access, Grant, GrantStore, Limits, PolicyError, TablePattern};
use crate::principal::Principal;
use crate::principal::TokenKind;
use crate::replica::Replica;
use crate::table_name::{DEFAULT_SCHEMA, TableName};
use planned::columns_read;
use session::{CachedSession, resolve};

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
    extra_tables: std::sync::RwLock<Vec<Arc<dyn ExtraTables>>>,
    sessions: std::sync::Mutex<Vec<CachedSession>>,
    profiles: profile::ProfileCache,
}

/// Construction, and what a principal sees and may do.
impl QueryEngine {
    /// An engine over `replica`; DataFusion spills under `spill_dir`.
    pub fn new(
        replica: Arc<Replica>,
        grants: Arc<GrantStore>,
        config: QueryConfig,
        defaults: LimitDefaults,
        system_tables: Vec<(TableName, crate::replica::TableInfo)>,
        extra_tables: Vec<Arc<dyn ExtraTables>>,
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
        let mut builder = SessionStateBuilder::new()
            .with_config(session.with_target_partitions(threads))
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(guard::BatchGuard {
                max_bytes: config.max_batch_bytes.as_u64() as usize,
            }));
        // Per-principal sessions are built from this one and keep its planner.
        if config.pushdown {
            builder = builder.with_query_planner(Arc::new(pushdown::PushdownPlanner));
        }
        let mut base = builder.build();
        datafusion::execution::FunctionRegistry::register_udf(
            &mut base,
            Arc::new(sample::SampleKey::udf()),
        )
        .map_err(|e| QueryError::Internal(format!("registering the sample key: {e}")))?;
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
            extra_tables: std::sync::RwLock::new(extra_tables),
            sessions: std::sync::Mutex::new(Vec::new()),
            profiles: profile::ProfileCache::default(),
        })
    }

    /// Makes an object store readable by the tables planned over it
    /// (artifacts are Parquet files in one), under `url`'s scheme and host.
    pub fn register_object_store(&self, url: &url::Url, store: Arc<dyn object_store::ObjectStore>) {
        self.base.runtime_env().register_object_store(url, store);
    }

    /// Adds a set of extra tables after the engine is built (for services
    /// that themselves query through the engine).
    pub fn add_extra_tables(&self, tables: Arc<dyn ExtraTables>) {
        self.extra_tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(tables);
    }

    /// The extra table sets, and the sum of their versions (each only
    /// grows, so the sum changes whenever one does).
    fn extra_tables(&self) -> (Vec<Arc<dyn ExtraTables>>, u64) {
        let tables = self
            .extra_tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let version = tables.iter().map(|t| t.version()).sum();
        (tables, version)
    }

    /// The version of a replica table that records describing it name
    /// (its DuckDB table, in-place merges and row count); none for an
    /// unknown table.
    pub fn table_version(&self, name: &TableName) -> Option<String> {
        self.replica.tables().get(name).map(|info| {
            format!(
                "{}:{}:{}",
                info.physical.quoted(),
                info.merged_at,
                info.rows
            )
        })
    }

    /// Runs a query answering one boolean (a check such as "is this column
    /// unique") as `principal`; false when it answers no row or NULL.
    pub async fn check(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
    ) -> Result<bool, QueryError> {
        use datafusion::arrow::array::{Array, BooleanArray};
        use futures::TryStreamExt;
        let planned = self.plan(principal, sql).await?;
        let query_id = uuid::Uuid::new_v4().to_string();
        let batches: Vec<datafusion::arrow::array::RecordBatch> = self
            .execute(planned, &query_id, principal)
            .await?
            .try_collect()
            .await?;
        Ok(batches
            .iter()
            .find(|b| b.num_rows() > 0 && b.num_columns() > 0)
            .and_then(|b| b.column(0).as_any().downcast_ref::<BooleanArray>().cloned())
            .is_some_and(|v| v.is_valid(0) && v.value(0)))
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

    /// What `principal` may read under the current grants, or with
    /// `proposed` in place of the grant with its key (a preview).
    pub fn access(&self, principal: &Principal, proposed: Option<&Grant>) -> Access {
        let snapshot = self.replica.tables();
        let current = self.grants.snapshot();
        match proposed {
            None => policy::access_for(principal, &current.grants, snapshot.keys()),
            Some(grant) => policy::access_for(principal, &self.grants_with(grant), snapshot.keys()),
        }
    }

    /// The stored grants with `proposed` in place of the one with its key.
    fn grants_with(&self, proposed: &Grant) -> std::collections::BTreeMap<String, Grant> {
        let mut grants = (*self.grants.snapshot().grants).clone();
        grants.insert(proposed.key(), proposed.clone());
        grants
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
}

/// Running and cancelling.
impl QueryEngine {
    /// Starts a query for `principal`; its batches arrive through the
    /// returned stream.
    pub async fn execute(
        &self,
        planned: PlannedQuery,
        query_id: &str,
        principal: &Principal,
    ) -> Result<QueryStream, QueryError> {
        // Admitted before any work; the permit lives as long as the stream.
        let permit = self.admit(principal, planned.limits.as_ref()).await?;
        self.start(planned, query_id, principal, permit).await
    }

    /// Counts one query of `principal` against its concurrency and rate
    /// limits (nothing for unrestricted principals); the permit holds a
    /// slot until dropped.
    async fn admit(
        &self,
        principal: &Principal,
        limits: Option<&Limits>,
    ) -> Result<Option<Admitted>, QueryError> {
        let Some(limits) = limits else {
            return Ok(None);
        };
        self.admission
            .admit(
                &principal.label(),
                limits.max_concurrent.unwrap_or(u32::MAX >> 3),
                limits.per_minute.unwrap_or(u32::MAX >> 3),
            )
            .await
            .map(Some)
    }

    /// Counts agents' limits across the nodes sharing `limits` too (a
    /// cluster); set before serving.
    pub fn share_limits(&mut self, limits: Arc<dyn crate::meta::SharedLimits>, node: String) {
        self.admission = admission::Admission::shared(limits, node);
    }

    /// Starts an admitted query (`permit` is held by the stream).
    async fn start(
        &self,
        planned: PlannedQuery,
        query_id: &str,
        principal: &Principal,
        permit: Option<Admitted>,
    ) -> Result<QueryStream, QueryError> {
        let limits = planned.limits.unwrap_or_default();
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
        let fallback = pushdown::is_pushed(&physical).then(|| pushdown::unpushed(&planned));
        let started = stream::Started {
            principal: principal.label(),
            swarm: principal.swarm.clone(),
            sql: Arc::clone(&planned.sql),
            at: chrono::Utc::now(),
        };
        let (token, registration, progress) =
            self.running
                .register(query_id, &principal.token_id, started);
        let deadline = tokio::time::Instant::now() + timeout;
        let inner = self.executor.execute(
            physical,
            planned.state.task_ctx(),
            token.clone(),
            deadline,
            fallback,
        );
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
                progress,
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

    /// Queries now streaming.
    pub fn running(&self) -> &Arc<RunningQueries> {
        &self.running
    }

    /// The queries now streaming that `principal` may see and cancel: all
    /// for admins, else those its token started.
    pub fn running_for(&self, principal: &Principal) -> Vec<RunningQuery> {
        self.running
            .list(|owner| principal.is_admin() || owner == principal.token_id)
    }
}

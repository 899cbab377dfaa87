//! The per-principal session cache: the DataFusion session state each
//! query plans in, with the catalog of tables its principal may see
//! (governed where grants set rules), cached per principal, table snapshot
//! and grants version, and the check that every table a query names is in
//! that catalog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::TableReference;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use hashlink::LruCache;

use super::QueryEngine;
use super::catalog::{CATALOG, VisibleTable, VisibleTables};
use super::error::QueryError;
use super::governed::GovernedTable;
use super::information_schema::INFORMATION_SCHEMA;
use crate::policy::{self, Access, Grant, Limits, TableAccess};
use crate::principal::Principal;
use crate::replica::{ReplicaTable, TableSnapshot};
use crate::table_name::{DEFAULT_SCHEMA, TableName};

/// What one query of a principal plans with.
pub(super) struct Session {
    pub(super) state: SessionState,
    pub(super) visible: VisibleTables,
    pub(super) limits: Option<Limits>,
    pub(super) access: Arc<Access>,
    /// Plans made in this session's catalog, by SQL text.
    pub(super) plans: Arc<Mutex<PlanCache>>,
}

/// Plans kept per cached session.
const CACHED_PLANS: usize = 64;

/// Analysed plans by SQL text, for one catalog (a cached session): a
/// prepared statement is planned once, not again by GetFlightInfo and
/// DoGet. Kept unoptimized, so optimizing again with a fresh start time
/// lets `now()` advance between executions; a change of grants, tables or
/// extra tables makes a new session and so a new cache.
pub(super) type PlanCache = LruCache<String, Arc<CachedPlan>>;

/// A plan as `plan_here` made it.
#[derive(Debug)]
pub(super) struct CachedPlan {
    pub(super) plan: LogicalPlan,
    pub(super) schema: SchemaRef,
    pub(super) tables: Vec<TableName>,
    pub(super) policy: String,
}

/// Sessions kept (most recently used first).
const CACHED_SESSIONS: usize = 128;

/// A session state with the catalog one principal sees in one table
/// snapshot under one version of the grants. Building one registers every
/// function again and compiles the principal's policies, which costs more
/// than planning a point lookup; cloning a built one is cheap.
#[derive(Debug)]
pub(super) struct CachedSession {
    snapshot: TableSnapshot,
    grants_version: u64,
    /// Sum of the extra table sets' versions (each only grows).
    extra_version: u64,
    /// Token id for restricted principals; `None` for admins, who all see
    /// the same.
    principal: Option<String>,
    state: SessionState,
    visible: VisibleTables,
    limits: Option<Limits>,
    access: Arc<Access>,
    plans: Arc<Mutex<PlanCache>>,
}

impl QueryEngine {
    /// A fresh session for one query of `principal`: the cached state for
    /// its catalog, cloned, with its start time set (so `now()` is the
    /// query's time, not the cache's).
    pub(super) fn session(&self, principal: &Principal) -> Session {
        let snapshot = self.replica.tables();
        let grants = self.grants.snapshot();
        let key = (!principal.is_admin()).then(|| principal.token_id.clone());
        let (_, extra_version) = self.extra_tables();
        let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let hit = cache.iter().position(|c| {
            Arc::ptr_eq(&c.snapshot, &snapshot)
                && c.grants_version == grants.version
                && c.extra_version == extra_version
                && c.principal == key
        });
        let cached = match hit {
            Some(i) => cache.remove(i),
            None => {
                drop(cache);
                let access = policy::access_for(principal, &grants.grants, snapshot.keys());
                let (state, visible) = self.session_state(principal, &snapshot, &access);
                cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
                CachedSession {
                    snapshot,
                    grants_version: grants.version,
                    extra_version,
                    principal: key,
                    state,
                    visible,
                    limits: self.limits(&access),
                    access: Arc::new(access),
                    plans: Arc::new(Mutex::new(LruCache::new(CACHED_PLANS))),
                }
            }
        };
        let mut state = cached.state.clone();
        let visible = cached.visible.clone();
        let limits = cached.limits;
        let access = Arc::clone(&cached.access);
        let plans = Arc::clone(&cached.plans);
        cache.insert(0, cached);
        cache.truncate(CACHED_SESSIONS);
        drop(cache);
        state.mark_start_execution();
        Session {
            state,
            visible,
            limits,
            access,
            plans,
        }
    }

    /// A session for `principal` as if `grant` were stored in place of the
    /// grant with its key: for previewing a grant before it is saved.
    /// Never cached.
    pub(super) fn session_with_grant(&self, principal: &Principal, grant: &Grant) -> Session {
        let snapshot = self.replica.tables();
        let access = policy::access_for(principal, &self.grants_with(grant), snapshot.keys());
        let (mut state, visible) = self.session_state(principal, &snapshot, &access);
        state.mark_start_execution();
        Session {
            state,
            visible,
            limits: self.limits(&access),
            access: Arc::new(access),
            plans: Arc::new(Mutex::new(LruCache::new(CACHED_PLANS))),
        }
    }

    /// The session state and catalog of `access` over `snapshot`.
    fn session_state(
        &self,
        principal: &Principal,
        snapshot: &TableSnapshot,
        access: &Access,
    ) -> (SessionState, VisibleTables) {
        let visible = self.build_visible(principal, snapshot, access);
        let mut builder = SessionStateBuilder::new_from_existing(self.base.clone())
            .with_catalog_list(visible.catalog_list());
        if *access != Access::Unrestricted {
            // Table functions (range, generate_series, …) are off for
            // restricted principals: they may read only granted tables.
            builder = builder.with_table_functions(HashMap::new());
        }
        (builder.build(), visible)
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
                    policy: Arc::from(""),
                },
                Some(rules) => {
                    match policy::compile_table(&self.base, name, &info.schema, rules, principal) {
                        Ok(compiled) => VisibleTable {
                            schema: Arc::clone(&compiled.schema),
                            policy: Arc::from(format!(
                                "{:?} {:?}",
                                compiled.row_filter, compiled.outputs
                            )),
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
                        policy: Arc::from(""),
                    },
                ));
            }
        }
        for extra in &self.extra_tables().0 {
            for (name, schema, provider) in extra.tables_for(principal) {
                tables.push((
                    name,
                    VisibleTable {
                        schema,
                        provider,
                        policy: Arc::from(""),
                    },
                ));
            }
        }
        VisibleTables::new(tables)
    }
}

/// A table reference of the query, as a visible table name.
/// Resolves a table a query names to a visible table; `None` for the
/// principal's own information schema, which is not data (and which
/// DataFusion adds to every SHOW statement's references).
pub(super) fn resolve(
    reference: &TableReference,
    visible: &VisibleTables,
) -> Result<Option<TableName>, QueryError> {
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
    if schema == INFORMATION_SCHEMA {
        return Ok(None);
    }
    let name = TableName::from_parts(schema, table).map_err(|_| unknown())?;
    if visible.get(&name).is_none() {
        return Err(unknown());
    }
    Ok(Some(name))
}

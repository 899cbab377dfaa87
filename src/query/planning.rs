//! Planning: SQL text to a policy-bound plan for one principal (parse,
//! check, resolve tables in the principal's catalog, plan), reusing plans
//! per catalog; and physical planning.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::ExecutionPlan;

use super::planned::duckdb_scans;
use super::session::{CachedPlan, Session};
use super::{
    Explained, PlannedQuery, ProfileRequest, QueryEngine, QueryError, profile, profile_sql,
    resolve, sample, statement,
};
use crate::policy::Grant;
use crate::principal::Principal;
use crate::table_name::TableName;

/// Planning.
impl QueryEngine {
    /// The plans of `sql` as `principal` would run it, policies applied.
    pub async fn explain(
        self: &Arc<Self>,
        principal: &Principal,
        sql: &str,
        proposed: Option<&Grant>,
    ) -> Result<Explained, QueryError> {
        let planned = match proposed {
            None => self.plan(principal, sql).await?,
            Some(grant) => {
                let engine = Arc::clone(self);
                let (principal, sql, grant) = (principal.clone(), sql.to_string(), grant.clone());
                self.executor
                    .run(async move {
                        let session = engine.session_with_grant(&principal, &grant);
                        engine.plan_in(session, &principal, &sql).await
                    })
                    .await
                    .map_err(|e| QueryError::Internal(format!("planning task failed: {e}")))??
            }
        };
        let physical = self.physical_plan(&planned).await?;
        let duckdb = tokio::task::spawn_blocking({
            let physical = Arc::clone(&physical);
            move || -> Result<Vec<String>, QueryError> {
                let mut plans = Vec::new();
                for scan in duckdb_scans(&physical) {
                    plans.extend(
                        scan.duckdb_plans()
                            .map_err(|e| QueryError::Internal(e.to_string()))?,
                    );
                }
                Ok(plans)
            }
        })
        .await
        .map_err(|e| QueryError::Internal(format!("explaining in DuckDB: {e}")))??;
        Ok(Explained {
            logical: planned.plan.display_indent().to_string(),
            physical: datafusion::physical_plan::displayable(physical.as_ref())
                .indent(true)
                .to_string(),
            duckdb,
        })
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

    pub(super) async fn plan_here(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<PlannedQuery, QueryError> {
        self.plan_in(self.session(principal), principal, sql).await
    }

    /// Plans `sql` for `principal` in `session`.
    async fn plan_in(
        &self,
        session: Session,
        principal: &Principal,
        sql: &str,
    ) -> Result<PlannedQuery, QueryError> {
        let Session {
            state,
            visible,
            limits,
            access,
            plans,
        } = session;
        let cached = plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned();
        if let Some(cached) = cached {
            return Ok(PlannedQuery {
                plan: cached.plan.clone(),
                state,
                schema: Arc::clone(&cached.schema),
                tables: cached.tables.clone(),
                limits,
                policy: cached.policy.clone(),
                sql: sql.into(),
            });
        }
        let mut statement = statement::parse_query(
            sql,
            statement::StatementLimits {
                max_length: self.config.max_sql_length,
                max_depth: self.config.max_expression_depth,
            },
        )?;
        // `airlock.profile('t')` is the one table function everyone may
        // call: it becomes the rows of t's profile before the check below.
        let profiled = profile_sql::profile_calls(&statement)?;
        // Profiles are baked into the statement and samples draw a fresh
        // seed per query: such plans are not reused.
        let reusable =
            profiled.is_empty() && !sample::has_samples(&statement) && sql.len() <= MAX_CACHED_SQL;
        let mut tables = Vec::new();
        if !profiled.is_empty() {
            let mut rows = HashMap::new();
            for table in profiled {
                let request = ProfileRequest {
                    table: table.clone(),
                    ..ProfileRequest::default()
                };
                let profile =
                    Box::pin(self.profile_here(principal, &request, profile::Admit::Yes)).await?;
                if let Ok(name) = TableName::parse(&profile.table) {
                    tables.push(name);
                }
                rows.insert(table, profile_sql::profile_values_sql(&profile));
            }
            profile_sql::replace_profile_calls(&mut statement, &rows)?;
        }
        if limits.is_some()
            && let Some(name) = statement::first_table_function(&statement)
        {
            return Err(QueryError::TableFunction(name));
        }

        sample::rewrite_samples(&mut statement, &visible)?;
        let references = state
            .resolve_table_references(&statement)
            .map_err(QueryError::Plan)?;
        let mut seen: HashSet<TableName> = tables.iter().cloned().collect();
        for reference in references {
            if let Some(name) = resolve(&reference, &visible)?
                && seen.insert(name.clone())
            {
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
        let policy = access.describe(&tables);
        if reusable {
            let cached = CachedPlan {
                plan: plan.clone(),
                schema: Arc::clone(&schema),
                tables: tables.clone(),
                policy: policy.clone(),
            };
            plans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(sql.to_string(), Arc::new(cached));
        }
        Ok(PlannedQuery {
            plan,
            state,
            schema,
            policy,
            tables,
            limits,
            sql: sql.into(),
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
}

/// Longest SQL whose plan is kept for reuse (longer ones are planned each
/// time, so the cache stays small).
const MAX_CACHED_SQL: usize = 16 * 1024;

//! Pushing governed sub-plans into DuckDB.
//!
//! ```text
//! optimized plan ─► push_down: each largest sub-plan that renders ─► physical plan
//!                   becomes one DuckDbNode carrying generated SQL     DuckDbQueryExec per node
//!
//!   render.rs     nodes (projection, filter, join, sort, limit, …) as nested SELECTs
//!   aggregate.rs  GROUP BY and aggregate calls; averages finished above (finish.rs)
//!   leaf.rs       replica tables; governed ones as derived tables, policy first
//!   replica::sql_expr   expressions and literals (a whitelist that fails closed)
//! ```
//!
//! The pass runs inside the query planner, after DataFusion optimized the
//! plan and before it plans execution, so everything that reads logical
//! plans (EXPLAIN's logical side, the golden-SQL column check) still sees
//! table scans. The SQL is generated from the plan, never from the query's
//! text: literals become parameters, names become `tN`/`cN`. A sub-plan is
//! replaced only when it does work a scan alone does not (filters,
//! aggregates, joins, sorts, limits); a lone scan keeps the provider's
//! partitioned path.

mod aggregate;
mod finish;
mod joins;
mod leaf;
mod render;

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result as DfResult, ScalarValue, internal_err};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, Projection, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use super::PlannedQuery;
use super::executor::Fallback;
use super::governed::GovernedTable;
use crate::replica::sql_expr::{Refusal, Rendered, bind_value};
use crate::replica::{DuckDbScanExec, PhysicalTable, Replica, is_point_predicate};
use render::{Output, Pushed};

/// The query planner that pushes sub-plans into DuckDB, then plans the
/// rest as DataFusion would.
#[derive(Debug)]
pub(crate) struct PushdownPlanner;

#[async_trait]
impl QueryPlanner for PushdownPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &SessionState,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = push_down(logical_plan);
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(DuckDbPlanner)])
            .create_physical_plan(&plan, session_state)
            .await
    }
}

/// Whether a physical plan sends any sub-plan to DuckDB.
pub(crate) fn is_pushed(plan: &Arc<dyn ExecutionPlan>) -> bool {
    super::planned::duckdb_scans(plan)
        .iter()
        .any(|scan| scan.name() == "DuckDbQueryExec")
}

/// Builds `planned`'s physical plan without pushdown: what runs when DuckDB
/// cannot finish a pushed query.
pub(crate) fn unpushed(planned: &PlannedQuery) -> Fallback {
    let plan = planned.plan.clone();
    let state = planned.state.clone();
    Box::new(move || {
        Box::pin(async move {
            let optimized = state.optimize(&plan)?;
            DefaultPhysicalPlanner::default()
                .create_physical_plan(&optimized, &state)
                .await
        })
    })
}

/// `plan` with each largest renderable sub-plan replaced by a
/// [`DuckDbNode`]; `plan` itself if nothing renders.
pub(crate) fn push_down(plan: &LogicalPlan) -> LogicalPlan {
    // transform_down visits the root first.
    let mut is_root = true;
    let pushed = plan.clone().transform_down_with_subqueries(|node| {
        let root = std::mem::take(&mut is_root);
        if !worth_pushing(&node) {
            return Ok(Transformed::no(node));
        }
        match render::render(&node, root).and_then(|pushed| into_plan(pushed, &node)) {
            Ok(replaced) => Ok(Transformed::new(replaced, true, TreeNodeRecursion::Jump)),
            Err(refusal) => {
                tracing::debug!(why = %refusal.0, "sub-plan stays in DataFusion");
                Ok(Transformed::no(node))
            }
        }
    });
    match pushed {
        Ok(pushed) => pushed.data,
        Err(e) => {
            tracing::debug!(error = %e, "pushdown skipped");
            plan.clone()
        }
    }
}

/// Whether a sub-plan does work beyond what a table scan already pushes.
fn worth_pushing(plan: &LogicalPlan) -> bool {
    is_masked_lookup(plan)
        || !matches!(plan, LogicalPlan::TableScan(_))
            && plan
                .exists(|node| {
                    Ok(matches!(
                        node,
                        LogicalPlan::Filter(_)
                            | LogicalPlan::Aggregate(_)
                            | LogicalPlan::Join(_)
                            | LogicalPlan::Sort(_)
                            | LogicalPlan::Limit(_)
                            | LogicalPlan::Distinct(_)
                            | LogicalPlan::Union(_)
                    ) || is_masked_lookup(node))
                })
                .unwrap_or(false)
}

/// A lookup (an equality or a LIMIT) on a governed table with masks.
/// Pushed, the one DuckDB query that finds the rows computes their masks
/// too, instead of DataFusion computing them over a repartitioned scan.
/// Bigger governed reads keep the provider's parallel partitions.
fn is_masked_lookup(node: &LogicalPlan) -> bool {
    let LogicalPlan::TableScan(scan) = node else {
        return false;
    };
    source_as_provider(&scan.source)
        .ok()
        .and_then(|provider| {
            provider
                .downcast_ref::<GovernedTable>()
                .map(|governed| !governed.policy().masked.is_empty())
        })
        .unwrap_or(false)
        && (scan.fetch.is_some() || scan.filters.iter().any(is_point_predicate))
}

/// The node (and, for averages, the projection finishing it) replacing
/// `original`.
fn into_plan(pushed: Pushed, original: &LogicalPlan) -> Rendered<LogicalPlan> {
    let schema = Arc::clone(original.schema());
    let Some(outputs) = pushed.finish.clone() else {
        return Ok(LogicalPlan::Extension(Extension {
            node: Arc::new(DuckDbNode::new(pushed, schema)),
        }));
    };
    let query_schema = aggregate::query_schema(&outputs)?;
    let node = LogicalPlan::Extension(Extension {
        node: Arc::new(DuckDbNode::new(pushed, query_schema)),
    });
    let column = |i: usize| Expr::Column(Column::from_name(format!("c{i}")));
    let exprs = outputs
        .iter()
        .zip(schema.iter())
        .map(|(output, (qualifier, field))| {
            let expr = match output {
                Output::Column { index, .. } => column(*index),
                Output::DecimalAvg {
                    sum,
                    count,
                    sum_scale,
                    precision,
                    scale,
                } => finish::DecimalAvg::udf(*sum_scale, *precision, *scale)
                    .call(vec![column(*sum), column(*count)]),
            };
            expr.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Projection::try_new_with_schema(exprs, Arc::new(node), schema)
        .map(LogicalPlan::Projection)
        .map_err(|e| Refusal(e.to_string()))
}

/// A sub-plan DuckDB runs: generated SQL, its parameters, and the tables
/// it reads (kept alive while it runs).
#[derive(Debug, Clone)]
pub(crate) struct DuckDbNode {
    sql: String,
    params: Vec<ScalarValue>,
    schema: DFSchemaRef,
    replica: Arc<Replica>,
    tables: Vec<Arc<PhysicalTable>>,
    columns: Vec<String>,
}

impl DuckDbNode {
    fn new(pushed: Pushed, schema: DFSchemaRef) -> Self {
        Self {
            sql: pushed.sql,
            params: pushed.params,
            schema,
            replica: pushed.replica,
            tables: pushed.tables,
            columns: pushed.columns,
        }
    }
}

// Two nodes with the same SQL, parameters and schema are the same query.
impl PartialEq for DuckDbNode {
    fn eq(&self, other: &Self) -> bool {
        self.sql == other.sql && self.params == other.params && self.schema == other.schema
    }
}

impl Eq for DuckDbNode {}

impl Hash for DuckDbNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.sql.hash(state);
        self.params.hash(state);
    }
}

impl PartialOrd for DuckDbNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.sql.partial_cmp(&other.sql) {
            Some(Ordering::Equal) => self.params.partial_cmp(&other.params),
            unequal => unequal,
        }
    }
}

impl UserDefinedLogicalNodeCore for DuckDbNode {
    fn name(&self) -> &str {
        "DuckDbQuery"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DuckDbQuery: sql=[{}]", self.sql)
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        if !exprs.is_empty() || !inputs.is_empty() {
            return internal_err!("DuckDbQuery has no expressions or inputs");
        }
        Ok(self.clone())
    }
}

/// Plans [`DuckDbNode`]s as [`DuckDbScanExec`]s.
struct DuckDbPlanner;

#[async_trait]
impl ExtensionPlanner for DuckDbPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &SessionState,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<DuckDbNode>() else {
            return Ok(None);
        };
        let mut params = Vec::with_capacity(node.params.len());
        for value in &node.params {
            match bind_value(value) {
                Some(bound) => params.push(bound),
                None => return internal_err!("parameter {value:?} cannot be bound"),
            }
        }
        Ok(Some(Arc::new(DuckDbScanExec::query(
            Arc::clone(&node.replica),
            node.tables.clone(),
            node.sql.clone(),
            params,
            Arc::new(node.schema.as_arrow().clone()),
            node.columns.clone(),
        ))))
    }
}

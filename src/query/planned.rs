//! Planned queries: [`PlannedQuery`] (a logical plan with the session it
//! was planned in, its placeholders and binding, and the row cap applied
//! at execution), [`Explained`] for EXPLAIN-style displays, and
//! [`columns_read`], which lists the replica columns a physical plan reads
//! for the audit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;

use super::error::{QueryError, describe};
use crate::policy::Limits;
use crate::table_name::TableName;

/// A planned query, ready to run.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    pub(super) plan: LogicalPlan,
    pub(super) state: SessionState,
    pub(super) schema: SchemaRef,
    pub(super) tables: Vec<TableName>,
    /// The principal's limits; `None` for unrestricted principals.
    pub(super) limits: Option<Limits>,
    /// The rules applied to the tables read, for the audit.
    pub(super) policy: String,
    /// The SQL as sent (shown in the list of running queries).
    pub(super) sql: Arc<str>,
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

    /// Whether the result comes in a defined order: the query ends in an
    /// ORDER BY (under its final projection or limit).
    pub fn is_ordered(&self) -> bool {
        let mut node = &self.plan;
        loop {
            match node {
                LogicalPlan::Sort(_) => return true,
                LogicalPlan::Projection(p) => node = p.input.as_ref(),
                LogicalPlan::Limit(l) => node = l.input.as_ref(),
                LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
                _ => return false,
            }
        }
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

    /// The same query with its row cap lowered to `max_rows` (a caller's
    /// own cap never raises the one its grant sets).
    pub fn at_most(mut self, max_rows: u64) -> Self {
        let limits = self.limits.get_or_insert_with(Limits::default);
        limits.max_rows = Some(limits.max_rows.map_or(max_rows, |cap| cap.min(max_rows)));
        self
    }

    /// The plan's shape, one operator per line, indented by depth: what
    /// it does (join, aggregate, sort, …) and which tables it reads, with
    /// no expression — no filter, mask or value a policy adds.
    pub fn shape(&self) -> String {
        let mut lines = Vec::new();
        let mut stack = vec![(&self.plan, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            let line = match node {
                LogicalPlan::TableScan(scan) => format!("TableScan {}", scan.table_name),
                LogicalPlan::Join(join) => format!("{} Join", join.join_type),
                // A policy's or a view's wrapper, not the caller's operator.
                LogicalPlan::SubqueryAlias(_) => {
                    stack.extend(node.inputs().into_iter().rev().map(|c| (c, depth)));
                    continue;
                }
                other => other.display().to_string(),
            };
            let name = line.split([':', '(']).next().unwrap_or_default().trim();
            lines.push(format!("{}{name}", "  ".repeat(depth)));
            stack.extend(node.inputs().into_iter().rev().map(|c| (c, depth + 1)));
        }
        lines.join("\n")
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
    pub(super) fn capped(self, rows: u64) -> Result<Self, QueryError> {
        let plan = datafusion::logical_expr::LogicalPlanBuilder::from(self.plan.clone())
            .limit(0, Some(usize::try_from(rows).unwrap_or(usize::MAX)))
            .and_then(|b| b.build())
            .map_err(QueryError::Plan)?;
        Ok(Self { plan, ..self })
    }

    /// The columns the query reads from each table it names (selected,
    /// filtered, joined on), subqueries included: what a caller must be
    /// able to see for the query to be shown to them (golden SQL).
    pub fn columns_by_table(&self) -> BTreeMap<TableName, BTreeSet<String>> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        // Optimized, so scans list only the columns used (projection
        // pushdown); the plan as written if the optimizer fails.
        let plan = self
            .state
            .optimize(&self.plan)
            .unwrap_or_else(|_| self.plan.clone());
        let mut read: BTreeMap<TableName, BTreeSet<String>> = BTreeMap::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Some(name) = self.tables.iter().find(|t| {
                    scan.table_name.table() == t.table()
                        && scan.table_name.schema().is_none_or(|s| s == t.schema())
                })
            {
                let columns = read.entry(name.clone()).or_default();
                columns.extend(
                    scan.projected_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone()),
                );
                for filter in &scan.filters {
                    columns.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        read
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
    /// DuckDB's plan for each query sent to it, in the physical plan's order.
    pub duckdb: Vec<String>,
}

/// The DuckDB scans and pushed queries of a physical plan, in plan order.
pub(super) fn duckdb_scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<&crate::replica::DuckDbScanExec> {
    let mut scans = Vec::new();
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.downcast_ref::<crate::replica::DuckDbScanExec>() {
            scans.push(scan);
        }
        stack.extend(node.children().into_iter().rev());
    }
    scans
}

/// The columns a physical plan reads from the replica, as
/// `schema.table.column`, each once.
pub(super) fn columns_read(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for scan in duckdb_scans(plan) {
        for column in scan.columns() {
            if !columns.iter().any(|c| c == column) {
                columns.push(column.to_string());
            }
        }
    }
    columns
}

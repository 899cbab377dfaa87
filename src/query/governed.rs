//! `GovernedTable`: a replica table as one principal may see it.
//!
//! It is the only provider a restricted principal's catalog holds for a
//! table, so every scan — wherever it sits in a query — reads through it:
//!
//! ```text
//! ProjectionExec   masks (names and types unchanged); denied columns absent
//!   FilterExec     the part of the row filter DuckDB cannot evaluate
//!     DuckDbScanExec   WHERE <row filter> AND <leakproof user predicates>
//! ```
//!
//! The row filter is a barrier. A user predicate goes below it (into DuckDB)
//! only if it cannot fail or reveal anything — a plain comparison of an
//! unmasked column with a constant, what [`is_pushable_filter`] accepts — and
//! then only further narrows the rows. Every other predicate stays above the
//! scan, so it is evaluated only on rows the principal may see: a division
//! or cast that fails on a hidden row can never turn its error into a leak.
//! Predicates on masked columns always stay above, where they see the mask.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use crate::policy::CompiledTable;
use crate::replica::{ReplicaTable, is_pushable_filter};

/// A replica table behind its compiled policy.
#[derive(Debug)]
pub(crate) struct GovernedTable {
    inner: ReplicaTable,
    policy: CompiledTable,
    /// The row filter's conjuncts DuckDB can evaluate, and the rest.
    pushed_filter: Vec<Expr>,
    remaining_filter: Option<Expr>,
}

impl GovernedTable {
    pub(crate) fn new(inner: ReplicaTable, policy: CompiledTable) -> Self {
        let full = inner.schema();
        let (pushed_filter, remaining): (Vec<Expr>, Vec<Expr>) = policy
            .row_filter
            .as_ref()
            .map(|f| {
                split_conjunction(f)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .partition(|e| is_pushable_filter(e, &full));
        Self {
            inner,
            policy,
            pushed_filter,
            remaining_filter: remaining.into_iter().reduce(Expr::and),
        }
    }

    /// The table under the policy.
    pub(crate) fn inner(&self) -> &ReplicaTable {
        &self.inner
    }

    /// The principal's rules for the table.
    pub(crate) fn policy(&self) -> &CompiledTable {
        &self.policy
    }

    /// The row filter's conjuncts DuckDB evaluates.
    pub(crate) fn pushed_filter(&self) -> &[Expr] {
        &self.pushed_filter
    }

    /// The rest of the row filter, evaluated by DataFusion.
    pub(crate) fn remaining_filter(&self) -> Option<&Expr> {
        self.remaining_filter.as_ref()
    }

    /// Whether a user predicate may be evaluated below the barrier.
    fn leakproof(&self, filter: &Expr) -> bool {
        let masked = &self.policy.masked;
        filter
            .column_refs()
            .iter()
            .all(|c| !masked.contains(&c.name))
            && is_pushable_filter(filter, &self.policy.schema)
    }
}

#[async_trait]
impl TableProvider for GovernedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.policy.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.leakproof(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.inner.schema();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.policy.outputs.len()).collect(),
        };
        let outputs: Vec<&Expr> = wanted.iter().map(|&i| &self.policy.outputs[i]).collect();

        // Stored columns the outputs and the remaining filter read.
        let mut needed: BTreeSet<usize> = BTreeSet::new();
        for expr in outputs
            .iter()
            .copied()
            .chain(self.remaining_filter.as_ref())
        {
            for column in expr.column_refs() {
                needed.insert(full.index_of(&column.name)?);
            }
        }
        let needed: Vec<usize> = needed.into_iter().collect();

        // Everything DuckDB evaluates: the translatable row filter and the
        // user's leakproof predicates. A limit is exact only if nothing is
        // left to filter above DuckDB.
        let scan_filters: Vec<Expr> = self.pushed_filter.iter().chain(filters).cloned().collect();
        let scan_limit = limit.filter(|_| self.remaining_filter.is_none());
        let mut plan = self
            .inner
            .scan(state, Some(&needed), &scan_filters, scan_limit)
            .await?;

        let scanned = DFSchema::try_from(plan.schema())?;
        if let Some(remaining) = &self.remaining_filter {
            let predicate = state.create_physical_expr(remaining.clone(), &scanned)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
        }
        let projections = wanted
            .iter()
            .zip(outputs)
            .map(|(&i, expr)| {
                let name = self.policy.schema.field(i).name().clone();
                let expr = match expr {
                    Expr::Alias(alias) => alias.expr.as_ref().clone(),
                    other => other.clone(),
                };
                Ok((state.create_physical_expr(expr, &scanned)?, name))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(projections, plan)?))
    }
}

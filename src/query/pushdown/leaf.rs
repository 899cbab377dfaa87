//! Leaves of a pushed plan: replica tables, and governed tables as
//! derived tables that apply the row filter and masks first.

use std::sync::Arc;

use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableScan, col};

use super::render::{Rel, Renderer};
use crate::query::governed::GovernedTable;
use crate::replica::ReplicaTable;
use crate::replica::sql_expr::{Refusal, Rendered, Scope, refuse};

impl Renderer {
    pub(super) fn scan(&mut self, scan: &TableScan) -> Rendered<Rel> {
        let provider = source_as_provider(&scan.source).map_err(|e| Refusal(e.to_string()))?;
        let (table, governed) = if let Some(governed) = provider.downcast_ref::<GovernedTable>() {
            (governed.inner(), Some(governed))
        } else if let Some(table) = provider.downcast_ref::<ReplicaTable>() {
            (table, None)
        } else {
            return refuse(format!("{} is not a replica table", scan.table_name));
        };
        match &self.replica {
            Some(replica) if !Arc::ptr_eq(replica, table.replica()) => {
                return refuse("tables of two replicas");
            }
            _ => self.replica = Some(Arc::clone(table.replica())),
        }
        let stored = datafusion::catalog::TableProvider::schema(table);
        let scope = Scope::table(&stored)?;
        let (visible, outputs, mut filters) = match governed {
            Some(governed) => {
                if governed.remaining_filter().is_some() {
                    return refuse("a row filter DuckDB cannot evaluate");
                }
                let policy = governed.policy();
                self.barrier |= policy.row_filter.is_some();
                let outputs: Vec<Expr> = policy
                    .outputs
                    .iter()
                    .map(|e| match e {
                        Expr::Alias(alias) => alias.expr.as_ref().clone(),
                        other => other.clone(),
                    })
                    .collect();
                (
                    Arc::clone(&policy.schema),
                    outputs,
                    governed.pushed_filter().to_vec(),
                )
            }
            None => {
                let outputs = stored
                    .fields()
                    .iter()
                    .map(|f| col(datafusion::common::Column::from_name(f.name())))
                    .collect();
                (Arc::clone(&stored), outputs, Vec::new())
            }
        };
        // The user's predicates DataFusion pushed into the scan: leakproof
        // ones for governed tables (the provider accepts only those).
        filters.extend(scan.filters.iter().cloned().map(unnormalize_col));
        let projection: Vec<usize> = match &scan.projection {
            Some(p) => p.clone(),
            None => (0..visible.fields().len()).collect(),
        };

        let mut columns = Vec::with_capacity(projection.len());
        let mut failing = Vec::with_capacity(projection.len());
        let mut read: Vec<String> = Vec::new();
        for (i, &index) in projection.iter().enumerate() {
            let Some(output) = outputs.get(index) else {
                return refuse("projection out of range");
            };
            let sql = self.exprs(&scope).render(output)?;
            columns.push(format!("{} AS c{i}", sql.text));
            // A mask that can fail must not meet a predicate DuckDB moves
            // down next to the row filter.
            failing.push(sql.can_fail);
            read.extend(output.column_refs().into_iter().map(|c| c.name.clone()));
        }
        if columns.is_empty() {
            // count(*) and the like: DuckDB must still produce the rows.
            columns.push("NULL AS c0".into());
        }
        let mut predicates = Vec::with_capacity(filters.len());
        for filter in &filters {
            predicates.push(self.exprs(&scope).boolean(filter)?.text);
            read.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
        }

        let physical = table.physical();
        let mut select = format!("SELECT {} FROM {}", columns.join(", "), physical.quoted());
        if !predicates.is_empty() {
            select.push_str(&format!(" WHERE {}", predicates.join(" AND ")));
        }
        for column in read {
            let name = format!("{}.{column}", physical.logical());
            if !self.columns.contains(&name) {
                self.columns.push(name);
            }
        }
        if !self.tables.iter().any(|t| Arc::ptr_eq(t, physical)) {
            self.tables.push(Arc::clone(physical));
        }
        Ok(Rel {
            limit: scan.fetch.map(|f| (0, Some(f))),
            ..Rel::plain(select, failing)
        })
    }
}

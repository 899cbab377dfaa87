//! `ReplicaTable`: a replica table as a DataFusion `TableProvider`.
//!
//! DataFusion hands each scan the projection, the filters it may push down
//! and a limit; this provider turns them into one DuckDB `SELECT` and
//! returns a [`DuckDbScanExec`] that streams its result. Filters are
//! claimed as `Exact` only when [`filter_to_sql`] can translate them;
//! the rest stay in DataFusion.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::{DuckDbScanExec, Replica, filter_to_sql};
use crate::table_name::{TableName, quote_ident};

/// One replica table, queryable by DataFusion.
pub struct ReplicaTable {
    replica: Arc<Replica>,
    name: TableName,
    schema: SchemaRef,
}

impl std::fmt::Debug for ReplicaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaTable")
            .field("name", &self.name)
            .finish()
    }
}

impl ReplicaTable {
    /// A provider for `name` with its replica schema.
    pub fn new(replica: Arc<Replica>, name: TableName, schema: SchemaRef) -> Self {
        Self {
            replica,
            name,
            schema,
        }
    }

    /// The DuckDB SQL for a scan.
    pub(crate) fn scan_sql(
        &self,
        projection: &[usize],
        filters: &[Expr],
        limit: Option<usize>,
    ) -> String {
        let columns = if projection.is_empty() {
            // No column needed (e.g. count(*)): DuckDB must still produce rows.
            "NULL".to_string()
        } else {
            projection
                .iter()
                .map(|&i| quote_ident(self.schema.field(i).name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {columns} FROM {}", self.name.quoted());
        let predicates: Vec<String> = filters
            .iter()
            .filter_map(|f| filter_to_sql(f, &self.schema))
            .collect();
        if !predicates.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&predicates.join(" AND "));
        }
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }
}

#[async_trait]
impl TableProvider for ReplicaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
                if filter_to_sql(f, &self.schema).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let projected = Arc::new(Schema::new_with_metadata(
            projection
                .iter()
                .map(|&i| self.schema.field(i).clone())
                .collect::<Vec<_>>(),
            self.schema.metadata().clone(),
        ));
        let sql = self.scan_sql(&projection, filters, limit);
        Ok(Arc::new(DuckDbScanExec::new(
            Arc::clone(&self.replica),
            sql,
            projected,
        )))
    }
}

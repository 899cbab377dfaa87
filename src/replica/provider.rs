//! `ReplicaTable`: a replica table as a DataFusion `TableProvider`.
//!
//! DataFusion hands each scan the projection, the filters it may push down
//! and a limit; this provider turns them into DuckDB `SELECT`s (literals as
//! bound parameters) and returns a [`DuckDbScanExec`] that streams their
//! results. Filters are claimed as `Exact` only when [`filter_sql`] renders
//! them; the rest stay in DataFusion.
//!
//! Big tables are read as several partitions, each a contiguous `rowid`
//! range (DuckDB prunes row groups by rowid), so Arrow conversion and the
//! operators above run on every core. Scans with a limit stay whole: a limit
//! is cheapest answered by one ordered scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use datafusion::common::{DataFusionError, ScalarValue};

use super::sql_expr::{bind_value, uses_all_params};
use super::{DuckDbScanExec, PhysicalTable, Replica, TableInfo, filter_sql, is_pushable_filter};
use crate::table_name::{TableName, quote_ident};

/// Fewer rows than this per partition is not worth a second DuckDB query.
const MIN_ROWS_PER_PARTITION: u64 = 250_000;

/// One replica table, queryable by DataFusion.
pub struct ReplicaTable {
    replica: Arc<Replica>,
    name: TableName,
    schema: SchemaRef,
    rows: u64,
    /// The version this table reads; scans keep it alive.
    physical: Arc<PhysicalTable>,
}

impl std::fmt::Debug for ReplicaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaTable")
            .field("name", &self.name)
            .finish()
    }
}

impl ReplicaTable {
    /// A provider for `name` as the replica catalog describes it.
    pub fn new(replica: Arc<Replica>, name: TableName, info: TableInfo) -> Self {
        Self {
            replica,
            name,
            schema: info.schema,
            rows: info.rows,
            physical: info.physical,
        }
    }

    /// The replica holding the table.
    pub(crate) fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The version this provider reads.
    pub(crate) fn physical(&self) -> &Arc<PhysicalTable> {
        &self.physical
    }

    /// Whether a user column named rowid shadows DuckDB's pseudo-column.
    fn rowid_shadowed(&self) -> bool {
        self.schema
            .fields()
            .iter()
            .any(|f| f.name().eq_ignore_ascii_case("rowid"))
    }

    /// How many rowid ranges to split a scan into.
    fn partitions(&self, filters: &[Expr], limit: Option<usize>, target: usize) -> u64 {
        // An equality on a column usually selects a handful of rows, which
        // DuckDB finds fastest with one query pruning by zone maps; a
        // second query would only add its start-up cost.
        let selective = filters.iter().any(is_point_predicate);
        if limit.is_some() || self.rowid_shadowed() || selective {
            return 1;
        }
        (self.rows / MIN_ROWS_PER_PARTITION).clamp(1, target.max(1) as u64)
    }

    /// The DuckDB SQL for each partition of a scan, and the parameters
    /// they all bind; an error if a filter DataFusion was told is exact
    /// does not render (it must never be dropped).
    pub(crate) fn scan_sql(
        &self,
        projection: &[usize],
        filters: &[Expr],
        limit: Option<usize>,
        partitions: u64,
    ) -> DfResult<(Vec<String>, Vec<ScalarValue>)> {
        let mut params = Vec::new();
        let mut predicates = Vec::with_capacity(filters.len());
        for filter in filters {
            match filter_sql(filter, &self.schema, &mut params) {
                Some(sql) => predicates.push(sql),
                None => {
                    return Err(DataFusionError::Internal(format!(
                        "filter {filter} was pushed into a scan but does not render"
                    )));
                }
            }
        }
        let partitions = partitions.max(1);
        let step = self.rows.div_ceil(partitions);
        let sql = (0..partitions)
            .map(|i| {
                // The first and last ranges are open-ended, so every row is
                // read even if the table grew after the snapshot counted it.
                let low = (i > 0).then(|| format!("rowid >= {}", i * step));
                let high = (i + 1 < partitions).then(|| format!("rowid < {}", (i + 1) * step));
                let range: Vec<String> = low.into_iter().chain(high).collect();
                self.partition_sql(projection, &predicates, limit, &range)
            })
            .collect::<Vec<_>>();
        if !sql.iter().all(|q| uses_all_params(q, params.len())) {
            return Err(DataFusionError::Internal(
                "a scan's SQL does not use all its parameters".into(),
            ));
        }
        Ok((sql, params))
    }

    fn partition_sql(
        &self,
        projection: &[usize],
        predicates: &[String],
        limit: Option<usize>,
        range: &[String],
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
        let mut sql = format!("SELECT {columns} FROM {}", self.physical.quoted());
        let predicates: Vec<String> = predicates.iter().chain(range).cloned().collect();
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

/// `column = literal` or `column IN (literals)`, possibly inside an `AND`.
pub fn is_point_predicate(expr: &Expr) -> bool {
    use datafusion::logical_expr::{BinaryExpr, Operator, expr::InList};
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => matches!(
            (left.as_ref(), right.as_ref()),
            (Expr::Column(_), Expr::Literal(..)) | (Expr::Literal(..), Expr::Column(_))
        ),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => is_point_predicate(left) || is_point_predicate(right),
        Expr::InList(InList {
            expr,
            negated: false,
            ..
        }) => matches!(expr.as_ref(), Expr::Column(_)),
        _ => false,
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
                if is_pushable_filter(f, &self.schema) {
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
        let partitions = self.partitions(
            filters,
            limit,
            state.config_options().execution.target_partitions,
        );
        let (sql, params) = self.scan_sql(&projection, filters, limit, partitions)?;
        let params = params
            .iter()
            .map(|p| {
                bind_value(p).ok_or_else(|| {
                    DataFusionError::Internal(format!("scan parameter {p:?} cannot be bound"))
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        // What the scan reads: its output columns and those its pushed-down
        // filters test (the audit records both).
        let mut read: Vec<String> = projected
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for filter in filters {
            for column in filter.column_refs() {
                if !read.contains(&column.name) {
                    read.push(column.name.clone());
                }
            }
        }
        Ok(Arc::new(
            DuckDbScanExec::new(
                Arc::clone(&self.replica),
                Arc::clone(&self.physical),
                sql,
                params,
                projected,
            )
            .reading(read),
        ))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;
    use crate::replica::test_support::{create, replica};

    #[tokio::test]
    async fn big_tables_scan_as_disjoint_rowid_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let replica = create(
            dir.path(),
            replica(dir.path()),
            "CREATE SCHEMA s; CREATE TABLE s.big AS SELECT range AS n FROM range(600000);",
        );
        let name = TableName::parse("s.big").unwrap();
        let info = replica.tables()[&name].clone();
        assert_eq!(info.rows, 600_000);
        let table = ReplicaTable::new(Arc::clone(&replica), name, info);
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        let plan = table.scan(&ctx.state(), None, &[], None).await.unwrap();
        let scan = plan.downcast_ref::<DuckDbScanExec>().unwrap();
        assert_eq!(
            scan.sql(),
            [
                r#"SELECT "n" FROM "s"."big" WHERE rowid < 300000"#,
                r#"SELECT "n" FROM "s"."big" WHERE rowid >= 300000"#
            ]
        );
        // Every row exactly once across the partitions.
        let partitions = collect_partitioned(plan, ctx.task_ctx()).await.unwrap();
        let values: Vec<i64> = partitions
            .iter()
            .flatten()
            .flat_map(|b: &RecordBatch| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(values.len(), 600_000);
        assert_eq!(values.iter().sum::<i64>(), (0..600_000).sum::<i64>());

        // A limit, or an equality that selects a few rows, keeps one partition.
        let point = datafusion::logical_expr::col("n").eq(datafusion::logical_expr::lit(7i64));
        let plan = table
            .scan(&ctx.state(), None, &[point], None)
            .await
            .unwrap();
        assert_eq!(
            plan.downcast_ref::<DuckDbScanExec>().unwrap().sql(),
            [r#"SELECT "n" FROM "s"."big" WHERE ("n" = CAST($1 AS BIGINT))"#]
        );
        let rows: usize = collect_partitioned(plan, ctx.task_ctx())
            .await
            .unwrap()
            .iter()
            .flatten()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 1, "the bound parameter selects the one row");
        let plan = table.scan(&ctx.state(), None, &[], Some(5)).await.unwrap();
        assert_eq!(
            plan.downcast_ref::<DuckDbScanExec>().unwrap().sql().len(),
            1
        );
    }

    /// A pushed limit stays a streaming limit in DuckDB. DuckDB 1.5 planned
    /// a LIMIT straight over a table as a row-id semi-join and a sort (twice
    /// the CPU, for an order a scan does not promise), which a filter on
    /// the scan turned off; DuckDB 2 no longer does.
    #[tokio::test]
    async fn a_pushed_limit_is_not_planned_as_a_join() {
        let dir = tempfile::tempdir().unwrap();
        let replica = create(
            dir.path(),
            replica(dir.path()),
            "CREATE SCHEMA s; CREATE TABLE s.big AS SELECT range AS n FROM range(300000);",
        );
        let name = TableName::parse("s.big").unwrap();
        let info = replica.tables()[&name].clone();
        let table = ReplicaTable::new(Arc::clone(&replica), name, info);
        let ctx = SessionContext::new();
        let plan = table
            .scan(&ctx.state(), None, &[], Some(1000))
            .await
            .unwrap();
        let sql = plan.downcast_ref::<DuckDbScanExec>().unwrap().sql()[0].clone();
        assert_eq!(sql, r#"SELECT "n" FROM "s"."big" LIMIT 1000"#);
        let explain = |sql: &str| -> String {
            replica
                .connect()
                .unwrap()
                .query_row(&format!("EXPLAIN {sql}"), [], |row| row.get(1))
                .unwrap()
        };
        assert!(!explain(&sql).contains("HASH_JOIN"), "{}", explain(&sql));
    }
}

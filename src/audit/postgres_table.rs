//! `airlock.audit` over the cluster's Postgres table: a DataFusion
//! provider that sends the columns asked for, the filters it can say in
//! SQL (every value a bound parameter) and the limit to Postgres, and
//! streams the rows back newest first, fetched a page at a time.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::common::{Column, DataFusionError, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{BinaryExpr, Expr, Like, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio_postgres::types::ToSql;

/// Rows fetched from Postgres per round trip.
const PAGE: i32 = 4096;

/// The columns, as admins see them (the same as a single node's).
fn schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("request", false),
        text("principal_kind", true),
        text("principal", true),
        text("swarm", true),
        text("token_id", true),
        text("remote_addr", true),
        text("statement", true),
        text("tables", true),
        text("columns", true),
        text("policy", true),
        text("outcome", false),
        text("status", false),
        text("reason", true),
        Field::new("rows", DataType::Int64, true),
        Field::new("bytes", DataType::Int64, false),
        Field::new("duration_ms", DataType::Float64, false),
        Field::new("truncated", DataType::Boolean, false),
        text("node", false),
    ]))
}

/// The shared audit table.
#[derive(Debug)]
pub struct AuditTable {
    pool: Pool,
    schema: SchemaRef,
}

impl AuditTable {
    pub(super) fn new(pool: Pool) -> Self {
        Self {
            pool,
            schema: schema(),
        }
    }
}

/// A filter said in SQL: its text (with `$n` placeholders) and values.
struct Sql {
    text: String,
    exact: bool,
}

type Param = Box<dyn ToSql + Send + Sync>;

/// A literal as a Postgres parameter, for a column of `data_type`.
fn param(value: &ScalarValue) -> Option<Param> {
    Some(match value {
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Box::new(v.clone()),
        ScalarValue::Int64(Some(v)) => Box::new(*v),
        ScalarValue::Int32(Some(v)) => Box::new(i64::from(*v)),
        ScalarValue::Float64(Some(v)) => Box::new(*v),
        ScalarValue::Boolean(Some(v)) => Box::new(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => {
            Box::new(DateTime::<Utc>::from_timestamp_micros(*v)?)
        }
        ScalarValue::TimestampMillisecond(Some(v), _) => {
            Box::new(DateTime::<Utc>::from_timestamp_millis(*v)?)
        }
        ScalarValue::TimestampSecond(Some(v), _) => {
            Box::new(DateTime::<Utc>::from_timestamp(*v, 0)?)
        }
        ScalarValue::TimestampNanosecond(Some(v), _) => {
            Box::new(DateTime::<Utc>::from_timestamp_nanos(*v))
        }
        _ => return None,
    })
}

/// `filter` in SQL over the table's columns, if it can be said there.
/// Exact when Postgres decides it the way DataFusion would: comparisons of
/// numbers and times, equality of text, NULL tests. Text ordering and
/// LIKE follow Postgres's collation, so DataFusion checks those again.
fn to_sql(filter: &Expr, schema: &Schema, params: &mut Vec<Param>) -> Option<Sql> {
    let column = |expr: &Expr| -> Option<(String, DataType)> {
        let Expr::Column(Column { name, .. }) = expr else {
            return None;
        };
        let field = schema.field_with_name(name).ok()?;
        Some((format!("\"{}\"", field.name()), field.data_type().clone()))
    };
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
            let start = params.len();
            let left = to_sql(left, schema, params);
            let right = left.as_ref().and_then(|_| to_sql(right, schema, params));
            match (left, right) {
                (Some(l), Some(r)) => Some(Sql {
                    text: format!("({} AND {})", l.text, r.text),
                    exact: l.exact && r.exact,
                }),
                _ => {
                    // Not said in SQL: drop the parameters the halves added.
                    params.truncate(start);
                    None
                }
            }
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let sql_op = match op {
                Operator::Eq => "=",
                Operator::NotEq => "<>",
                Operator::Lt => "<",
                Operator::LtEq => "<=",
                Operator::Gt => ">",
                Operator::GtEq => ">=",
                _ => return None,
            };
            let (name, data_type) = column(left)?;
            let Expr::Literal(value, _) = right.as_ref() else {
                return None;
            };
            let value = param(value)?;
            params.push(value);
            let text_range =
                data_type == DataType::Utf8 && !matches!(op, Operator::Eq | Operator::NotEq);
            Some(Sql {
                text: format!("{name} {sql_op} ${}", params.len()),
                exact: !text_range,
            })
        }
        Expr::IsNull(inner) => column(inner).map(|(name, _)| Sql {
            text: format!("{name} IS NULL"),
            exact: true,
        }),
        Expr::IsNotNull(inner) => column(inner).map(|(name, _)| Sql {
            text: format!("{name} IS NOT NULL"),
            exact: true,
        }),
        Expr::Like(Like {
            negated,
            expr,
            pattern,
            escape_char: None,
            case_insensitive,
        }) => {
            let (name, _) = column(expr)?;
            let Expr::Literal(value @ ScalarValue::Utf8(Some(_)), _) = pattern.as_ref() else {
                return None;
            };
            params.push(param(value)?);
            let op = match (negated, case_insensitive) {
                (false, false) => "LIKE",
                (true, false) => "NOT LIKE",
                (false, true) => "ILIKE",
                (true, true) => "NOT ILIKE",
            };
            Some(Sql {
                text: format!("{name} {op} ${}", params.len()),
                exact: false,
            })
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(
                |filter| match to_sql(filter, &self.schema, &mut Vec::new()) {
                    Some(Sql { exact: true, .. }) => TableProviderFilterPushDown::Exact,
                    Some(_) => TableProviderFilterPushDown::Inexact,
                    None => TableProviderFilterPushDown::Unsupported,
                },
            )
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(indices) => Arc::new(self.schema.project(indices)?),
            None => Arc::clone(&self.schema),
        };
        let mut params: Vec<Param> = Vec::new();
        let conditions: Vec<String> = filters
            .iter()
            .filter_map(|f| to_sql(f, &self.schema, &mut params).map(|sql| sql.text))
            .collect();
        // Newest first, always: what admins ask for most (the latest
        // records), and declared below so DataFusion need not sort.
        let mut sql = format!(
            "SELECT {} FROM airlock.audit",
            if projected.fields().is_empty() {
                "1".to_string()
            } else {
                projected
                    .fields()
                    .iter()
                    .map(|f| format!("\"{}\"", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        sql.push_str(" ORDER BY time DESC");
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let ordering = projected.index_of("time").ok().and_then(|index| {
            let time = Arc::new(datafusion::physical_expr::expressions::Column::new(
                "time", index,
            ));
            LexOrdering::new([PhysicalSortExpr::new(
                time,
                datafusion::arrow::compute::SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            )])
        });
        let partition = Arc::new(AuditRows {
            pool: self.pool.clone(),
            schema: Arc::clone(&projected),
            sql,
            params: Arc::new(std::sync::Mutex::new(Some(params))),
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            projected,
            vec![partition],
            None,
            ordering,
            false,
            limit,
        )?))
    }
}

/// The rows of one scan.
struct AuditRows {
    pool: Pool,
    schema: SchemaRef,
    sql: String,
    /// Taken by the one execution of the scan.
    params: Arc<std::sync::Mutex<Option<Vec<Param>>>>,
}

impl std::fmt::Debug for AuditRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditRows")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for AuditRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let params = self
            .params
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let (pool, sql, schema) = (
            self.pool.clone(),
            self.sql.clone(),
            Arc::clone(&self.schema),
        );
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(e) = fetch(pool, &sql, params, &schema, &sender).await {
                let _ = sender
                    .send(Err(DataFusionError::External(
                        format!("reading the audit trail from Postgres: {e}").into(),
                    )))
                    .await;
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream.boxed(),
        ))
    }
}

/// Runs the query through a portal, a page at a time, until it ends or
/// nobody reads on (a LIMIT above stopped).
async fn fetch(
    pool: Pool,
    sql: &str,
    params: Vec<Param>,
    schema: &SchemaRef,
    sender: &tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
) -> Result<(), String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let portal = tx.bind(sql, &refs).await.map_err(|e| e.to_string())?;
    loop {
        let rows = tx
            .query_portal(&portal, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let done = rows.len() < PAGE as usize;
        if !rows.is_empty() {
            let batch = to_batch(&rows, schema)?;
            if sender.send(Ok(batch)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// Postgres rows as an Arrow batch of `schema`'s columns.
fn to_batch(rows: &[tokio_postgres::Row], schema: &SchemaRef) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| format!("column {}: {e}", field.name());
        let column: ArrayRef = match field.data_type() {
            DataType::Timestamp(..) => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
                for row in rows {
                    let value: Option<DateTime<Utc>> = row.try_get(i).map_err(bad)?;
                    b.append_option(value.map(|t| t.timestamp_micros()));
                }
                Arc::new(b.finish().with_timezone("UTC"))
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for row in rows {
                    b.append_option(row.try_get::<_, Option<i64>>(i).map_err(bad)?);
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for row in rows {
                    b.append_option(row.try_get::<_, Option<f64>>(i).map_err(bad)?);
                }
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for row in rows {
                    b.append_option(row.try_get::<_, Option<bool>>(i).map_err(bad)?);
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for row in rows {
                    b.append_option(row.try_get::<_, Option<&str>>(i).map_err(bad)?);
                }
                Arc::new(b.finish())
            }
        };
        columns.push(column);
    }
    // With no column asked for (count(*)), only the row count matters.
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| e.to_string())
}

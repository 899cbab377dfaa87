//! The context store in SQL: `airlock.context_tables`,
//! `airlock.context_columns`, `airlock.instructions` and
//! `airlock.golden_sql`, for stock clients.
//!
//! Each principal's catalog gets its own providers, and their rows are
//! made when a query scans them, through the same filters the actions use:
//! admins see everything, others only rows about what they may query.
//! The providers hold the service weakly: the query engine they are
//! registered with is one of the service's own handles.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, Session};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::ContextService;
use crate::principal::Principal;
use crate::query::ExtraTables;
use crate::table_name::{AIRLOCK_SCHEMA, TableName};

/// The four context tables.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tables,
    Columns,
    Instructions,
    Golden,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Tables,
        Kind::Columns,
        Kind::Instructions,
        Kind::Golden,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Tables => "context_tables",
            Kind::Columns => "context_columns",
            Kind::Instructions => "instructions",
            Kind::Golden => "golden_sql",
        }
    }

    fn schema(self) -> SchemaRef {
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        let time = |name: &str| {
            Field::new(
                name,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            )
        };
        let list_of = |name: &str, nullable: bool| {
            Field::new(
                name,
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                nullable,
            )
        };
        let list = |name: &str| list_of(name, false);
        let nullable_list = |name: &str| list_of(name, true);
        Arc::new(Schema::new(match self {
            Kind::Tables => vec![
                text("table_schema", false),
                text("table_name", false),
                text("description", true),
                time("updated_at"),
            ],
            Kind::Columns => vec![
                text("table_schema", false),
                text("table_name", false),
                text("column_name", false),
                text("data_type", false),
                text("description", true),
                nullable_list("categories"),
                nullable_list("examples"),
            ],
            Kind::Instructions => vec![
                text("id", false),
                text("text", false),
                list("tables"),
                time("created_at"),
                time("updated_at"),
            ],
            Kind::Golden => vec![
                text("id", false),
                text("question", false),
                text("sql", false),
                list("tables"),
                text("swarm", true),
                text("created_by", false),
                time("created_at"),
            ],
        }))
    }

    /// The rows `principal` may see, now.
    async fn rows(
        self,
        service: &Arc<ContextService>,
        principal: &Principal,
    ) -> DfResult<RecordBatch> {
        let schema = self.schema();
        let columns: Vec<ArrayRef> = match self {
            Kind::Tables => {
                let visible = service.visible(principal);
                let notes = service.descriptions(principal, None);
                let note = |t: &TableName| notes.iter().find(|n| n.table == t.to_string());
                let names: Vec<&TableName> = visible.keys().collect();
                vec![
                    strings(names.iter().map(|t| Some(t.schema()))),
                    strings(names.iter().map(|t| Some(t.table()))),
                    strings(
                        names
                            .iter()
                            .map(|t| note(t).and_then(|n| n.description.as_deref())),
                    ),
                    times(
                        names
                            .iter()
                            .map(|t| note(t).map(|n| n.updated_at.timestamp_micros())),
                    ),
                ]
            }
            Kind::Columns => {
                let visible = service.visible(principal);
                let notes = service.descriptions(principal, None);
                let mut scanned = BTreeMap::new();
                for table in visible.keys() {
                    let seen = service
                        .scan_seen_by(principal, table)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    if let Some((_, columns)) = seen {
                        scanned.insert(table.clone(), columns);
                    }
                }
                let mut rows: Vec<ColumnRow<'_>> = Vec::new();
                for (table, columns) in &visible {
                    let note = notes.iter().find(|n| n.table == table.to_string());
                    for (column, data_type) in columns {
                        let scan = scanned
                            .get(table)
                            .and_then(|cols| cols.iter().find(|c| &c.name == column));
                        rows.push(ColumnRow {
                            table,
                            column,
                            data_type,
                            description: note
                                .and_then(|n| n.columns.get(column))
                                .map(String::as_str),
                            categories: scan.and_then(|s| s.categories.clone()),
                            examples: scan.map(|s| s.examples.clone()),
                        });
                    }
                }
                vec![
                    strings(rows.iter().map(|r| Some(r.table.schema()))),
                    strings(rows.iter().map(|r| Some(r.table.table()))),
                    strings(rows.iter().map(|r| Some(r.column.as_str()))),
                    strings(rows.iter().map(|r| Some(r.data_type.as_str()))),
                    strings(rows.iter().map(|r| r.description)),
                    nullable_lists(rows.iter().map(|r| r.categories.clone())),
                    nullable_lists(rows.iter().map(|r| r.examples.clone())),
                ]
            }
            Kind::Instructions => {
                let rules = service
                    .instructions(principal, None)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                vec![
                    strings(rules.iter().map(|r| Some(r.id.as_str()))),
                    strings(rules.iter().map(|r| Some(r.text.as_str()))),
                    lists(rules.iter().map(|r| r.tables.clone())),
                    times(rules.iter().map(|r| Some(r.created_at.timestamp_micros()))),
                    times(rules.iter().map(|r| Some(r.updated_at.timestamp_micros()))),
                ]
            }
            Kind::Golden => {
                let golden = service.golden(principal);
                vec![
                    strings(golden.iter().map(|g| Some(g.id.as_str()))),
                    strings(golden.iter().map(|g| Some(g.question.as_str()))),
                    strings(golden.iter().map(|g| Some(g.sql.as_str()))),
                    lists(golden.iter().map(|g| g.reads.keys().cloned().collect())),
                    strings(golden.iter().map(|g| g.swarm.as_deref())),
                    strings(golden.iter().map(|g| Some(g.created_by.as_str()))),
                    times(golden.iter().map(|g| Some(g.created_at.timestamp_micros()))),
                ]
            }
        };
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// One row of `airlock.context_columns`.
struct ColumnRow<'a> {
    table: &'a TableName,
    column: &'a String,
    data_type: &'a String,
    description: Option<&'a str>,
    categories: Option<Vec<String>>,
    examples: Option<Vec<String>>,
}

fn nullable_lists(values: impl Iterator<Item = Option<Vec<String>>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for list in values {
        match list {
            Some(list) => {
                for value in list {
                    builder.values().append_value(value);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

fn lists(values: impl Iterator<Item = Vec<String>>) -> ArrayRef {
    nullable_lists(values.map(Some))
}

/// Registers the context tables in every principal's catalog.
#[derive(Debug)]
pub struct ContextTables(pub Weak<ContextService>);

impl ExtraTables for ContextTables {
    fn version(&self) -> u64 {
        // Rows are made at scan time; the tables themselves never change.
        0
    }

    fn tables_for(
        &self,
        principal: &Principal,
    ) -> Vec<(TableName, SchemaRef, Arc<dyn TableProvider>)> {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| {
                let name = TableName::from_parts(AIRLOCK_SCHEMA, kind.name()).ok()?;
                let provider: Arc<dyn TableProvider> = Arc::new(ContextTable {
                    kind,
                    service: Weak::clone(&self.0),
                    principal: principal.clone(),
                });
                Some((name, kind.schema(), provider))
            })
            .collect()
    }
}

/// One context table, as one principal sees it.
#[derive(Debug)]
struct ContextTable {
    kind: Kind,
    service: Weak<ContextService>,
    principal: Principal,
}

#[async_trait]
impl TableProvider for ContextTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let service = self.service.upgrade().ok_or_else(|| {
            DataFusionError::Execution("the context store is shutting down".into())
        })?;
        let batch = self.kind.rows(&service, &self.principal).await?;
        MemTable::try_new(self.kind.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

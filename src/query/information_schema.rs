//! `information_schema.tables` and `information_schema.columns` for one
//! principal, built from the tables it may see, so that `SHOW TABLES`,
//! `SHOW COLUMNS FROM t` and queries over these two views answer with
//! exactly what the principal can query: an ungranted table or a denied
//! column never appears, a masked column appears with its type.
//!
//! DataFusion's own information schema stays off: it would also serve
//! `df_settings` (server settings such as memory limits and paths), and
//! `SHOW ALL` / `SHOW <variable>` over it. Without it those fail to plan,
//! and only the two views here exist.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableProvider;

use super::catalog::{CATALOG, VisibleTables, read_only};

/// The schema name SQL uses for these views.
pub(crate) const INFORMATION_SCHEMA: &str = "information_schema";

const TABLES: &str = "tables";
const COLUMNS: &str = "columns";

/// The two views over one principal's visible tables.
#[derive(Debug)]
pub(super) struct InformationSchema {
    tables: VisibleTables,
}

impl InformationSchema {
    pub(super) fn new(tables: VisibleTables) -> Self {
        Self { tables }
    }

    fn tables_view(&self) -> DfResult<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            text("table_catalog", false),
            text("table_schema", false),
            text("table_name", false),
            text("table_type", false),
        ]));
        let mut catalog = StringBuilder::new();
        let mut schemas = StringBuilder::new();
        let mut names = StringBuilder::new();
        let mut types = StringBuilder::new();
        for (schema_name, table, _) in self.tables.tables() {
            catalog.append_value(CATALOG);
            schemas.append_value(schema_name);
            names.append_value(table);
            types.append_value("BASE TABLE");
        }
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(catalog.finish()),
                Arc::new(schemas.finish()),
                Arc::new(names.finish()),
                Arc::new(types.finish()),
            ],
        )?)
    }

    fn columns_view(&self) -> DfResult<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            text("table_catalog", false),
            text("table_schema", false),
            text("table_name", false),
            text("column_name", false),
            Field::new("ordinal_position", DataType::UInt64, false),
            text("column_default", true),
            text("is_nullable", false),
            text("data_type", false),
        ]));
        let mut catalog = StringBuilder::new();
        let mut schemas = StringBuilder::new();
        let mut tables = StringBuilder::new();
        let mut names = StringBuilder::new();
        let mut positions = UInt64Builder::new();
        let mut defaults = StringBuilder::new();
        let mut nullable = StringBuilder::new();
        let mut types = StringBuilder::new();
        for (schema_name, table, arrow) in self.tables.tables() {
            for (position, field) in (1u64..).zip(arrow.fields().iter()) {
                catalog.append_value(CATALOG);
                schemas.append_value(schema_name);
                tables.append_value(table);
                names.append_value(field.name());
                positions.append_value(position);
                defaults.append_null();
                nullable.append_value(if field.is_nullable() { "YES" } else { "NO" });
                types.append_value(field.data_type().to_string());
            }
        }
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(catalog.finish()),
                Arc::new(schemas.finish()),
                Arc::new(tables.finish()),
                Arc::new(names.finish()),
                Arc::new(positions.finish()),
                Arc::new(defaults.finish()),
                Arc::new(nullable.finish()),
                Arc::new(types.finish()),
            ],
        )?)
    }
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn table_of(batch: RecordBatch) -> DfResult<Arc<dyn TableProvider>> {
    let schema: SchemaRef = batch.schema();
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        vec![TABLES.to_string(), COLUMNS.to_string()]
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match name {
            TABLES => table_of(self.tables_view()?).map(Some),
            COLUMNS => table_of(self.columns_view()?).map(Some),
            _ => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        matches!(name, TABLES | COLUMNS)
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(&name))
    }
}

//! The DataFusion catalog a query is planned against: `airlock.<schema>.<table>`
//! over one snapshot of the replica's tables.
//!
//! A catalog is built per query from the tables the principal may see, so
//! a table outside it does not exist for that query — in planning, in
//! error messages and in metadata answers alike. Providers are created
//! lazily, on lookup, so a catalog with thousands of tables costs nothing
//! until a query names one.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableProvider;

use crate::replica::{Replica, ReplicaTable, TableInfo, TableSnapshot};
use crate::table_name::TableName;

/// The one catalog name airlock exposes.
pub const CATALOG: &str = "airlock";

/// The tables one principal may see, grouped by schema.
#[derive(Debug, Clone)]
pub struct VisibleTables {
    replica: Arc<Replica>,
    by_schema: Arc<BTreeMap<String, BTreeMap<String, TableInfo>>>,
}

impl VisibleTables {
    /// Groups a snapshot by schema.
    pub(crate) fn new(replica: Arc<Replica>, snapshot: &TableSnapshot) -> Self {
        let mut by_schema: BTreeMap<String, BTreeMap<String, TableInfo>> = BTreeMap::new();
        for (name, info) in snapshot.iter() {
            by_schema
                .entry(name.schema().to_string())
                .or_default()
                .insert(name.table().to_string(), info.clone());
        }
        Self {
            replica,
            by_schema: Arc::new(by_schema),
        }
    }

    /// Schema names, sorted.
    pub fn schemas(&self) -> impl Iterator<Item = &str> {
        self.by_schema.keys().map(String::as_str)
    }

    /// (schema, table, Arrow schema), sorted by schema then table.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str, &SchemaRef)> {
        self.by_schema.iter().flat_map(|(s, tables)| {
            tables
                .iter()
                .map(move |(t, info)| (s.as_str(), t.as_str(), &info.schema))
        })
    }

    /// A table, if visible.
    pub fn get(&self, name: &TableName) -> Option<&TableInfo> {
        self.by_schema.get(name.schema())?.get(name.table())
    }

    /// The DataFusion catalog list for planning.
    pub(crate) fn catalog_list(&self) -> Arc<dyn CatalogProviderList> {
        Arc::new(ReplicaCatalogList {
            catalog: Arc::new(ReplicaCatalog {
                tables: self.clone(),
            }),
        })
    }
}

#[derive(Debug)]
struct ReplicaCatalogList {
    catalog: Arc<ReplicaCatalog>,
}

impl CatalogProviderList for ReplicaCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Read-only: statements that would register catalogs are refused
        // before planning, so this is never reached.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![CATALOG.to_string()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        (name == CATALOG).then(|| Arc::clone(&self.catalog) as Arc<dyn CatalogProvider>)
    }
}

#[derive(Debug)]
struct ReplicaCatalog {
    tables: VisibleTables,
}

impl CatalogProvider for ReplicaCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.tables.schemas().map(str::to_string).collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.tables.by_schema.contains_key(name).then(|| {
            Arc::new(ReplicaSchema {
                name: name.to_string(),
                tables: self.tables.clone(),
            }) as Arc<dyn SchemaProvider>
        })
    }
}

#[derive(Debug)]
struct ReplicaSchema {
    name: String,
    tables: VisibleTables,
}

#[async_trait]
impl SchemaProvider for ReplicaSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables
            .by_schema
            .get(&self.name)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Ok(table_name) = TableName::from_parts(&self.name, name) else {
            return Ok(None);
        };
        let Some(info) = self.tables.get(&table_name) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ReplicaTable::new(
            Arc::clone(&self.tables.replica),
            table_name,
            info.clone(),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables
            .by_schema
            .get(&self.name)
            .is_some_and(|t| t.contains_key(name))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(DataFusionError::Plan(format!(
            "cannot create table '{name}': airlock is read-only"
        )))
    }
}

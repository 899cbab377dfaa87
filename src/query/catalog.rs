//! The DataFusion catalog a query is planned against: `airlock.<schema>.<table>`
//! over the tables one principal may see.
//!
//! A catalog is built per principal from its access, so a table outside it
//! does not exist for that principal — in planning, in error messages and
//! in metadata answers alike — and a table inside it is reachable only
//! through the provider built for it (a governed one for restricted
//! principals). Catalogs are cached with their session state.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableProvider;

use super::information_schema::{INFORMATION_SCHEMA, InformationSchema};
use crate::principal::Principal;
use crate::table_name::TableName;

/// The one catalog name airlock exposes.
pub const CATALOG: &str = "airlock";

/// One table as a principal sees it.
#[derive(Debug, Clone)]
pub(crate) struct VisibleTable {
    /// Its schema for this principal (denied columns gone).
    pub(crate) schema: SchemaRef,
    /// The only way to read it.
    pub(crate) provider: Arc<dyn TableProvider>,
    /// The compiled row filter and masks it reads through, as text (empty
    /// when there are none): what a cached profile of it is keyed by, so
    /// two principals with different filters never share one.
    pub(crate) policy: Arc<str>,
}

/// Tables that other modules offer to queries (artifacts), each principal
/// seeing its own share. `server` registers them; `query` never imports
/// the modules behind them.
pub trait ExtraTables: Send + Sync + std::fmt::Debug {
    /// Grows whenever what any principal may read changes: sessions cached
    /// before a change are not reused after it.
    fn version(&self) -> u64;
    /// The tables `principal` may read, with their schemas and providers.
    fn tables_for(
        &self,
        principal: &Principal,
    ) -> Vec<(TableName, SchemaRef, Arc<dyn TableProvider>)>;
}

/// The tables one principal may see, grouped by schema.
#[derive(Debug, Clone, Default)]
pub struct VisibleTables {
    by_schema: Arc<BTreeMap<String, BTreeMap<String, VisibleTable>>>,
}

impl VisibleTables {
    /// Groups tables by schema.
    pub(crate) fn new(tables: impl IntoIterator<Item = (TableName, VisibleTable)>) -> Self {
        let mut by_schema: BTreeMap<String, BTreeMap<String, VisibleTable>> = BTreeMap::new();
        for (name, table) in tables {
            by_schema
                .entry(name.schema().to_string())
                .or_default()
                .insert(name.table().to_string(), table);
        }
        Self {
            by_schema: Arc::new(by_schema),
        }
    }

    /// Schema names, sorted.
    pub fn schemas(&self) -> impl Iterator<Item = &str> {
        self.by_schema.keys().map(String::as_str)
    }

    /// (schema, table, Arrow schema as seen), sorted by schema then table.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &str, &SchemaRef)> {
        self.by_schema.iter().flat_map(|(s, tables)| {
            tables
                .iter()
                .map(move |(t, table)| (s.as_str(), t.as_str(), &table.schema))
        })
    }

    /// A visible table's compiled policy text (see [`VisibleTable::policy`]).
    pub(crate) fn policy(&self, name: &TableName) -> Option<&Arc<str>> {
        self.by_schema
            .get(name.schema())?
            .get(name.table())
            .map(|t| &t.policy)
    }

    /// A visible table's schema as seen.
    pub fn get(&self, name: &TableName) -> Option<&SchemaRef> {
        self.by_schema
            .get(name.schema())?
            .get(name.table())
            .map(|t| &t.schema)
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
        // Reachable by name for SHOW TABLES, SHOW COLUMNS and queries, but
        // not listed among the schemas: metadata answers list data only.
        if name == INFORMATION_SCHEMA {
            return Some(Arc::new(InformationSchema::new(self.tables.clone())));
        }
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
        Ok(self
            .tables
            .by_schema
            .get(&self.name)
            .and_then(|t| t.get(name))
            .map(|t| Arc::clone(&t.provider)))
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
        Err(read_only(&name))
    }
}

/// What registering a table into any airlock schema answers: statements
/// that would do it are refused before planning, so this is a backstop.
pub(super) fn read_only(name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "cannot create table '{name}': airlock is read-only"
    ))
}

//! The DuckDB replica: where replicated tables live and are scanned.
//!
//! One hardened DuckDB file (`<data_dir>/replica.duckdb`) holds every
//! replicated table as `"schema"."table"`. This module owns all SQL that
//! reaches DuckDB: loads build a staging table and swap it in atomically
//! ([`StagingTable`]); queries reach it only through [`ReplicaTable`], a
//! DataFusion `TableProvider` whose scans generate their own SQL from a
//! projection, filters DataFusion already parsed and typed, and a limit
//! ([`filter_sql`]). No text an agent wrote is ever passed through.

mod filter_sql;
mod load;
mod provider;
mod scan;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use duckdb::Connection;

pub use filter_sql::filter_to_sql;
pub use load::StagingTable;
pub use provider::ReplicaTable;
pub use scan::DuckDbScanExec;
pub use types::duckdb_type;

use crate::config::DuckDbConfig;
use crate::duckdb_setup::{DuckDbResources, OpenError, open_hardened};
use crate::table_name::{RESERVED_PREFIX, TableName, TableNameError};

/// Replica failures.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The database could not be opened.
    #[error("cannot open the replica database: {0}")]
    Open(#[from] OpenError),
    /// DuckDB failed while doing `context`.
    #[error("DuckDB failed to {context}: {source}")]
    DuckDb {
        /// What airlock was doing.
        context: String,
        /// DuckDB's error.
        source: duckdb::Error,
    },
    /// The table is not in the replica.
    #[error("table '{0}' has no replica yet; run sync.start for it")]
    NoSuchTable(TableName),
    /// A source column has a type DuckDB cannot store.
    #[error("column '{column}' has type {data_type}, which the replica cannot store: {reason}")]
    UnsupportedType {
        /// Column name.
        column: String,
        /// Arrow type.
        data_type: String,
        /// Why.
        reason: String,
    },
    /// A name found in DuckDB is not a valid table name.
    #[error(transparent)]
    Name(#[from] TableNameError),
    /// Converting a batch failed.
    #[error("converting data for the replica failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl ReplicaError {
    pub(crate) fn duckdb(context: impl Into<String>) -> impl FnOnce(duckdb::Error) -> Self {
        let context = context.into();
        move |source| ReplicaError::DuckDb { context, source }
    }
}

/// What the catalog knows of one replica table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The Arrow schema scans produce.
    pub schema: SchemaRef,
    /// Rows when the snapshot was taken (tables change only by swapping).
    pub rows: u64,
}

/// The tables of the replica, as of one moment.
pub type TableSnapshot = Arc<BTreeMap<TableName, TableInfo>>;

/// The replica database.
pub struct Replica {
    // Root connection of the database instance. Readers and loaders each get
    // their own connection cloned from it, because a DuckDB connection runs
    // one statement at a time and is not Sync.
    root: Mutex<Connection>,
    tables: RwLock<TableSnapshot>,
    // Swaps (drop + rename) are serialized so two syncs of different tables
    // never interleave their catalog changes.
    swap_lock: Mutex<()>,
    active_scans: Arc<AtomicUsize>,
    path: PathBuf,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens (or creates) `<data_dir>/replica.duckdb`, hardened, drops
    /// staging tables left by an interrupted sync, and reads the catalog.
    pub fn open(data_dir: &Path, config: &DuckDbConfig) -> Result<Arc<Self>, ReplicaError> {
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let resources = DuckDbResources {
            threads,
            memory_limit: config.memory_limit,
            temp_directory: data_dir.join("tmp").join("replica"),
            max_temp_directory_size: config.max_temp_directory_size,
        };
        let path = data_dir.join("replica.duckdb");
        let root = open_hardened(&path, data_dir, &resources)?;
        let replica = Arc::new(Self {
            root: Mutex::new(root),
            tables: RwLock::new(Arc::new(BTreeMap::new())),
            swap_lock: Mutex::new(()),
            active_scans: Arc::new(AtomicUsize::new(0)),
            path,
        });
        replica.drop_leftover_staging()?;
        replica.refresh()?;
        Ok(replica)
    }

    /// A new connection to the replica.
    pub(crate) fn connect(&self) -> Result<Connection, ReplicaError> {
        self.root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_clone()
            .map_err(ReplicaError::duckdb("open a connection"))
    }

    /// The current tables and schemas.
    pub fn tables(&self) -> TableSnapshot {
        Arc::clone(&self.tables.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A table's schema, if it has a replica.
    pub fn schema(&self, name: &TableName) -> Option<SchemaRef> {
        self.tables().get(name).map(|info| Arc::clone(&info.schema))
    }

    /// How many DuckDB scans are running right now (for tests and metrics).
    pub fn active_scans(&self) -> usize {
        self.active_scans.load(Ordering::SeqCst)
    }

    /// Drops a table's replica. Returns whether it existed.
    pub fn drop_table(&self, name: &TableName) -> Result<bool, ReplicaError> {
        let existed = self.schema(name).is_some();
        let _swap = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let conn = self.connect()?;
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", name.quoted()))
            .map_err(ReplicaError::duckdb(format!("drop {name}")))?;
        self.update_snapshot(|tables| {
            tables.remove(name);
        });
        Ok(existed)
    }

    /// Re-reads one table's schema after a load replaced it.
    pub(crate) fn refresh_table(&self, name: &TableName) -> Result<(), ReplicaError> {
        let info = table_info(&self.connect()?, name)?;
        self.update_snapshot(|tables| {
            tables.insert(name.clone(), info);
        });
        Ok(())
    }

    /// Publishes a changed copy of the table snapshot. Queries planned
    /// earlier keep the snapshot they started with.
    fn update_snapshot(&self, change: impl FnOnce(&mut BTreeMap<TableName, TableInfo>)) {
        let mut guard = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let mut tables = BTreeMap::clone(&guard);
        change(&mut tables);
        *guard = Arc::new(tables);
    }

    /// Re-reads every table and schema from DuckDB's catalog.
    pub(crate) fn refresh(&self) -> Result<(), ReplicaError> {
        let conn = self.connect()?;
        let names = list_tables(&conn)?;
        let mut tables = BTreeMap::new();
        for name in names {
            let info = table_info(&conn, &name)?;
            tables.insert(name, info);
        }
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tables);
        Ok(())
    }

    fn drop_leftover_staging(&self) -> Result<(), ReplicaError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(
                "SELECT schema_name, table_name FROM duckdb_tables() \
                 WHERE database_name = current_database() AND starts_with(table_name, ?)",
            )
            .map_err(ReplicaError::duckdb("list staging tables"))?;
        let leftovers: Vec<(String, String)> = stmt
            .query_map([RESERVED_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(ReplicaError::duckdb("list staging tables"))?;
        for (schema, table) in leftovers {
            tracing::info!(%schema, %table, "dropping staging table left by an interrupted sync");
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS {}.{}",
                crate::table_name::quote_ident(&schema),
                crate::table_name::quote_ident(&table)
            ))
            .map_err(ReplicaError::duckdb("drop a staging table"))?;
        }
        Ok(())
    }
}

fn list_tables(conn: &Connection) -> Result<Vec<TableName>, ReplicaError> {
    let mut stmt = conn
        .prepare(
            "SELECT schema_name, table_name FROM duckdb_tables() \
             WHERE database_name = current_database() AND NOT starts_with(table_name, ?) \
             ORDER BY 1, 2",
        )
        .map_err(ReplicaError::duckdb("list tables"))?;
    let rows: Vec<(String, String)> = stmt
        .query_map([RESERVED_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(ReplicaError::duckdb("list tables"))?;
    let mut names = Vec::with_capacity(rows.len());
    for (schema, table) in rows {
        match TableName::from_parts(&schema, &table) {
            Ok(name) => names.push(name),
            // Only airlock writes this file; a foreign table is skipped, not served.
            Err(e) => {
                tracing::warn!(%schema, %table, error = %e, "ignoring replica table with an invalid name")
            }
        }
    }
    Ok(names)
}

/// The Arrow schema DuckDB produces when scanning the table (exactly what
/// scans will yield, so plans and streams agree) and its row count.
fn table_info(conn: &Connection, name: &TableName) -> Result<TableInfo, ReplicaError> {
    let context = || format!("read the schema of {name}");
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {} LIMIT 0", name.quoted()))
        .map_err(ReplicaError::duckdb(context()))?;
    let schema = stmt
        .query_arrow([])
        .map_err(ReplicaError::duckdb(context()))?
        .get_schema();
    let rows: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}", name.quoted()),
            [],
            |row| row.get(0),
        )
        .map_err(ReplicaError::duckdb(context()))?;
    Ok(TableInfo {
        schema,
        rows: u64::try_from(rows).unwrap_or_default(),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A replica in a temp dir with small resource settings.
    pub(crate) fn replica(dir: &Path) -> Arc<Replica> {
        let config = DuckDbConfig {
            threads: 2,
            memory_limit: bytesize::ByteSize::mib(512),
            max_temp_directory_size: bytesize::ByteSize::mib(512),
        };
        Replica::open(dir, &config).unwrap()
    }

    /// Creates a table directly with DuckDB SQL (tests only).
    pub(crate) fn create(replica: &Replica, sql: &str) {
        replica.connect().unwrap().execute_batch(sql).unwrap();
        replica.refresh().unwrap();
    }
}

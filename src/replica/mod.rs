//! The DuckDB replica: where replicated tables live and are scanned.
//!
//! One hardened DuckDB file (`<data_dir>/replica.duckdb`) holds every
//! replicated table as `"schema"."table"`. This module owns all SQL that
//! reaches DuckDB: loads build a staging table and swap it in atomically
//! ([`StagingTable`]); queries reach it only through [`ReplicaTable`], a
//! DataFusion `TableProvider` whose scans generate their own SQL from a
//! projection, filters DataFusion already parsed and typed, and a limit
//! ([`filter_sql`]). No text an agent wrote is ever passed through.

mod arrow_bridge;
mod commits;
mod filter_sql;
mod ingest;
mod load;
mod physical;
mod provider;
mod scan;
mod settings;
pub(crate) mod sql_expr;
mod sql_functions;
mod sql_values;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use duckdb::Connection;

pub use filter_sql::{filter_sql, is_pushable_filter};
pub use load::{BatchSource, Merge, Pull, StagingTable};
pub use physical::PhysicalTable;
pub use provider::{ReplicaTable, is_point_predicate};
pub use scan::DuckDbScanExec;
pub use settings::DuckDbConfig;
pub use types::duckdb_type;

use crate::duckdb_setup::{Database, DuckDbResources, OpenError, open_hardened};
use crate::table_name::{RESERVED_PREFIX, TableName, TableNameError, quote_ident};
use physical::{Graveyard, Parsed, RETIRED_TABLE, SYNC_STATE_TABLE, version_name};

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
    /// A merge found the table replaced since its load began.
    #[error("table '{0}' was replaced while new rows were loading; sync it again")]
    Replaced(TableName),
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

/// Casts between DuckDB's and the plan's types fail on a value that does
/// not fit, rather than silently turning it into NULL.
pub(crate) const STRICT_CAST: datafusion::arrow::compute::CastOptions<'static> =
    datafusion::arrow::compute::CastOptions {
        safe: false,
        format_options: datafusion::arrow::util::display::FormatOptions::new(),
    };

/// What the catalog knows of one replica table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The Arrow schema scans produce.
    pub schema: SchemaRef,
    /// Rows in this version.
    pub rows: u64,
    /// The version's DuckDB table; holding it keeps the version alive.
    pub physical: Arc<PhysicalTable>,
    /// When the last in-place merge into this DuckDB table committed
    /// (nanoseconds since the epoch; 0: none since the server started), so
    /// that "physical table and count" does not hide a change (a merge that
    /// only updates rows keeps the count). Not persisted: after a restart
    /// a merged table reads as changed once, never as unchanged.
    pub merged_at: u64,
}

/// The tables of the replica, as of one moment.
pub type TableSnapshot = Arc<BTreeMap<TableName, TableInfo>>;

/// The replica database.
pub struct Replica {
    tables: RwLock<TableSnapshot>,
    // Commits and removals change the snapshot and the retired list
    // together; one at a time keeps the two in step.
    commit_lock: Mutex<()>,
    // In-place merges commit under the write side; partitioned scans pin
    // their connections' snapshot under the read side.
    pins: RwLock<()>,
    next_version: AtomicU64,
    graveyard: Graveyard,
    active_scans: Arc<AtomicUsize>,
    path: PathBuf,
    // Readers and loaders each get their own connection from it, because a
    // DuckDB connection runs one statement at a time and is not Sync.
    database: Database,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens (or creates) `<data_dir>/replica.duckdb`, hardened; drops what
    /// an interrupted run left (loads that never committed, retired
    /// versions) and reads the catalog.
    pub fn open(data_dir: &Path, config: &DuckDbConfig) -> Result<Arc<Self>, ReplicaError> {
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let temp_directory = data_dir.join("tmp").join("replica");
        let resources = DuckDbResources {
            threads,
            memory_limit: config.memory_limit,
            temp_directory: temp_directory.clone(),
            max_temp_directory_size: config.max_temp_directory_size,
        };
        let path = data_dir.join("replica.duckdb");
        // Nothing airlock runs in DuckDB reads files; the one allowed
        // directory is its own spill space, never the secrets beside it.
        let database = open_hardened(&path, &temp_directory, &resources)?;
        let root = database
            .connect()
            .map_err(ReplicaError::duckdb("open a connection"))?;
        root.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {RETIRED_TABLE} (physical VARCHAR PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS {SYNC_STATE_TABLE} (logical VARCHAR PRIMARY KEY, state VARCHAR NOT NULL);"
        ))
        .map_err(ReplicaError::duckdb("create the retired-versions list"))?;
        let graveyard_conn = database
            .connect()
            .map_err(ReplicaError::duckdb("open a connection"))?;
        let graveyard = Graveyard::start(graveyard_conn).map_err(|e| ReplicaError::DuckDb {
            context: "start the table-dropping thread".into(),
            source: duckdb::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let (tables, max_version) = recover(&root, &graveyard)?;
        Ok(Arc::new(Self {
            tables: RwLock::new(Arc::new(tables)),
            commit_lock: Mutex::new(()),
            pins: RwLock::new(()),
            next_version: AtomicU64::new(max_version + 1),
            graveyard,
            active_scans: Arc::new(AtomicUsize::new(0)),
            path,
            database,
        }))
    }

    /// A new connection to the replica.
    pub(crate) fn connect(&self) -> Result<Connection, ReplicaError> {
        self.database
            .connect()
            .map_err(ReplicaError::duckdb("open a connection"))
    }

    /// Whether the database answers a query.
    pub fn check(&self) -> Result<(), ReplicaError> {
        self.connect()?
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
            .map(|_| ())
            .map_err(ReplicaError::duckdb("run a query"))
    }

    /// Bytes of memory DuckDB uses now (buffer pool, query state).
    pub fn memory_bytes(&self) -> Result<u64, ReplicaError> {
        self.connect()?
            .query_row(
                "SELECT coalesce(sum(memory_usage_bytes), 0)::BIGINT FROM duckdb_memory()",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|bytes| bytes.max(0) as u64)
            .map_err(ReplicaError::duckdb("read duckdb_memory()"))
    }

    /// A table airlock keeps for itself in the replica database (the audit
    /// trail): created by `ddl` if missing, stored as `quoted`, queried as
    /// `logical`, and never listed with the replicated tables.
    pub(crate) fn system_table(
        &self,
        logical: TableName,
        quoted: &str,
        ddl: &str,
    ) -> Result<TableInfo, ReplicaError> {
        let conn = self.connect()?;
        conn.execute_batch(ddl)
            .map_err(ReplicaError::duckdb(format!("create {quoted}")))?;
        table_info(&conn, self.graveyard.named(logical, quoted.to_string()))
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

    /// Creates `schema` if it is missing. Two connections creating one
    /// schema at once conflict in DuckDB's catalog, so creations take
    /// turns (under the commit lock: both are short catalog changes).
    pub(crate) fn ensure_schema(
        &self,
        conn: &Connection,
        schema: &str,
    ) -> Result<(), ReplicaError> {
        let _commit = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .map_err(ReplicaError::duckdb(format!("create the schema {schema}")))
    }

    /// A version number for a new load, unique in this database.
    pub(crate) fn allocate_version(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::SeqCst)
    }

    /// Removes a table's replica: new queries no longer see it, and its
    /// data is dropped when the last running scan of it ends. Returns
    /// whether it existed.
    pub fn drop_table(&self, name: &TableName) -> Result<bool, ReplicaError> {
        let _commit = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let conn = self.connect()?;
        conn.execute(
            &format!("DELETE FROM {SYNC_STATE_TABLE} WHERE logical = ?"),
            [name.to_string()],
        )
        .map_err(ReplicaError::duckdb(format!("remove {name}")))?;
        let Some(info) = self.tables().get(name).cloned() else {
            return Ok(false);
        };
        conn.execute(
            &format!("INSERT OR IGNORE INTO {RETIRED_TABLE} VALUES (?)"),
            [info.physical.quoted()],
        )
        .map_err(ReplicaError::duckdb(format!("remove {name}")))?;
        info.physical.retire();
        self.update_snapshot(|tables| {
            tables.remove(name);
        });
        Ok(true)
    }

    /// Bytes a table version takes in the database file (its blocks).
    /// Data DuckDB has not checkpointed yet (still in the WAL) is not counted.
    pub fn table_bytes(&self, physical: &PhysicalTable) -> Result<u64, ReplicaError> {
        let conn = self.connect()?;
        // 256 KiB is DuckDB's default block size.
        let sql = format!(
            "SELECT count(DISTINCT block_id) * 262144 FROM pragma_storage_info('{}') WHERE block_id >= 0",
            physical.quoted().replace('\'', "''")
        );
        conn.query_row(&sql, [], |row| row.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(ReplicaError::duckdb(format!(
                "measure {}",
                physical.logical()
            )))
    }

    /// Publishes a changed copy of the table snapshot. Queries planned
    /// earlier keep the snapshot they started with.
    fn update_snapshot(&self, change: impl FnOnce(&mut BTreeMap<TableName, TableInfo>)) {
        let mut guard = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let mut tables = BTreeMap::clone(&guard);
        change(&mut tables);
        *guard = Arc::new(tables);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.graveyard.stop();
    }
}

/// Cleans up after an earlier run and reads the current versions: drops
/// retired versions and uncommitted loads, keeps the newest version of
/// each table. Returns the tables and the highest version seen.
fn recover(
    conn: &Connection,
    graveyard: &Graveyard,
) -> Result<(BTreeMap<TableName, TableInfo>, u64), ReplicaError> {
    let retired: Vec<String> = conn
        .prepare(&format!("SELECT physical FROM {RETIRED_TABLE}"))
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .map_err(ReplicaError::duckdb("read the retired-versions list"))?;
    for quoted in retired {
        physical::drop_retired(conn, &quoted).map_err(ReplicaError::duckdb(format!(
            "drop retired version {quoted}"
        )))?;
    }
    let rows: Vec<(String, String)> = conn
        .prepare(
            "SELECT schema_name, table_name FROM duckdb_tables() \
             WHERE database_name = current_database() AND NOT starts_with(table_name, ?) \
             ORDER BY 1, 2",
        )
        .and_then(|mut stmt| {
            stmt.query_map([RESERVED_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(ReplicaError::duckdb("list tables"))?;
    // Per logical table: the newest version, its DuckDB name, its quoted name.
    let mut newest: BTreeMap<TableName, (u64, String, String)> = BTreeMap::new();
    let mut max_version = 0;
    let mut obsolete = Vec::new();
    for (schema, table) in rows {
        let quoted = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        match physical::parse(&table) {
            Some(Parsed::Loading) => obsolete.push(quoted),
            Some(Parsed::Version {
                table: logical,
                version,
            }) => {
                let Ok(name) = TableName::from_parts(&schema, &logical) else {
                    tracing::warn!(%schema, %table, "ignoring replica table with an invalid name");
                    continue;
                };
                max_version = max_version.max(version);
                match newest.get(&name) {
                    Some((kept, _, _)) if *kept > version => obsolete.push(quoted),
                    Some((_, _, older)) => {
                        obsolete.push(older.clone());
                        newest.insert(name, (version, table, quoted));
                    }
                    None => {
                        newest.insert(name, (version, table, quoted));
                    }
                }
            }
            // Only airlock writes this file; a foreign table is skipped, not served.
            None => {
                tracing::warn!(%schema, %table, "ignoring replica table airlock did not create")
            }
        }
    }
    for quoted in obsolete {
        tracing::info!(table = %quoted, "dropping a table version left by an interrupted run");
        conn.execute_batch(&format!("DROP TABLE IF EXISTS {quoted}"))
            .map_err(ReplicaError::duckdb(format!("drop {quoted}")))?;
    }
    let mut tables = BTreeMap::new();
    for (name, (_, table, _)) in newest {
        let info = table_info(conn, graveyard.table(&name, &table))?;
        tables.insert(name, info);
    }
    Ok((tables, max_version))
}

/// The Arrow schema DuckDB produces when scanning a version (exactly what
/// scans will yield, so plans and streams agree) and its row count.
fn table_info(conn: &Connection, physical: Arc<PhysicalTable>) -> Result<TableInfo, ReplicaError> {
    let table = physical.quoted();
    let context = || format!("read the schema of {table}");
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} LIMIT 0"))
        .map_err(ReplicaError::duckdb(context()))?;
    let schema = stmt
        .query_arrow([])
        .map_err(ReplicaError::duckdb(context()))?
        .get_schema();
    let schema = arrow_bridge::schema(&schema)?;
    let rows: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .map_err(ReplicaError::duckdb(context()))?;
    Ok(TableInfo {
        schema,
        rows: u64::try_from(rows).unwrap_or_default(),
        physical,
        merged_at: 0,
    })
}

#[cfg(test)]
pub(crate) mod test_support;

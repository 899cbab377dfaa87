//! Loading a table: into a new version, published on commit.
//!
//! A load creates the table's next version under a `$loading` name (see
//! [`physical`](super::physical)); queries never see it, because they read
//! the versions their snapshot names. [`StagingTable::commit`] renames it
//! and retires the previous version in one DuckDB transaction, then
//! publishes it: queries already running finish on the version they
//! started with, new ones read the new version, none ever sees a mix.
//! Dropping an uncommitted [`StagingTable`] (error, cancel) drops the
//! loading table; a process killed mid-load leaves one behind, which
//! [`Replica::open`](super::Replica::open) removes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, RecordBatchReader};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::scalar::ScalarValue;
use duckdb::Connection;

use super::ingest::Ingest;
use super::physical::loading_name;
use super::types::{column_definitions, duckdb_type, storage_schema, to_storage};
use super::{Replica, ReplicaError};
use crate::table_name::{TableName, quote_ident};

/// How long DuckDB's threads wait for a source's next batch before the
/// insert under way ends. DuckDB's threads are shared with queries, so a
/// slow source must not hold them; the load goes on with a new insert when
/// the source has more.
const PATIENCE: Duration = Duration::from_millis(20);

/// The batches of a load, pulled by DuckDB's threads as they insert them.
pub trait BatchSource: Send + 'static {
    /// The next batch (with the schema given at creation), waiting at most
    /// `patience` (`None`: as long as it takes).
    fn next_batch(&mut self, patience: Option<Duration>) -> Pull;
}

/// What a [`BatchSource`] has.
#[derive(Debug)]
pub enum Pull {
    /// A batch.
    Batch(RecordBatch),
    /// Nothing yet.
    Waiting,
    /// No more batches.
    Done,
}

/// A table being loaded; becomes the replica of `target` on commit.
pub struct StagingTable {
    replica: Arc<Replica>,
    conn: Connection,
    target: TableName,
    version: u64,
    loading: String,
    storage: SchemaRef,
    rows: u64,
    committed: bool,
}

impl std::fmt::Debug for StagingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingTable")
            .field("target", &self.target)
            .field("loading", &self.loading)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl StagingTable {
    /// Creates an empty new version of `target` with `schema`'s columns.
    pub fn create(
        replica: &Arc<Replica>,
        target: &TableName,
        schema: &Schema,
    ) -> Result<Self, ReplicaError> {
        let columns = column_definitions(schema)?;
        let version = replica.allocate_version();
        let loading = loading_name(target, version);
        let conn = replica.connect()?;
        replica.ensure_schema(&conn, target.schema())?;
        conn.execute_batch(&format!(
            "CREATE TABLE {schema}.{loading} ({columns});",
            schema = quote_ident(target.schema()),
            loading = quote_ident(&loading),
        ))
        .map_err(ReplicaError::duckdb(format!(
            "create a new version of {target}"
        )))?;
        Ok(Self {
            replica: Arc::clone(replica),
            conn,
            target: target.clone(),
            version,
            loading,
            storage: storage_schema(schema),
            rows: 0,
            committed: false,
        })
    }

    /// Loads every batch `source` has, in order, into the new version.
    ///
    /// DuckDB pulls the batches from its own threads and inserts them in
    /// parallel ([`ingest`](super::ingest)), keeping their order. While
    /// the source keeps up, that is one insert; when it stalls longer than
    /// [`PATIENCE`], the insert ends and the next starts once it has more.
    /// On error the rows loaded stay in the new version, which is dropped
    /// unless committed.
    pub fn load(&mut self, source: impl BatchSource) -> Result<(), ReplicaError> {
        let source = Arc::new(Mutex::new(source));
        let mut ingest = Ingest::open(
            &self.replica.database,
            format!(
                "{}.{}",
                quote_ident(self.target.schema()),
                quote_ident(&self.loading)
            ),
        )?;
        loop {
            // Wait for the source outside DuckDB.
            let first = match lock(&source).next_batch(None) {
                Pull::Batch(batch) => batch,
                Pull::Waiting => continue,
                Pull::Done => return Ok(()),
            };
            let segment = Segment {
                first: Some(first),
                source: Arc::clone(&source),
                storage: Arc::clone(&self.storage),
                done: false,
                failure: Arc::new(Mutex::new(None)),
                finished: Arc::new(AtomicBool::new(false)),
            };
            let failure = Arc::clone(&segment.failure);
            let finished = Arc::clone(&segment.finished);
            let inserted = ingest.insert(Arc::clone(&self.storage), Box::new(segment));
            if let Some(error) = lock(&failure).take() {
                return Err(error);
            }
            self.rows += inserted?;
            if finished.load(Ordering::Acquire) {
                return Ok(());
            }
        }
    }

    /// Rows loaded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows of the target's current version (0 before its first).
    pub fn base_rows(&self) -> u64 {
        self.replica
            .tables()
            .get(&self.target)
            .map_or(0, |info| info.rows)
    }

    /// The largest value of `column` among the rows loaded so far (the
    /// next watermark), `None` when there are none.
    pub fn max_of(&self, column: &str) -> Result<Option<ScalarValue>, ReplicaError> {
        let context = || format!("read the largest {column} of the load of {}", self.target);
        let sql = format!(
            "SELECT max({}) FROM {}.{}",
            quote_ident(column),
            quote_ident(self.target.schema()),
            quote_ident(&self.loading)
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(ReplicaError::duckdb(context()))?;
        let batches: Vec<RecordBatch> = stmt
            .query_arrow([])
            .map_err(ReplicaError::duckdb(context()))?
            .map(super::arrow_bridge::record_batch)
            .collect::<Result<_, _>>()?;
        let value = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) => ScalarValue::try_from_array(batch.column(0), 0).map_err(|e| {
                ReplicaError::UnsupportedType {
                    column: column.to_string(),
                    data_type: batch.column(0).data_type().to_string(),
                    reason: e.to_string(),
                }
            })?,
            None => return Ok(None),
        };
        Ok((!value.is_null()).then_some(value))
    }

    /// Makes this version the replica of the target; `state` (the sync
    /// state, e.g. a watermark) is stored in the same transaction. Returns
    /// the row count.
    pub fn commit(self, state: Option<&str>) -> Result<u64, ReplicaError> {
        self.commit_merge(&Merge::Replace, state)
    }

    /// Like [`Self::commit`], combining the loaded rows with the current
    /// version as `merge` says.
    ///
    /// With the same columns, an append or upsert changes the current
    /// version in place, in one DuckDB transaction (replaced rows deleted,
    /// loaded ones inserted): the cost follows the rows loaded, not the
    /// table's size. Queries see all of it or none (a partitioned scan pins
    /// one snapshot for its partitions, see [`Replica::pin`]). When columns
    /// were added, the merge writes a new version instead: the current
    /// rows, minus those replaced, with NULL in the new columns, then the
    /// loaded ones.
    pub fn commit_merge(mut self, merge: &Merge, state: Option<&str>) -> Result<u64, ReplicaError> {
        let base = self.replica.tables().get(&self.target).cloned();
        let same_columns = base.as_ref().is_some_and(|base| {
            base.schema.fields().iter().map(|f| f.name()).eq(self
                .storage
                .fields()
                .iter()
                .map(|f| f.name()))
        });
        if let (Some(base), Merge::Append | Merge::Upsert { .. }, true) =
            (&base, merge, same_columns)
        {
            let delta = format!(
                "{}.{}",
                quote_ident(self.target.schema()),
                quote_ident(&self.loading)
            );
            let current = base.physical.quoted();
            let upsert = Upsert::of(merge);
            let statements = format!(
                "{delete} INSERT INTO {current} SELECT * FROM {delta}{latest};",
                delete = upsert.as_ref().map_or_else(String::new, |u| format!(
                    "DELETE FROM {current} AS b WHERE EXISTS (SELECT 1 FROM {delta} d WHERE {});",
                    u.matches
                )),
                latest = upsert.as_ref().map_or("", |u| u.latest.as_str()),
            );
            let rows =
                self.replica
                    .commit_in_place(&self.conn, &self.target, base, &statements, state)?;
            // The loaded rows are in; their table goes (Drop).
            return Ok(rows);
        }
        if let (Some(base), Merge::Append | Merge::Upsert { .. }) = (base, merge) {
            let schema = quote_ident(self.target.schema());
            let delta = format!("{schema}.{}", quote_ident(&self.loading));
            let mut carried = Vec::new();
            for field in self.storage.fields() {
                let name = quote_ident(field.name());
                carried.push(if base.schema.field_with_name(field.name()).is_ok() {
                    format!("b.{name}")
                } else {
                    format!(
                        "CAST(NULL AS {}) AS {name}",
                        duckdb_type(field.name(), field.data_type())?
                    )
                });
            }
            let upsert = Upsert::of(merge);
            let dedup = upsert.as_ref().map_or("", |u| u.latest.as_str());
            let replaced = upsert.as_ref().map_or_else(String::new, |u| {
                format!(
                    " WHERE NOT EXISTS (SELECT 1 FROM delta d WHERE {})",
                    u.matches
                )
            });
            let version = self.replica.allocate_version();
            let merged = loading_name(&self.target, version);
            let sql = format!(
                "CREATE TABLE {schema}.{merged_q} AS
                 WITH delta AS (SELECT * FROM {delta}{dedup})
                 SELECT {carried} FROM {base} b{replaced}
                 UNION ALL SELECT * FROM delta;
                 DROP TABLE {delta};",
                merged_q = quote_ident(&merged),
                carried = carried.join(", "),
                base = base.physical.quoted(),
            );
            self.conn
                .execute_batch(&sql)
                .map_err(ReplicaError::duckdb(format!(
                    "merge the new rows into {}",
                    self.target
                )))?;
            self.loading = merged;
            self.version = version;
            self.rows = self
                .conn
                .query_row(
                    &format!(
                        "SELECT count(*) FROM {schema}.{}",
                        quote_ident(&self.loading)
                    ),
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .map(|n| n.max(0) as u64)
                .map_err(ReplicaError::duckdb(format!(
                    "count the rows of {}",
                    self.target
                )))?;
        }
        self.replica
            .publish(&self.conn, &self.target, &self.loading, self.version, state)?;
        self.committed = true;
        Ok(self.rows)
    }
}

/// How a load's rows combine with the table's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// The load is the whole table.
    Replace,
    /// The load's rows are added to the current ones.
    Append,
    /// The load's rows replace current rows with the same key; among
    /// loaded rows with one key, the one with the largest cursor wins.
    Upsert {
        /// Primary key columns.
        key: Vec<String>,
        /// Cursor column.
        cursor: String,
    },
}

/// The SQL of an upsert's two halves.
struct Upsert {
    /// Keeps, of the loaded rows (a `SELECT`'s suffix), each key's one with
    /// the largest cursor.
    latest: String,
    /// Matches a loaded row `d` with a current row `b` of the same key.
    matches: String,
}

impl Upsert {
    fn of(merge: &Merge) -> Option<Self> {
        let Merge::Upsert { key, cursor } = merge else {
            return None;
        };
        let keys: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
        Some(Self {
            latest: format!(
                " QUALIFY row_number() OVER (PARTITION BY {} ORDER BY {} DESC NULLS LAST) = 1",
                keys.join(", "),
                quote_ident(cursor)
            ),
            matches: keys
                .iter()
                .map(|k| format!("d.{k} IS NOT DISTINCT FROM b.{k}"))
                .collect::<Vec<_>>()
                .join(" AND "),
        })
    }
}

/// One insert's share of a load, as the Arrow reader DuckDB pulls from.
struct Segment<S> {
    first: Option<RecordBatch>,
    source: Arc<Mutex<S>>,
    storage: SchemaRef,
    done: bool,
    // A batch that cannot be stored: kept whole for `load` to return
    // (DuckDB would pass on only its text).
    failure: Arc<Mutex<Option<ReplicaError>>>,
    // The source has no more batches.
    finished: Arc<AtomicBool>,
}

impl<S: BatchSource> Segment<S> {
    fn store(&self, batch: &RecordBatch) -> Result<RecordBatch, ReplicaError> {
        if batch.num_columns() != self.storage.fields().len() {
            return Err(ReplicaError::UnsupportedType {
                column: String::new(),
                data_type: format!("{} columns", batch.num_columns()),
                reason: format!(
                    "the new version has {} columns; the source changed during the load",
                    self.storage.fields().len()
                ),
            });
        }
        to_storage(batch, &self.storage)
    }
}

impl<S: BatchSource> Iterator for Segment<S> {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let batch = match self.first.take() {
            Some(batch) => batch,
            None => match lock(&self.source).next_batch(Some(PATIENCE)) {
                Pull::Batch(batch) => batch,
                Pull::Waiting => {
                    self.done = true;
                    return None;
                }
                Pull::Done => {
                    self.done = true;
                    self.finished.store(true, Ordering::Release);
                    return None;
                }
            },
        };
        Some(self.store(&batch).map_err(|error| {
            self.done = true;
            // arrow-rs hands the text to DuckDB as a C string and panics
            // (aborting, under DuckDB) on a NUL, which a value quoted in a
            // cast error may hold.
            let message = error.to_string().replace('\0', "\\0");
            *lock(&self.failure) = Some(error);
            ArrowError::ExternalError(message.into())
        }))
    }
}

impl<S: BatchSource> RecordBatchReader for Segment<S> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.storage)
    }
}

/// Locks, ignoring poisoning: a panic elsewhere leaves nothing here
/// half-changed.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for StagingTable {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let drop = format!(
            "DROP TABLE IF EXISTS {}.{}",
            quote_ident(self.target.schema()),
            quote_ident(&self.loading)
        );
        if let Err(e) = self.conn.execute_batch(&drop) {
            // Replica::open removes it on the next start.
            tracing::warn!(table = %self.loading, error = %e, "could not drop an uncommitted load");
        }
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;

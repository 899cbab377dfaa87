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
            .collect();
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
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;
    use crate::replica::test_support::replica;

    impl BatchSource for std::vec::IntoIter<RecordBatch> {
        fn next_batch(&mut self, _patience: Option<Duration>) -> Pull {
            self.next().map_or(Pull::Done, Pull::Batch)
        }
    }

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(
                    datafusion::arrow::compute::cast(
                        &StringArray::from(names.to_vec()),
                        &DataType::Utf8View,
                    )
                    .unwrap(),
                ),
            ],
        )
        .unwrap()
    }

    /// Every DuckDB table except airlock's own bookkeeping.
    fn physical_tables(replica: &Replica) -> Vec<String> {
        let conn = replica.connect().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT schema_name || '.' || table_name FROM duckdb_tables() \
                 WHERE NOT starts_with(table_name, '__airlock') ORDER BY 1",
            )
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn count(replica: &Replica, name: &TableName) -> i64 {
        let table = replica.tables()[name].physical.quoted().to_string();
        replica
            .connect()
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// Waits for the graveyard thread to drop what it was sent.
    fn settle(replica: &Replica, expected: &[&str]) {
        for _ in 0..200 {
            if physical_tables(replica) == expected {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(physical_tables(replica), expected);
    }

    #[test]
    fn commit_publishes_a_new_version_and_abort_leaves_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let b = batch(&[1, 2, 3], &["a", "b", "c"]);

        let mut staging = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        staging.load(vec![b.clone()].into_iter()).unwrap();
        // Not visible before commit.
        assert!(replica.schema(&name).is_none());
        assert_eq!(staging.commit(None).unwrap(), 3);
        assert_eq!(count(&replica, &name), 3);
        assert_eq!(replica.tables()[&name].physical.quoted(), "\"s\".\"t$1\"");
        let schema = replica.schema(&name).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);

        // A failed second load (dropped before commit) leaves the first intact.
        let mut staging = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        staging.load(vec![batch(&[9], &["z"])].into_iter()).unwrap();
        drop(staging);
        assert_eq!(count(&replica, &name), 3);
        assert_eq!(physical_tables(&replica), ["s.t$1"]);
    }

    /// The `id` column of a table's current version, in storage order.
    fn ids_in_order(replica: &Replica, name: &TableName) -> Vec<i64> {
        replica
            .connect()
            .unwrap()
            .prepare(&format!(
                "SELECT id FROM {} ORDER BY rowid",
                replica.tables()[name].physical.quoted()
            ))
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Hands out batches with a stall longer than DuckDB's patience before
    /// each one but the first.
    struct Stalling {
        batches: std::vec::IntoIter<RecordBatch>,
        first: bool,
    }

    impl BatchSource for Stalling {
        fn next_batch(&mut self, patience: Option<Duration>) -> Pull {
            if let (false, Some(patience)) = (self.first, patience) {
                std::thread::sleep(patience);
                // A stall: the insert under way must end here.
                self.first = true;
                return Pull::Waiting;
            }
            self.first = false;
            self.batches.next().map_or(Pull::Done, Pull::Batch)
        }
    }

    #[test]
    fn a_stalling_source_loads_every_row_in_order_over_several_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let batches: Vec<RecordBatch> = (0..5)
            .map(|i| batch(&[i * 2, i * 2 + 1], &["x", "y"]))
            .collect();
        let schema = batches[0].schema();
        let mut staging = StagingTable::create(&replica, &name, &schema).unwrap();
        staging
            .load(Stalling {
                batches: batches.into_iter(),
                first: true,
            })
            .unwrap();
        assert_eq!(staging.rows(), 10);
        staging.commit(None).unwrap();
        assert_eq!(ids_in_order(&replica, &name), (0..10).collect::<Vec<i64>>());
    }

    #[test]
    fn concurrent_loads_keep_their_rows_apart_and_leave_no_view_behind() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let loads: Vec<_> = (0..2i64)
            .map(|t| {
                let replica = Arc::clone(&replica);
                std::thread::spawn(move || {
                    let name = TableName::parse(&format!("s.t{t}")).unwrap();
                    // One insert per batch, interleaved with the other load's.
                    let batches: Vec<RecordBatch> =
                        (0..20).map(|i| batch(&[t * 1000 + i], &["x"])).collect();
                    let schema = batches[0].schema();
                    let mut staging = StagingTable::create(&replica, &name, &schema).unwrap();
                    staging
                        .load(Stalling {
                            batches: batches.into_iter(),
                            first: true,
                        })
                        .unwrap();
                    staging.commit(None).unwrap();
                })
            })
            .collect();
        for load in loads {
            load.join().unwrap();
        }
        let conn = replica.connect().unwrap();
        for t in 0..2i64 {
            let name = TableName::parse(&format!("s.t{t}")).unwrap();
            assert_eq!(
                ids_in_order(&replica, &name),
                (t * 1000..t * 1000 + 20).collect::<Vec<i64>>()
            );
        }
        let views: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '__airlock_ingest%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(views, 0);
    }

    #[test]
    fn a_batch_that_cannot_be_stored_fails_the_load_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let good = batch(&[1], &["a"]);
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![2]))],
        )
        .unwrap();
        let mut staging = StagingTable::create(&replica, &name, &good.schema()).unwrap();
        let err = staging.load(vec![good, narrow].into_iter()).unwrap_err();
        assert!(
            matches!(&err, ReplicaError::UnsupportedType { reason, .. } if reason.contains("source changed")),
            "{err}"
        );
        drop(staging);
        assert!(replica.tables().is_empty());
        assert!(physical_tables(&replica).is_empty());
    }

    #[test]
    fn an_old_version_lives_while_a_reader_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let b = batch(&[1, 2, 3], &["a", "b", "c"]);
        let mut first = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        first.load(vec![b.clone()].into_iter()).unwrap();
        first.commit(None).unwrap();
        // A reader (a running scan) holds version 1.
        let reader = replica.tables()[&name].clone();

        let mut second = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        second.load(vec![batch(&[7], &["x"])].into_iter()).unwrap();
        second.commit(None).unwrap();
        assert_eq!(count(&replica, &name), 1);
        assert_eq!(
            physical_tables(&replica),
            ["s.t$1", "s.t$2"],
            "v1 dropped under a reader"
        );

        // The reader finishes: version 1 goes.
        drop(reader);
        settle(&replica, &["s.t$2"]);

        // Removal retires the current version the same way.
        assert!(replica.drop_table(&name).unwrap());
        assert!(replica.tables().is_empty());
        settle(&replica, &[]);
    }

    fn rows(replica: &Replica, name: &TableName) -> Vec<(i64, Option<String>)> {
        let table = replica.tables()[name].physical.quoted().to_string();
        let conn = replica.connect().unwrap();
        let mut stmt = conn
            .prepare(&format!("SELECT id, name FROM {table} ORDER BY id"))
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn merges_write_a_new_version_with_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let first = batch(&[1, 2, 3], &["a", "b", "c"]);
        let mut staging = StagingTable::create(&replica, &name, &first.schema()).unwrap();
        staging.load(vec![first].into_iter()).unwrap();
        staging.commit(Some("w1")).unwrap();
        assert_eq!(replica.sync_state(&name).unwrap().as_deref(), Some("w1"));

        // Upsert: key 2 twice in the load, the larger cursor (here: the id
        // column doubles as cursor, so use name) wins; key 4 is new.
        let delta = batch(&[2, 4, 2], &["b1", "d", "b2"]);
        let mut staging = StagingTable::create(&replica, &name, &delta.schema()).unwrap();
        staging.load(vec![delta].into_iter()).unwrap();
        assert_eq!(
            staging.max_of("id").unwrap(),
            Some(ScalarValue::Int64(Some(4)))
        );
        let merge = Merge::Upsert {
            key: vec!["id".to_string()],
            cursor: "name".to_string(),
        };
        assert_eq!(staging.commit_merge(&merge, Some("w2")).unwrap(), 4);
        assert_eq!(
            rows(&replica, &name),
            [
                (1, Some("a".into())),
                (2, Some("b2".into())),
                (3, Some("c".into())),
                (4, Some("d".into()))
            ]
        );
        assert_eq!(replica.sync_state(&name).unwrap().as_deref(), Some("w2"));

        // An upsert that only updates keeps the DuckDB table and the row
        // count; its merge time still tells the change apart.
        // (Compared by name and numbers only: holding a TableInfo keeps its
        // DuckDB table alive.)
        let version = |r: &Replica| {
            let info = &r.tables()[&name];
            (
                info.physical.quoted().to_string(),
                info.rows,
                info.merged_at,
            )
        };
        let before = version(&replica);
        let update = batch(&[1], &["a2"]);
        let mut staging = StagingTable::create(&replica, &name, &update.schema()).unwrap();
        staging.load(vec![update].into_iter()).unwrap();
        assert_eq!(staging.commit_merge(&merge, Some("w3")).unwrap(), 4);
        let after = version(&replica);
        assert_eq!((&after.0, after.1), (&before.0, before.1));
        assert!(after.2 > before.2, "{after:?} {before:?}");

        // Append with a new column: old rows get NULL in it.
        let wide = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
        ]));
        let more = RecordBatch::try_new(
            Arc::clone(&wide),
            vec![
                Arc::new(Int64Array::from(vec![5])),
                Arc::new(StringArray::from(vec!["e"])),
                Arc::new(Int64Array::from(vec![50])),
            ],
        )
        .unwrap();
        let mut staging = StagingTable::create(&replica, &name, &wide).unwrap();
        staging.load(vec![more].into_iter()).unwrap();
        assert_eq!(staging.commit_merge(&Merge::Append, None).unwrap(), 5);
        let schema = replica.schema(&name).unwrap();
        assert_eq!(schema.fields().len(), 3);
        let conn = replica.connect().unwrap();
        let table = replica.tables()[&name].physical.quoted().to_string();
        let extras: Vec<Option<i64>> = conn
            .prepare(&format!("SELECT extra FROM {table} ORDER BY id"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(extras, [None, None, None, None, Some(50)]);
        // No state given: the watermark is gone with the version it described.
        assert_eq!(replica.sync_state(&name).unwrap(), None);
        // Only the newest version and no leftovers remain.
        drop(conn);
        settle(&replica, &[&table.replace('"', "")]);
    }

    #[test]
    fn what_a_crash_leaves_is_cleaned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        // A kill mid-load leaves a $loading table; a kill after a commit but
        // before the old version was dropped leaves it in the retired list;
        // two committed versions of one table keep only the newest.
        let replica = crate::replica::test_support::create(
            dir.path(),
            replica,
            "CREATE SCHEMA s;
             CREATE TABLE s.\"t$3$loading\" (id BIGINT);
             CREATE TABLE s.\"u$4\" (id BIGINT);
             INSERT INTO main.__airlock_retired VALUES ('\"s\".\"u$4\"');
             CREATE TABLE s.\"v$5\" (id BIGINT);
             CREATE TABLE s.\"v$6\" AS SELECT 1 AS id;",
        );
        assert_eq!(physical_tables(&replica), ["s.v$6"]);
        let names: Vec<String> = replica.tables().keys().map(ToString::to_string).collect();
        assert_eq!(names, ["s.v"]);
        // New versions continue after the highest seen.
        assert_eq!(replica.allocate_version(), 7);
    }
}

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

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use duckdb::Connection;

use super::physical::loading_name;
use super::types::{column_definitions, storage_schema, to_storage};
use super::{Replica, ReplicaError};
use crate::table_name::{TableName, quote_ident};

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
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE {schema}.{loading} ({columns});",
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

    /// Appends a batch (with the schema given at creation).
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), ReplicaError> {
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
        let batch = to_storage(batch, &self.storage)?;
        let rows = batch.num_rows() as u64;
        let mut appender = self
            .conn
            .appender_to_db(&self.loading, self.target.schema())
            .map_err(ReplicaError::duckdb(format!("append to {}", self.target)))?;
        appender
            .append_record_batch(batch)
            .and_then(|()| appender.flush())
            .map_err(ReplicaError::duckdb(format!("append to {}", self.target)))?;
        self.rows += rows;
        Ok(())
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Makes this version the replica of the target. Returns the row count.
    pub fn commit(mut self) -> Result<u64, ReplicaError> {
        self.replica
            .publish(&self.conn, &self.target, &self.loading, self.version)?;
        self.committed = true;
        Ok(self.rows)
    }
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
        staging.append(&b).unwrap();
        // Not visible before commit.
        assert!(replica.schema(&name).is_none());
        assert_eq!(staging.commit().unwrap(), 3);
        assert_eq!(count(&replica, &name), 3);
        assert_eq!(replica.tables()[&name].physical.quoted(), "\"s\".\"t$1\"");
        let schema = replica.schema(&name).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);

        // A failed second load (dropped before commit) leaves the first intact.
        let mut staging = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        staging.append(&batch(&[9], &["z"])).unwrap();
        drop(staging);
        assert_eq!(count(&replica, &name), 3);
        assert_eq!(physical_tables(&replica), ["s.t$1"]);
    }

    #[test]
    fn an_old_version_lives_while_a_reader_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let b = batch(&[1, 2, 3], &["a", "b", "c"]);
        let mut first = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        first.append(&b).unwrap();
        first.commit().unwrap();
        // A reader (a running scan) holds version 1.
        let reader = replica.tables()[&name].clone();

        let mut second = StagingTable::create(&replica, &name, &b.schema()).unwrap();
        second.append(&batch(&[7], &["x"])).unwrap();
        second.commit().unwrap();
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

//! Loading a table: stage, then swap in one transaction.
//!
//! A load appends into a hidden staging table (`__airlock_staging_<id>`, in
//! the target's schema). Queries never see it: the catalog skips the reserved
//! prefix. [`StagingTable::commit`] replaces the target by the staging table
//! in a single DuckDB transaction, so readers see either the whole old table
//! or the whole new one. Dropping an uncommitted [`StagingTable`] (error,
//! cancel) drops the staging table; a process killed mid-load leaves one
//! behind, which [`Replica::open`](super::Replica::open) removes.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use duckdb::Connection;

use super::types::{column_definitions, storage_schema, to_storage};
use super::{Replica, ReplicaError};
use crate::table_name::{RESERVED_PREFIX, TableName, quote_ident};

/// A table being loaded; becomes the replica of `target` on commit.
pub struct StagingTable {
    replica: Arc<Replica>,
    conn: Connection,
    target: TableName,
    staging: String,
    storage: SchemaRef,
    rows: u64,
    committed: bool,
}

impl std::fmt::Debug for StagingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingTable")
            .field("target", &self.target)
            .field("staging", &self.staging)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl StagingTable {
    /// Creates an empty staging table for `target` with `schema`'s columns.
    /// `load_id` makes the staging name unique.
    pub fn create(
        replica: &Arc<Replica>,
        target: &TableName,
        schema: &Schema,
        load_id: &str,
    ) -> Result<Self, ReplicaError> {
        let columns = column_definitions(schema)?;
        let suffix: String = load_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(32)
            .collect();
        let staging = format!("{RESERVED_PREFIX}_staging_{}_{suffix}", target.table());
        let conn = replica.connect()?;
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE {schema}.{staging} ({columns});",
            schema = quote_ident(target.schema()),
            staging = quote_ident(&staging),
        ))
        .map_err(ReplicaError::duckdb(format!(
            "create a staging table for {target}"
        )))?;
        Ok(Self {
            replica: Arc::clone(replica),
            conn,
            target: target.clone(),
            staging,
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
                    "the staging table has {} columns; the source changed during the load",
                    self.storage.fields().len()
                ),
            });
        }
        let batch = to_storage(batch, &self.storage)?;
        let mut appender = self
            .conn
            .appender_to_db(&self.staging, self.target.schema())
            .map_err(ReplicaError::duckdb(format!("append to {}", self.target)))?;
        appender
            .append_record_batch(batch.clone())
            .and_then(|()| appender.flush())
            .map_err(ReplicaError::duckdb(format!("append to {}", self.target)))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Replaces the target with the staging table atomically and refreshes
    /// the replica's catalog. Returns the row count.
    pub fn commit(mut self) -> Result<u64, ReplicaError> {
        let target = self.target.clone();
        {
            let _swap = self
                .replica
                .swap_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let swap = format!(
                "BEGIN TRANSACTION;
                 DROP TABLE IF EXISTS {target_q};
                 ALTER TABLE {schema}.{staging} RENAME TO {table};
                 COMMIT;",
                target_q = target.quoted(),
                schema = quote_ident(target.schema()),
                staging = quote_ident(&self.staging),
                table = quote_ident(target.table()),
            );
            if let Err(source) = self.conn.execute_batch(&swap) {
                // Leave no transaction open on this connection; Drop then
                // removes the staging table.
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(ReplicaError::DuckDb {
                    context: format!("swap in the new replica of {target}"),
                    source,
                });
            }
            self.committed = true;
        }
        self.replica.refresh_table(&target)?;
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
            quote_ident(&self.staging)
        );
        if let Err(e) = self.conn.execute_batch(&drop) {
            // Replica::open removes it on the next start.
            tracing::warn!(staging = %self.staging, error = %e, "could not drop staging table");
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

    fn count(replica: &Replica, table: &str) -> i64 {
        replica
            .connect()
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn commit_swaps_and_abort_leaves_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let replica = replica(dir.path());
        let name = TableName::parse("s.t").unwrap();
        let b = batch(&[1, 2, 3], &["a", "b", "c"]);

        let mut staging = StagingTable::create(&replica, &name, &b.schema(), "job1").unwrap();
        staging.append(&b).unwrap();
        // Not visible before commit.
        assert!(replica.schema(&name).is_none());
        assert_eq!(staging.commit().unwrap(), 3);
        assert_eq!(count(&replica, "s.t"), 3);
        let schema = replica.schema(&name).unwrap();
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);

        // A failed second load (dropped before commit) leaves the first intact.
        let mut staging = StagingTable::create(&replica, &name, &b.schema(), "job2").unwrap();
        staging.append(&batch(&[9], &["z"])).unwrap();
        drop(staging);
        assert_eq!(count(&replica, "s.t"), 3);
        let leftovers: i64 = replica
            .connect()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, '__airlock')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn staging_left_by_a_crash_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What a kill mid-load leaves: a staging table that Drop never removed.
            let replica = replica(dir.path());
            crate::replica::test_support::create(
                &replica,
                "CREATE SCHEMA s; CREATE TABLE s.__airlock_staging_t_crash (id BIGINT);",
            );
        }
        let replica = replica(dir.path());
        let leftovers: i64 = replica
            .connect()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, '__airlock')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
        assert!(replica.tables().is_empty());
    }
}

//! Committing to the replica: publishing a loaded version, merging rows
//! into the current one in place, and the table's sync state written with
//! either; and the other side of an in-place merge, scans that pin one
//! snapshot over several connections so that each sees all of a merge or
//! none of it.

use duckdb::Connection;

use super::{
    PhysicalTable, RETIRED_TABLE, Replica, ReplicaError, SYNC_STATE_TABLE, TableInfo, table_info,
    version_name,
};
use crate::table_name::{TableName, quote_ident};

impl Replica {
    /// The sync state stored with a table's current version (the
    /// incremental watermark), written by the commit that published it.
    pub fn sync_state(&self, name: &TableName) -> Result<Option<String>, ReplicaError> {
        let conn = self.connect()?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT state FROM {SYNC_STATE_TABLE} WHERE logical = ?"
            ))
            .map_err(ReplicaError::duckdb(format!(
                "read the sync state of {name}"
            )))?;
        let mut rows = stmt
            .query_map([name.to_string()], |row| row.get::<_, String>(0))
            .map_err(ReplicaError::duckdb(format!(
                "read the sync state of {name}"
            )))?;
        rows.next()
            .transpose()
            .map_err(ReplicaError::duckdb(format!(
                "read the sync state of {name}"
            )))
    }

    /// Makes the loaded table `loading` (version `version`) the replica of
    /// `name`: renamed, the previous version retired and `state` stored in
    /// one transaction, then published to new queries. So a watermark
    /// advances exactly when the rows it covers become visible.
    pub(crate) fn publish(
        &self,
        conn: &Connection,
        name: &TableName,
        loading: &str,
        version: u64,
        state: Option<&str>,
    ) -> Result<(), ReplicaError> {
        let _commit = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.tables().get(name).cloned();
        let committed = version_name(name, version);
        let context = || format!("swap in the new replica of {name}");
        let swap = (|| {
            conn.execute_batch(&format!(
                "BEGIN TRANSACTION; ALTER TABLE {}.{} RENAME TO {};",
                quote_ident(name.schema()),
                quote_ident(loading),
                quote_ident(&committed)
            ))?;
            if let Some(previous) = &previous {
                conn.execute(
                    &format!("INSERT OR IGNORE INTO {RETIRED_TABLE} VALUES (?)"),
                    [previous.physical.quoted()],
                )?;
            }
            write_sync_state(conn, name, state)?;
            conn.execute_batch("COMMIT")
        })();
        if let Err(source) = swap {
            // Leave no transaction open; the caller drops the loading table.
            let _ = conn.execute_batch("ROLLBACK");
            return Err(ReplicaError::DuckDb {
                context: context(),
                source,
            });
        }
        let info = table_info(conn, self.graveyard.table(name, &committed))?;
        if let Some(previous) = previous {
            previous.physical.retire();
        }
        self.update_snapshot(|tables| {
            tables.insert(name.clone(), info);
        });
        Ok(())
    }

    /// Changes `base` (the current version of `name`) in place by
    /// `statements`, storing `state` in the same transaction; returns the
    /// row count after. The commit waits for partitioned scans pinning
    /// their snapshot (see [`Replica::pin`]), so each sees all of the
    /// change or none of it.
    pub(crate) fn commit_in_place(
        &self,
        conn: &Connection,
        name: &TableName,
        base: &TableInfo,
        statements: &str,
        state: Option<&str>,
    ) -> Result<u64, ReplicaError> {
        let _commit = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let context = || format!("merge the new rows into {name}");
        let tables = self.tables();
        let current = tables.get(name).map(|c| c.physical.quoted());
        if current != Some(base.physical.quoted()) {
            return Err(ReplicaError::Replaced(name.clone()));
        }
        let merged = (|| {
            conn.execute_batch(&format!("BEGIN TRANSACTION; {statements}"))?;
            write_sync_state(conn, name, state)?;
            let _pins = self.pins.write().unwrap_or_else(|p| p.into_inner());
            conn.execute_batch("COMMIT")
        })();
        if let Err(source) = merged {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(ReplicaError::DuckDb {
                context: context(),
                source,
            });
        }
        let rows = conn
            .query_row(
                &format!("SELECT count(*) FROM {}", base.physical.quoted()),
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(ReplicaError::duckdb(format!("count the rows of {name}")))?;
        let info = TableInfo {
            rows,
            merged_at: chrono::Utc::now()
                .timestamp_nanos_opt()
                .map_or(base.merged_at + 1, |n| n.max(0) as u64),
            ..base.clone()
        };
        self.update_snapshot(|tables| {
            tables.insert(name.clone(), info);
        });
        Ok(rows)
    }

    /// Opens `count` connections that all read the database as of one
    /// moment: each starts a transaction on `table` while no in-place
    /// merge commits. A scan split over several connections uses them so
    /// that its partitions agree.
    pub(crate) fn pin(
        &self,
        table: &PhysicalTable,
        count: usize,
    ) -> Result<Vec<Connection>, ReplicaError> {
        let _pins = self.no_commits();
        (0..count)
            .map(|_| {
                let conn = self.connect()?;
                begin_snapshot(&conn, table)?;
                Ok(conn)
            })
            .collect()
    }

    /// Holds off in-place merge commits while held: a transaction that
    /// takes its snapshot meanwhile sees each merge whole or not at all.
    fn no_commits(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.pins.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stores (or, with `None`, forgets) a table's sync state, inside the
/// caller's transaction.
fn write_sync_state(
    conn: &Connection,
    name: &TableName,
    state: Option<&str>,
) -> Result<(), duckdb::Error> {
    match state {
        Some(state) => conn.execute(
            &format!("INSERT OR REPLACE INTO {SYNC_STATE_TABLE} VALUES (?, ?)"),
            [name.to_string().as_str(), state],
        )?,
        None => conn.execute(
            &format!("DELETE FROM {SYNC_STATE_TABLE} WHERE logical = ?"),
            [name.to_string()],
        )?,
    };
    Ok(())
}

/// Begins a transaction on `conn` and takes its snapshot now. DuckDB takes
/// it when the transaction first reads a table's storage — not when a
/// statement is prepared, nor (DuckDB 2) for a `LIMIT 0` it answers
/// without scanning: reading one row makes that now.
fn begin_snapshot(conn: &Connection, table: &PhysicalTable) -> Result<(), ReplicaError> {
    conn.execute_batch(&format!(
        "BEGIN TRANSACTION; SELECT rowid FROM {} LIMIT 1;",
        table.quoted()
    ))
    .map_err(ReplicaError::duckdb("start a scan"))
}

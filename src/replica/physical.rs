//! Physical tables: every load of a table is a new DuckDB table, a version.
//!
//! The logical table `sales.orders` is stored as `"sales"."orders$7"`; a
//! load in progress is `"sales"."orders$8$loading"` and becomes
//! `"sales"."orders$8"` by a rename when it commits. Registered names cannot
//! contain `$`, so these never collide with them. Queries read the version
//! their snapshot names, so a query — all its partitions included — reads
//! one version from start to end, whatever loads commit meanwhile.
//!
//! A superseded or removed version is *retired*: written to the durable
//! `__airlock_retired` list (in the same transaction as the commit that
//! supersedes it), then dropped by the [`Graveyard`] as soon as the last scan
//! holding it ends. Whatever a crash leaves behind — retired versions not yet
//! dropped, `$loading` tables, older versions — is cleaned when the replica
//! opens.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use duckdb::Connection;

use crate::table_name::{TableName, quote_ident};

/// The durable list of retired versions (schema `main`; the catalog skips
/// every `__airlock` name).
pub(crate) const RETIRED_TABLE: &str = "main.__airlock_retired";

/// Per-table sync state (watermarks), committed with the version it
/// describes.
pub(crate) const SYNC_STATE_TABLE: &str = "main.__airlock_sync_state";

const LOADING_SUFFIX: &str = "$loading";

/// The DuckDB name of version `version` of `logical` (unquoted table part).
pub(crate) fn version_name(logical: &TableName, version: u64) -> String {
    format!("{}${version}", logical.table())
}

/// The DuckDB name of a load in progress.
pub(crate) fn loading_name(logical: &TableName, version: u64) -> String {
    format!("{}{LOADING_SUFFIX}", version_name(logical, version))
}

/// What a DuckDB table name says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A committed version (`orders$7`), or a plain table (`orders`,
    /// version 0, as tests create them).
    Version {
        /// The logical table part.
        table: String,
        /// The version.
        version: u64,
    },
    /// A load that never committed.
    Loading,
}

/// Parses a DuckDB table name; `None` for names airlock did not make.
pub(crate) fn parse(name: &str) -> Option<Parsed> {
    if name.ends_with(LOADING_SUFFIX) {
        return Some(Parsed::Loading);
    }
    match name.split_once('$') {
        None => Some(Parsed::Version {
            table: name.to_string(),
            version: 0,
        }),
        Some((table, version)) => Some(Parsed::Version {
            table: table.to_string(),
            version: version.parse().ok()?,
        }),
    }
}

/// One version of a table, shared by the snapshot and by every scan reading
/// it. When retired and no longer shared, it is dropped.
pub struct PhysicalTable {
    logical: TableName,
    quoted: String,
    retired: AtomicBool,
    graveyard: mpsc::Sender<Burial>,
}

impl std::fmt::Debug for PhysicalTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.quoted)
    }
}

impl PartialEq for PhysicalTable {
    fn eq(&self, other: &Self) -> bool {
        self.quoted == other.quoted
    }
}

impl PhysicalTable {
    /// `"schema"."table$version"`, for generated SQL.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }

    /// The table name queries use.
    pub fn logical(&self) -> &TableName {
        &self.logical
    }

    /// Marks the version for dropping once nothing reads it. The caller has
    /// already recorded it in the durable retired list.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

impl Drop for PhysicalTable {
    fn drop(&mut self) {
        if self.retired.load(Ordering::SeqCst) {
            // If the graveyard is gone the process is stopping; the retired
            // list makes the next start drop it.
            let _ = self.graveyard.send(Burial::Drop(self.quoted.clone()));
        }
    }
}

/// What the graveyard thread is asked to do.
pub(crate) enum Burial {
    /// Drop this retired version.
    Drop(String),
    /// Exit, releasing the database.
    Stop,
}

/// Drops retired versions on a thread of its own (drops happen when the
/// last scan ends, often inside an async task, where DuckDB must not block).
#[derive(Debug)]
pub(crate) struct Graveyard {
    sender: mpsc::Sender<Burial>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Graveyard {
    /// Starts the dropping thread on `conn`.
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Burial>();
        let thread = std::thread::Builder::new()
            .name("airlock-graveyard".into())
            .spawn(move || {
                for burial in receiver {
                    let Burial::Drop(quoted) = burial else { break };
                    if let Err(e) = drop_retired(&conn, &quoted) {
                        tracing::warn!(table = %quoted, error = %e, "could not drop a retired table version; the next start will");
                    }
                }
            })?;
        Ok(Self {
            sender,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for it, so its connection is closed when
    /// the replica is (a reopen in the same process must find the file free).
    pub(crate) fn stop(&self) {
        let _ = self.sender.send(Burial::Stop);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }

    /// A handle for version `version` of `logical`.
    pub(crate) fn table(&self, logical: &TableName, physical_table: &str) -> Arc<PhysicalTable> {
        self.named(
            logical.clone(),
            format!(
                "{}.{}",
                quote_ident(logical.schema()),
                quote_ident(physical_table)
            ),
        )
    }

    /// A handle for a table airlock keeps itself (never retired, so never
    /// dropped), stored as `quoted` and read as `logical`.
    pub(crate) fn named(&self, logical: TableName, quoted: String) -> Arc<PhysicalTable> {
        Arc::new(PhysicalTable {
            logical,
            quoted,
            retired: AtomicBool::new(false),
            graveyard: self.sender.clone(),
        })
    }
}

/// Drops a retired version and forgets it, in one transaction.
pub(crate) fn drop_retired(conn: &Connection, quoted: &str) -> Result<(), duckdb::Error> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = conn
        .execute_batch(&format!("DROP TABLE IF EXISTS {quoted}"))
        .and_then(|()| {
            conn.execute(
                &format!("DELETE FROM {RETIRED_TABLE} WHERE physical = ?"),
                [quoted],
            )
        })
        .and_then(|_| conn.execute_batch("COMMIT"));
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let logical = TableName::parse("s.orders").unwrap();
        assert_eq!(version_name(&logical, 7), "orders$7");
        assert_eq!(
            parse("orders$7"),
            Some(Parsed::Version {
                table: "orders".into(),
                version: 7
            })
        );
        assert_eq!(parse(&loading_name(&logical, 8)), Some(Parsed::Loading));
        assert_eq!(
            parse("orders"),
            Some(Parsed::Version {
                table: "orders".into(),
                version: 0
            })
        );
        assert_eq!(parse("orders$x"), None);
    }
}

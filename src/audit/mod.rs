//! The audit trail: one record per request — handshake, query, prepared
//! statement, metadata call, action — whatever its outcome.
//!
//! Records go through a bounded queue to one writer thread, which inserts
//! them in batches into a hidden table of the replica database
//! (`main.__airlock_audit`), so they survive restarts, and deletes those
//! older than `audit.retention`. Admins read them as the table
//! `airlock.audit` with ordinary SQL; nobody else can name it.
//!
//! Secrets never enter a record: handshake credentials are not recorded
//! (only the user name tried), bearer tokens are never read here, and
//! action bodies pass through [`crate::redact::json_body`] first.

mod handle;
mod postgres;
mod postgres_table;
#[cfg(test)]
mod postgres_tests;
mod stream;

pub use handle::{AuditHandle, Outcome};
pub use postgres_table::AuditTable;
pub use stream::AuditedStream;

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use duckdb::types::Value;
use duckdb::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::replica::{Replica, ReplicaError, TableInfo};
use crate::table_name::TableName;

/// The schema admins query the audit trail under (one of
/// [`crate::table_name::RESERVED_SCHEMAS`]).
pub const AUDIT_SCHEMA: &str = crate::table_name::RESERVED_SCHEMAS[0];

/// Where records are stored (schema `main`, which the catalog never lists).
const STORED_AS: &str = "main.__airlock_audit";

const DDL: &str = "CREATE TABLE IF NOT EXISTS main.__airlock_audit (
    time TIMESTAMPTZ NOT NULL,
    request VARCHAR NOT NULL,
    principal_kind VARCHAR,
    principal VARCHAR,
    swarm VARCHAR,
    token_id VARCHAR,
    remote_addr VARCHAR,
    statement VARCHAR,
    tables VARCHAR,
    columns VARCHAR,
    policy VARCHAR,
    outcome VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    rows BIGINT,
    bytes BIGINT NOT NULL,
    duration_ms DOUBLE NOT NULL,
    truncated BOOLEAN NOT NULL
)";

/// Records waiting for the writer at most; past it a request's record is
/// dropped with an error log rather than stalling the request.
const QUEUE: usize = 100_000;

/// Records per insert transaction at most.
const BATCH: usize = 2_000;

/// How long a record may wait in the queue before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How long the writer waits before trying a shared store again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often old records are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Audit trail settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long records are kept; older ones are deleted hourly.
    #[serde(with = "crate::duration_text")]
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// One request, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When the request arrived.
    pub time: DateTime<Utc>,
    /// The RPC and what it carried, e.g. `DoAction grant.set`.
    pub request: String,
    /// `admin`, `swarm` or `agent`; none when authentication failed.
    pub principal_kind: Option<String>,
    /// The principal's name (or the user name a failed handshake tried).
    pub principal: Option<String>,
    /// The principal's swarm.
    pub swarm: Option<String>,
    /// Id of the token presented (never the token itself).
    pub token_id: Option<String>,
    /// The client's address.
    pub remote_addr: Option<String>,
    /// The SQL text, or an action's redacted JSON body.
    pub statement: Option<String>,
    /// Tables the query named, comma-separated.
    pub tables: Option<String>,
    /// Columns the query read from storage (`schema.table.column`).
    pub columns: Option<String>,
    /// The policy applied to those tables (JSON), or `unrestricted`.
    pub policy: Option<String>,
    /// ok, denied or error.
    pub outcome: Outcome,
    /// The gRPC status code name.
    pub status: String,
    /// Why it was denied or failed.
    pub reason: Option<String>,
    /// Rows returned, for results.
    pub rows: Option<u64>,
    /// Bytes of response messages sent.
    pub bytes: u64,
    /// From arrival to the last response message.
    pub duration: Duration,
    /// Whether the row cap cut the result.
    pub truncated: bool,
}

enum Message {
    Record(Box<AuditRecord>),
    Flush(SyncSender<()>),
}

/// Where the writer puts records.
enum Sink {
    /// The node's replica database.
    Replica(Connection),
    /// Postgres shared by a cluster's nodes.
    Postgres {
        pool: deadpool_postgres::Pool,
        runtime: tokio::runtime::Handle,
        node: String,
        /// Days whose partition exists.
        partitions: std::collections::BTreeSet<chrono::NaiveDate>,
    },
}

impl Sink {
    fn insert(&mut self, records: &[AuditRecord]) -> Result<(), String> {
        match self {
            Sink::Replica(conn) => insert(conn, records).map_err(|e| e.to_string()),
            Sink::Postgres {
                pool,
                runtime,
                node,
                partitions,
            } => runtime.block_on(postgres::insert(pool, node, records, partitions)),
        }
    }

    /// Whether a failed write is worth trying again (a store across the
    /// network comes back; the local file does not fail that way).
    fn retries(&self) -> bool {
        matches!(self, Sink::Postgres { .. })
    }

    fn purge(&self, retention: Duration) {
        match self {
            Sink::Replica(conn) => purge(conn, retention),
            Sink::Postgres { pool, runtime, .. } => {
                match runtime.block_on(postgres::purge(pool, retention)) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(partitions = n, "dropped audit partitions past retention")
                    }
                    Err(e) => tracing::warn!(error = %e, "dropping old audit partitions failed"),
                }
            }
        }
    }
}

/// Where admins read the trail: the replica's table, or Postgres.
#[derive(Debug, Clone)]
pub enum AuditSource {
    /// The hidden table of this node's replica.
    Replica(TableInfo),
    /// The cluster's shared table.
    Postgres(std::sync::Arc<AuditTable>),
}

/// The audit trail's writer and the table admins query.
pub struct AuditLog {
    sender: Mutex<Option<SyncSender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    source: AuditSource,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the audit table in the replica (creating it if needed) and
    /// starts the writer, which first deletes records older than
    /// `retention`.
    pub fn open(replica: &Replica, retention: Duration) -> Result<Arc<Self>, ReplicaError> {
        let table = replica.system_table(Self::table_name(), STORED_AS, DDL)?;
        let conn = replica.connect()?;
        Self::start(Sink::Replica(conn), retention, AuditSource::Replica(table)).map_err(|e| {
            ReplicaError::DuckDb {
                context: "start the audit writer thread".into(),
                source: duckdb::Error::ToSqlConversionFailure(Box::new(e)),
            }
        })
    }

    /// The trail of a cluster, in the Postgres its nodes share: records
    /// carry this node's name, and every node reads all of them.
    pub async fn open_shared(
        pool: deadpool_postgres::Pool,
        node: String,
        retention: Duration,
    ) -> Result<Arc<Self>, crate::meta::MetaError> {
        postgres::create(&pool)
            .await
            .map_err(crate::meta::MetaError::Postgres)?;
        let table = Arc::new(AuditTable::new(pool.clone()));
        let sink = Sink::Postgres {
            pool,
            runtime: tokio::runtime::Handle::current(),
            node,
            partitions: Default::default(),
        };
        Self::start(sink, retention, AuditSource::Postgres(table))
            .map_err(|e| crate::meta::MetaError::Postgres(format!("start the audit writer: {e}")))
    }

    fn start(sink: Sink, retention: Duration, source: AuditSource) -> std::io::Result<Arc<Self>> {
        let (sender, receiver) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || write_records(sink, &receiver, retention))?;
        Ok(Arc::new(Self {
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            source,
        }))
    }

    /// `airlock.audit`.
    pub fn table_name() -> TableName {
        TableName::builtin(AUDIT_SCHEMA, "audit")
    }

    /// Where admins read the trail, for the admin catalog.
    pub fn source(&self) -> AuditSource {
        self.source.clone()
    }

    /// Queues a record for writing. Never blocks a request: if the writer
    /// has fallen `QUEUE` records behind, the record is logged and dropped.
    pub fn record(&self, record: AuditRecord) {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = sender.as_ref() else {
            tracing::error!(request = %record.request, "audit record after shutdown");
            return;
        };
        match sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Record(record))) => {
                crate::telemetry::audit_dropped();
                tracing::error!(request = %record.request, "audit queue full; record dropped");
            }
            Err(_) => {
                crate::telemetry::audit_dropped();
                tracing::error!("audit writer stopped; record dropped");
            }
        }
    }

    /// Waits until every record queued so far is written (at most `wait`).
    pub fn flush(&self, wait: Duration) {
        let (done, written) = sync_channel(1);
        let sent = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.send(Message::Flush(done)).is_ok());
        if sent == Some(true) {
            let _ = written.recv_timeout(wait);
        }
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub fn shutdown(&self) {
        drop(self.sender.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer thread: batches records into insert transactions until the
/// sender is dropped, purging old records hourly.
fn write_records(mut sink: Sink, receiver: &Receiver<Message>, retention: Duration) {
    let mut pending: Vec<AuditRecord> = Vec::new();
    let mut waiting: Vec<SyncSender<()>> = Vec::new();
    let mut last_purge: Option<Instant> = None;
    loop {
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
            sink.purge(retention);
            last_purge = Some(Instant::now());
        }
        let stop = match receiver.recv_timeout(FLUSH_EVERY) {
            Ok(Message::Record(record)) => {
                pending.push(*record);
                false
            }
            Ok(Message::Flush(done)) => {
                waiting.push(done);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // Gather a batch: until the first record has waited FLUSH_EVERY, a
        // batch is full, or someone waits for a flush. One transaction per
        // request would commit (and sync DuckDB's log) several times per
        // query, on the cores the queries need.
        let mut stop = stop;
        let gathering = Instant::now();
        while !stop && !pending.is_empty() && waiting.is_empty() && pending.len() < BATCH {
            let left = FLUSH_EVERY.saturating_sub(gathering.elapsed());
            if left.is_zero() {
                break;
            }
            match receiver.recv_timeout(left) {
                Ok(Message::Record(record)) => pending.push(*record),
                Ok(Message::Flush(done)) => waiting.push(done),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
        }
        // Then whatever else is queued, up to a batch.
        while pending.len() < BATCH {
            match receiver.try_recv() {
                Ok(Message::Record(record)) => pending.push(*record),
                Ok(Message::Flush(done)) => waiting.push(done),
                Err(_) => break,
            }
        }
        let mut keep = false;
        if !pending.is_empty() {
            match sink.insert(&pending) {
                Ok(()) => {
                    let now = Utc::now();
                    for record in &pending {
                        let ended = record.time
                            + chrono::Duration::from_std(record.duration).unwrap_or_default();
                        crate::telemetry::audit_written((now - ended).to_std().unwrap_or_default());
                    }
                }
                Err(e) if sink.retries() && !stop && pending.len() < QUEUE => {
                    // Postgres away (a restart, a failover): keep the
                    // records and try again, rather than lose them.
                    tracing::warn!(error = %e, records = pending.len(), "writing audit records failed; retrying");
                    std::thread::sleep(RETRY_AFTER);
                    keep = true;
                }
                Err(e) => {
                    crate::telemetry::audit_dropped();
                    tracing::error!(error = %e, records = pending.len(), "writing audit records failed");
                }
            }
            if !keep {
                pending.clear();
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if stop {
            return;
        }
    }
}

/// Records per INSERT statement: DuckDB's cost is per statement far more
/// than per row, so one statement carries many records.
const ROWS_PER_INSERT: usize = 64;

fn insert(conn: &Connection, records: &[AuditRecord]) -> Result<(), duckdb::Error> {
    const ROW: &str = "(CAST(? AS TIMESTAMPTZ), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let tx = conn.unchecked_transaction()?;
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO {STORED_AS} VALUES {}",
            vec![ROW; chunk.len()].join(", ")
        );
        // Full chunks share one statement; only a batch's last differs.
        let mut stmt = tx.prepare_cached(&sql)?;
        stmt.execute(duckdb::params_from_iter(chunk.iter().flat_map(values)))?;
    }
    tx.commit()
}

/// One record's column values, in the table's order.
fn values(r: &AuditRecord) -> [Value; 18] {
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    [
        Value::Text(r.time.to_rfc3339()),
        Value::Text(r.request.clone()),
        text(&r.principal_kind),
        text(&r.principal),
        text(&r.swarm),
        text(&r.token_id),
        text(&r.remote_addr),
        text(&r.statement),
        text(&r.tables),
        text(&r.columns),
        text(&r.policy),
        Value::Text(r.outcome.as_str().to_string()),
        Value::Text(r.status.clone()),
        text(&r.reason),
        r.rows.map_or(Value::Null, |n| {
            Value::BigInt(i64::try_from(n).unwrap_or(i64::MAX))
        }),
        Value::BigInt(i64::try_from(r.bytes).unwrap_or(i64::MAX)),
        Value::Double(r.duration.as_secs_f64() * 1000.0),
        Value::Boolean(r.truncated),
    ]
}

/// Deletes records older than `retention`.
fn purge(conn: &Connection, retention: Duration) {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return;
    };
    let cutoff = Utc::now() - retention;
    match conn.execute(
        &format!("DELETE FROM {STORED_AS} WHERE time < CAST(? AS TIMESTAMPTZ)"),
        params![cutoff.to_rfc3339()],
    ) {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "purged audit records past retention"),
        Err(e) => tracing::warn!(error = %e, "purging audit records failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_table_name_is_a_valid_name() {
        assert_eq!(
            AuditLog::table_name(),
            TableName::parse("airlock.audit").unwrap()
        );
    }

    fn record(time: DateTime<Utc>, request: &str) -> AuditRecord {
        AuditRecord {
            time,
            request: request.into(),
            principal_kind: Some("agent".into()),
            principal: Some("a1".into()),
            swarm: Some("s".into()),
            token_id: Some("t1".into()),
            remote_addr: Some("127.0.0.1:1".into()),
            statement: Some("SELECT 1".into()),
            tables: None,
            columns: None,
            policy: None,
            outcome: Outcome::Ok,
            status: "Ok".into(),
            reason: None,
            rows: Some(1),
            bytes: 10,
            duration: Duration::from_millis(3),
            truncated: false,
        }
    }

    #[test]
    fn records_are_written_survive_reopening_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::replica::DuckDbConfig::default();
        let count = |replica: &Replica, request: &str| -> i64 {
            replica
                .connect()
                .unwrap()
                .query_row(
                    &format!("SELECT count(*) FROM {STORED_AS} WHERE request = ?"),
                    [request],
                    |row| row.get(0),
                )
                .unwrap()
        };
        {
            let replica = Replica::open(dir.path(), &config).unwrap();
            let log = AuditLog::open(&replica, Duration::from_secs(3600)).unwrap();
            log.record(record(Utc::now(), "recent"));
            log.record(record(Utc::now() - chrono::Duration::hours(2), "old"));
            log.flush(Duration::from_secs(10));
            assert_eq!(count(&replica, "recent"), 1);
            assert_eq!(count(&replica, "old"), 1);
            log.record(record(Utc::now(), "at shutdown"));
            log.shutdown();
            assert_eq!(count(&replica, "at shutdown"), 1);
        }
        // Reopened with a one-hour retention: the old record is purged at
        // start, the others are still there.
        let replica = Replica::open(dir.path(), &config).unwrap();
        let log = AuditLog::open(&replica, Duration::from_secs(3600)).unwrap();
        log.flush(Duration::from_secs(10));
        assert_eq!(count(&replica, "recent"), 1);
        assert_eq!(count(&replica, "at shutdown"), 1);
        assert_eq!(count(&replica, "old"), 0);
    }

    #[test]
    fn an_abandoned_request_is_recorded_as_cancelled_and_statements_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path(), &crate::replica::DuckDbConfig::default()).unwrap();
        let log = AuditLog::open(&replica, Duration::from_secs(3600)).unwrap();
        let labels = || crate::telemetry::RequestLabels::new("http", "POST /api/v1/query", "");
        let handle = AuditHandle::begin(Arc::clone(&log), "abandoned".into(), labels(), None);
        handle.statement("é".repeat(handle::MAX_STATEMENT));
        let clone = handle.clone();
        drop(handle);
        drop(clone);
        // Finished twice: only the first counts.
        let done = AuditHandle::begin(Arc::clone(&log), "answered".into(), labels(), None);
        done.finish(tonic::Code::Ok, "", 7);
        drop(done);
        log.flush(Duration::from_secs(10));
        let conn = replica.connect().unwrap();
        let rows: Vec<(String, String, usize)> = conn
            .prepare(&format!(
                "SELECT request, status, length(statement) FROM {STORED_AS} ORDER BY request"
            ))
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0) as usize,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            (rows[0].0.as_str(), rows[0].1.as_str()),
            ("abandoned", "Cancelled")
        );
        // 2-byte characters cut at a boundary, plus the ellipsis.
        assert_eq!(rows[0].2, handle::MAX_STATEMENT / 2 + 1);
        assert_eq!((rows[1].0.as_str(), rows[1].1.as_str()), ("answered", "Ok"));
    }
}

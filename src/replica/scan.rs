//! `DuckDbScanExec`: the DataFusion execution node that streams a DuckDB
//! query's result as record batches.
//!
//! DuckDB calls block, so each scan runs on the blocking pool and hands
//! batches over a channel of capacity [`CHANNEL_BATCHES`]: a slow client
//! stalls DuckDB instead of growing a buffer, which keeps memory bounded
//! whatever the table size. Dropping the stream (client gone, timeout,
//! cancel, LIMIT satisfied) interrupts DuckDB; because an interrupt sent
//! before DuckDB starts executing is lost, it is re-sent until the scan
//! thread reports that it stopped.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Array, RecordBatch, RecordBatchOptions, StructArray};
use datafusion::arrow::compute::cast_with_options;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use duckdb::{Connection, InterruptHandle};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{PhysicalTable, Replica, ReplicaError};

/// Batches buffered between DuckDB and the consumer, per scan.
const CHANNEL_BATCHES: usize = 2;
/// How often, and how long, an interrupt is re-sent to a scan being cancelled.
const INTERRUPT_EVERY: Duration = Duration::from_millis(5);
const INTERRUPT_FOR: Duration = Duration::from_secs(30);

/// Scans DuckDB with generated SQL, one query per partition: a table scan
/// (a provider's rowid ranges) or a pushed sub-plan (one query, several
/// tables, bound parameters).
pub struct DuckDbScanExec {
    replica: Arc<Replica>,
    /// The table versions read; every scan thread holds them until it ends.
    tables: Vec<Arc<PhysicalTable>>,
    sql: Vec<String>,
    params: Arc<Vec<duckdb::types::Value>>,
    schema: SchemaRef,
    /// `schema.table.column` of each stored column read, filter columns
    /// included.
    read: Vec<String>,
    /// A pushed sub-plan rather than a table scan (shown in EXPLAIN).
    pushed: bool,
    properties: Arc<PlanProperties>,
    /// With several partitions: their connections, pinned to one snapshot
    /// when the first partition starts (see [`Replica::pin`]).
    pinned: Mutex<Vec<Option<Connection>>>,
}

impl fmt::Debug for DuckDbScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuckDbScanExec")
            .field("sql", &self.sql)
            .finish()
    }
}

impl DuckDbScanExec {
    /// A scan with one partition per query in `sql` (each binding `params`),
    /// whose result columns are `schema`'s fields in order (names come from
    /// `schema`, not DuckDB).
    pub(crate) fn new(
        replica: Arc<Replica>,
        physical: Arc<PhysicalTable>,
        sql: Vec<String>,
        params: Vec<duckdb::types::Value>,
        schema: SchemaRef,
    ) -> Self {
        let read = schema
            .fields()
            .iter()
            .map(|f| format!("{}.{}", physical.logical(), f.name()))
            .collect();
        Self::build(replica, vec![physical], sql, params, schema, read, false)
    }

    /// A pushed sub-plan: one query over `tables` with `params` bound to
    /// `$1, $2, …`, reading `columns` (`schema.table.column`).
    pub(crate) fn query(
        replica: Arc<Replica>,
        tables: Vec<Arc<PhysicalTable>>,
        sql: String,
        params: Vec<duckdb::types::Value>,
        schema: SchemaRef,
        columns: Vec<String>,
    ) -> Self {
        Self::build(replica, tables, vec![sql], params, schema, columns, true)
    }

    fn build(
        replica: Arc<Replica>,
        tables: Vec<Arc<PhysicalTable>>,
        sql: Vec<String>,
        params: Vec<duckdb::types::Value>,
        schema: SchemaRef,
        read: Vec<String>,
        pushed: bool,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(sql.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            replica,
            tables,
            sql,
            params: Arc::new(params),
            schema,
            read,
            pushed,
            properties,
            pinned: Mutex::new(Vec::new()),
        }
    }

    /// The same scan, declaring that its SQL reads `columns` of its table
    /// (output and filter columns).
    pub(crate) fn reading(self, columns: Vec<String>) -> Self {
        let read = match self.tables.first() {
            Some(table) => columns
                .iter()
                .map(|c| format!("{}.{c}", table.logical()))
                .collect(),
            None => columns,
        };
        Self { read, ..self }
    }

    /// The connection for `partition`: with several partitions, one of a
    /// set pinned to one snapshot (see [`Replica::pin`]), so that they
    /// agree; a fresh one otherwise (one DuckDB statement reads one
    /// snapshot, each in-place merge whole or not at all).
    fn connection(&self, partition: usize) -> Result<Connection, ReplicaError> {
        let Some(physical) = self.tables.first().filter(|_| self.sql.len() > 1) else {
            return self.replica.connect();
        };
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        // Each execution starts every partition once: a partition whose
        // connection is gone starts a new execution, with a new set.
        if pinned.get(partition).is_none_or(Option::is_none) {
            *pinned = self
                .replica
                .pin(physical, self.sql.len())?
                .into_iter()
                .map(Some)
                .collect();
        }
        pinned
            .get_mut(partition)
            .and_then(Option::take)
            .map_or_else(|| self.replica.connect(), Ok)
    }

    /// The SQL this scan sends to DuckDB, one query per partition.
    pub fn sql(&self) -> &[String] {
        &self.sql
    }

    /// DuckDB's own plan for each query this scan sends (EXPLAIN, with the
    /// parameters bound): what runs where inside DuckDB.
    pub fn duckdb_plans(&self) -> Result<Vec<String>, ReplicaError> {
        let conn = self.replica.connect()?;
        let mut plans = Vec::with_capacity(self.sql.len());
        for sql in &self.sql {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN {sql}"))
                .map_err(ReplicaError::duckdb("explain a query"))?;
            let rows = stmt
                .query_map(
                    duckdb::params_from_iter(self.params.iter().cloned()),
                    |row| row.get::<_, String>(1),
                )
                .map_err(ReplicaError::duckdb("explain a query"))?;
            let mut plan = Vec::new();
            for row in rows {
                plan.push(row.map_err(ReplicaError::duckdb("explain a query"))?);
            }
            plans.push(plan.join("\n"));
        }
        Ok(plans)
    }

    /// The stored columns the scan reads, as `schema.table.column`:
    /// output columns, then filter columns.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.read.iter().map(String::as_str)
    }
}

impl DisplayAs for DuckDbScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: sql=[{}]", self.name(), self.sql.join("; "))
    }
}

impl ExecutionPlan for DuckDbScanExec {
    fn name(&self) -> &str {
        if self.pushed {
            "DuckDbQueryExec"
        } else {
            "DuckDbScanExec"
        }
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(sql) = self.sql.get(partition) else {
            return Err(DataFusionError::Internal(format!(
                "DuckDbScanExec has {} partitions, asked for {partition}",
                self.sql.len()
            )));
        };
        let conn = self
            .connection(partition)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let state = Arc::new(ScanState {
            interrupt: conn.interrupt_handle(),
            cancelled: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        let scan = BlockingScan {
            conn,
            sql: sql.clone(),
            params: Arc::clone(&self.params),
            _tables: self.tables.clone(),
            schema: Arc::clone(&self.schema),
            state: Arc::clone(&state),
            active: ActiveGuard::new(Arc::clone(&self.replica.active_scans)),
        };
        tokio::task::spawn_blocking(move || scan.run(tx));
        let guard = CancelOnDrop { state };
        let stream = ReceiverStream::new(rx).map(move |item| {
            // The guard lives as long as the stream.
            let _ = &guard;
            item
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

struct ScanState {
    interrupt: Arc<InterruptHandle>,
    cancelled: AtomicBool,
    finished: AtomicBool,
}

/// Counts a running scan thread for [`Replica::active_scans`].
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Interrupts the DuckDB query when the consumer goes away early.
struct CancelOnDrop {
    state: Arc<ScanState>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.state.finished.load(Ordering::SeqCst) {
            return;
        }
        self.state.cancelled.store(true, Ordering::SeqCst);
        self.state.interrupt.interrupt();
        interrupter::keep_interrupting(Arc::clone(&self.state));
    }
}

/// One thread re-sends interrupts to every scan being cancelled until it
/// stops (DuckDB drops an interrupt that arrives before execution starts).
/// One thread for all, so a burst of cancels cannot spawn a burst of threads.
mod interrupter {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, OnceLock, mpsc};
    use std::time::Instant;

    use super::{INTERRUPT_EVERY, INTERRUPT_FOR, ScanState};

    static QUEUE: OnceLock<Option<mpsc::Sender<Arc<ScanState>>>> = OnceLock::new();

    pub(super) fn keep_interrupting(state: Arc<ScanState>) {
        let queue = QUEUE.get_or_init(|| {
            let (sender, receiver) = mpsc::channel();
            std::thread::Builder::new()
                .name("airlock-interrupt".into())
                .spawn(move || run(&receiver))
                .map_err(|e| tracing::warn!(error = %e, "no interrupt thread; cancelled scans stop at their next batch"))
                .ok()
                .map(|_| sender)
        });
        if let Some(queue) = queue {
            let _ = queue.send(state);
        }
    }

    fn run(receiver: &mpsc::Receiver<Arc<ScanState>>) {
        let mut pending: Vec<(Arc<ScanState>, Instant)> = Vec::new();
        loop {
            let received = if pending.is_empty() {
                receiver
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                receiver.recv_timeout(INTERRUPT_EVERY)
            };
            match received {
                Ok(state) => pending.push((state, Instant::now())),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            pending.retain(|(state, since)| {
                !state.finished.load(Ordering::SeqCst) && since.elapsed() < INTERRUPT_FOR
            });
            for (state, _) in &pending {
                state.interrupt.interrupt();
            }
        }
    }
}

struct BlockingScan {
    conn: duckdb::Connection,
    /// The table versions read (kept alive until the scan ends).
    _tables: Vec<Arc<PhysicalTable>>,
    sql: String,
    params: Arc<Vec<duckdb::types::Value>>,
    schema: SchemaRef,
    state: Arc<ScanState>,
    active: ActiveGuard,
}

impl BlockingScan {
    fn run(self, tx: tokio::sync::mpsc::Sender<DfResult<RecordBatch>>) {
        let _active = &self.active;
        if let Err(e) = self.stream_into(&tx)
            && !self.state.cancelled.load(Ordering::SeqCst)
        {
            // The receiver may be gone too; then nobody needs the error.
            let _ = tx.blocking_send(Err(e));
        }
        self.state.finished.store(true, Ordering::SeqCst);
    }

    fn stream_into(&self, tx: &tokio::sync::mpsc::Sender<DfResult<RecordBatch>>) -> DfResult<()> {
        // Cancelled while waiting for a thread: do not start at all.
        if self.state.cancelled.load(Ordering::SeqCst) || tx.is_closed() {
            return Ok(());
        }
        let duck = |e: duckdb::Error| DataFusionError::External(Box::new(e));
        let mut stmt = self.conn.prepare(&self.sql).map_err(duck)?;
        tracing::debug!(sql = %self.sql, "DuckDB scan");
        // Executes lazily: chunks are produced as we fetch them.
        let _ = stmt
            .stream_arrow(duckdb::params_from_iter(self.params.iter().cloned()))
            .map_err(duck)?;
        loop {
            if self.state.cancelled.load(Ordering::SeqCst) || tx.is_closed() {
                return Ok(());
            }
            let Some(chunk) = stmt.step().map_err(duck)? else {
                return Ok(());
            };
            let batch = self.to_batch(&super::arrow_bridge::struct_array(&chunk)?)?;
            if tx.blocking_send(Ok(batch)).is_err() {
                return Ok(());
            }
        }
    }

    /// Re-labels DuckDB's columns with the plan's schema. An empty
    /// projection (e.g. `count(*)`) is scanned as one dummy column and
    /// becomes a batch with no columns but the right row count.
    fn to_batch(&self, chunk: &StructArray) -> DfResult<RecordBatch> {
        let rows = chunk.len();
        let columns = if self.schema.fields().is_empty() {
            vec![]
        } else {
            chunk
                .columns()
                .iter()
                .zip(self.schema.fields())
                .map(|(column, field)| {
                    if column.data_type() == field.data_type() {
                        Ok(Arc::clone(column))
                    } else {
                        cast_with_options(column, field.data_type(), &super::STRICT_CAST)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

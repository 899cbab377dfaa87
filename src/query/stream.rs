//! The result stream of a running query, with its deadline and cancel switch.
//!
//! [`QueryStream`] wraps DataFusion's stream. When the deadline passes or
//! the query is cancelled (CancelFlightInfo), it drops the inner stream at
//! once — which interrupts any DuckDB scan below — and yields one error
//! saying why. When the client disconnects, gRPC drops this stream and the
//! same teardown happens. While it lives, the query is listed in
//! [`RunningQueries`], which is how a cancel request finds it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::QueryError;

/// One execution of a query.
#[derive(Debug)]
struct Execution {
    serial: u64,
    owner: String,
    token: CancellationToken,
    about: Started,
    progress: Progress,
}

/// Who started an execution, when, and with what SQL (for operators).
#[derive(Debug, Clone)]
pub(crate) struct Started {
    /// The principal's label (`agent:a@s`).
    pub principal: String,
    /// The principal's swarm, if any.
    pub swarm: Option<String>,
    /// The SQL as sent (placeholders unbound).
    pub sql: Arc<str>,
    /// When it started.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Rows and bytes a stream has handed out so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    rows: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// An execution as operators see it.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct RunningQuery {
    /// The id a cancel names (the ticket's query id).
    pub query_id: String,
    /// Who runs it (`agent:a@s`).
    pub principal: String,
    /// Their swarm.
    pub swarm: Option<String>,
    /// The SQL as sent.
    pub sql: String,
    /// When it started (RFC 3339).
    pub started: chrono::DateTime<chrono::Utc>,
    /// Seconds since.
    pub seconds: f64,
    /// Rows handed out so far.
    pub rows: u64,
    /// Bytes of Arrow data handed out so far.
    pub bytes: u64,
}

/// Queries currently streaming results, by query id. The same ticket may be
/// redeemed more than once, so an id can have several executions.
#[derive(Debug, Default)]
pub struct RunningQueries {
    queries: Mutex<HashMap<String, Vec<Execution>>>,
    next_serial: std::sync::atomic::AtomicU64,
}

impl RunningQueries {
    /// Registers an execution; the returned guard unregisters it on drop.
    pub(crate) fn register(
        self: &Arc<Self>,
        query_id: &str,
        owner: &str,
        about: Started,
    ) -> (CancellationToken, Registration, Progress) {
        let token = CancellationToken::new();
        let progress = Progress::default();
        let serial = self
            .next_serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock()
            .entry(query_id.to_string())
            .or_default()
            .push(Execution {
                serial,
                owner: owner.to_string(),
                token: token.clone(),
                about,
                progress: progress.clone(),
            });
        (
            token,
            Registration {
                running: Arc::clone(self),
                query_id: query_id.to_string(),
                serial,
            },
            progress,
        )
    }

    /// The executions `may_see` allows for their owner, oldest first.
    pub fn list(&self, may_see: impl Fn(&str) -> bool) -> Vec<RunningQuery> {
        let now = chrono::Utc::now();
        let mut list: Vec<RunningQuery> = self
            .lock()
            .iter()
            .flat_map(|(id, executions)| executions.iter().map(move |e| (id, e)))
            .filter(|(_, e)| may_see(&e.owner))
            .map(|(id, e)| RunningQuery {
                query_id: id.clone(),
                principal: e.about.principal.clone(),
                swarm: e.about.swarm.clone(),
                sql: e.about.sql.to_string(),
                started: e.about.at,
                seconds: (now - e.about.at).as_seconds_f64().max(0.0),
                rows: e.progress.rows.load(Ordering::Relaxed),
                bytes: e.progress.bytes.load(Ordering::Relaxed),
            })
            .collect();
        list.sort_by_key(|q| q.started);
        list
    }

    /// Cancels the executions of `query_id` that `may_cancel` allows for
    /// their owner; returns whether any was cancelled.
    pub fn cancel(&self, query_id: &str, may_cancel: impl Fn(&str) -> bool) -> bool {
        let queries = self.lock();
        let mut cancelled = false;
        for execution in queries.get(query_id).into_iter().flatten() {
            if may_cancel(&execution.owner) {
                execution.token.cancel();
                cancelled = true;
            }
        }
        cancelled
    }

    /// How many executions are streaming.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Execution>>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps an execution listed in [`RunningQueries`] while it lives.
pub(crate) struct Registration {
    running: Arc<RunningQueries>,
    query_id: String,
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut queries = self.running.lock();
        if let Some(executions) = queries.get_mut(&self.query_id) {
            executions.retain(|e| e.serial != self.serial);
            if executions.is_empty() {
                queries.remove(&self.query_id);
            }
        }
    }
}

/// What bounds one execution: its deadline, cancel switch, row cap and
/// admission permit.
pub(crate) struct Guards {
    pub timeout: Duration,
    pub deadline: tokio::time::Instant,
    pub token: CancellationToken,
    pub registration: Registration,
    /// Rows returned at most; the plan yields one more so a cut is visible.
    pub max_rows: Option<u64>,
    /// Counts the query against its principal's concurrency while it lives.
    pub permit: Option<super::admission::Admitted>,
    /// Where the stream counts what it hands out.
    pub progress: Progress,
}

/// A query's batches, labelled with the planned schema, ending at the
/// deadline, on cancel, or at the row cap.
pub struct QueryStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    max_rows: Option<u64>,
    rows: u64,
    /// A batch that filled the cap exactly, held back until the stream
    /// shows whether more rows would have followed.
    full: Option<RecordBatch>,
    truncated: Arc<AtomicBool>,
    /// Rows handed out so far (shared with the audit).
    returned: Arc<AtomicU64>,
    /// Arrow bytes handed out so far (shared with the running list).
    bytes: Arc<AtomicU64>,
    /// Columns the plan reads from storage.
    columns: Vec<String>,
    _registration: Registration,
    _permit: Option<super::admission::Admitted>,
}

impl QueryStream {
    /// Wraps `inner`, whose producer stops itself at the deadline or on the
    /// token.
    pub(crate) fn new(inner: SendableRecordBatchStream, schema: SchemaRef, guards: Guards) -> Self {
        Self {
            inner: Some(inner),
            schema,
            deadline: Box::pin(tokio::time::sleep_until(guards.deadline)),
            timeout: guards.timeout,
            cancelled: Box::pin(guards.token.clone().cancelled_owned()),
            token: guards.token,
            max_rows: guards.max_rows,
            rows: 0,
            full: None,
            returned: guards.progress.rows,
            bytes: guards.progress.bytes,
            columns: Vec::new(),
            truncated: Arc::new(AtomicBool::new(false)),
            _registration: guards.registration,
            _permit: guards.permit,
        }
    }

    /// Set once the stream stopped at the row cap, with rows left over.
    /// Shared, so the protocol layer can read it after consuming the stream.
    pub fn truncated(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.truncated)
    }

    /// Rows handed out so far; shared, so it can be read after the stream
    /// is consumed.
    pub fn returned(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.returned)
    }

    /// Records which columns the plan reads from storage.
    pub(crate) fn with_columns(self, columns: Vec<String>) -> Self {
        Self { columns, ..self }
    }

    /// The columns the plan reads from storage (`schema.table.column`).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The row cap, if the principal has one.
    pub fn max_rows(&self) -> Option<u64> {
        self.max_rows
    }

    /// The schema every batch carries.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Why the stream stopped early, if it did.
    fn cut_short(&self) -> Option<QueryError> {
        if self.token.is_cancelled() {
            Some(QueryError::Cancelled)
        } else if tokio::time::Instant::now() >= self.deadline.deadline() {
            // The clock, not `is_elapsed`: the producer stops on another
            // runtime's timer, which can fire before this one's has been
            // processed (the stream then looked whole).
            Some(QueryError::Timeout(self.timeout))
        } else {
            None
        }
    }
}

impl QueryStream {
    /// The inner stream's next batch, labelled with the planned schema.
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RecordBatch, QueryError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = match ready!(inner.poll_next_unpin(cx)) {
            // The producer also stops at the deadline or on cancel; an end
            // then is a cut, not the whole result.
            None => self.cut_short().map(Err),
            Some(Err(e)) => Some(Err(QueryError::Execution(e))),
            Some(Ok(batch)) => Some(
                RecordBatch::try_new_with_options(
                    Arc::clone(&self.schema),
                    batch.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(batch.num_rows())),
                )
                .map_err(|e| {
                    QueryError::Internal(format!(
                        "result batch does not match the planned schema: {e}"
                    ))
                }),
            ),
        };
        if !matches!(item, Some(Ok(_))) {
            self.inner = None;
        }
        Poll::Ready(item)
    }

    /// Ends the stream at the row cap, marking it truncated.
    fn truncate(&mut self) {
        self.truncated.store(true, Ordering::Release);
        self.inner = None;
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.as_mut().poll_capped(cx);
        if let Poll::Ready(Some(Ok(batch))) = &item {
            self.returned
                .fetch_add(batch.num_rows() as u64, Ordering::AcqRel);
            self.bytes
                .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
        }
        item
    }
}

impl QueryStream {
    fn poll_capped(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RecordBatch, QueryError>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            return Poll::Ready(this.full.take().map(Ok));
        }
        if this.cancelled.poll_unpin(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(QueryError::Cancelled)));
        }
        if this.deadline.poll_unpin(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(QueryError::Timeout(this.timeout))));
        }
        loop {
            let batch = match ready!(this.poll_inner(cx)) {
                Some(Ok(batch)) => batch,
                // The end: a batch that filled the cap exactly was the last.
                None => return Poll::Ready(this.full.take().map(Ok)),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            };
            let Some(max_rows) = this.max_rows else {
                return Poll::Ready(Some(Ok(batch)));
            };
            let rows = batch.num_rows() as u64;
            if let Some(full) = this.full.take() {
                // The plan yields one row past the cap, so any row after
                // a full result means it was cut.
                if rows == 0 {
                    this.full = Some(full);
                    continue;
                }
                this.truncate();
                return Poll::Ready(Some(Ok(full)));
            }
            let left = max_rows.saturating_sub(this.rows);
            this.rows = this.rows.saturating_add(rows).min(max_rows);
            if rows < left {
                return Poll::Ready(Some(Ok(batch)));
            }
            if rows > left {
                this.truncate();
                return Poll::Ready(Some(Ok(batch.slice(0, left as usize))));
            }
            // Exactly at the cap: hold the batch until the next poll says
            // whether more rows follow, so the notice rides on the last
            // batch (a zero-row batch would never reach the client).
            this.full = Some(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    fn batch(schema: &SchemaRef, rows: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(Int64Array::from_iter_values(rows))],
        )
        .unwrap()
    }

    /// Streams `sizes`-row batches through a QueryStream capped at
    /// `max_rows`; returns the rows seen and whether it said truncated.
    async fn capped(sizes: &[i64], max_rows: u64) -> (Vec<i64>, bool) {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut start = 0;
        let batches: Vec<_> = sizes
            .iter()
            .map(|size| {
                let b = batch(&schema, start..start + size);
                start += size;
                Ok(b)
            })
            .collect();
        let inner = Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&schema),
            futures::stream::iter(batches),
        ));
        let running = Arc::new(RunningQueries::default());
        let started = Started {
            principal: "agent:a@s".into(),
            swarm: Some("s".into()),
            sql: "SELECT 1".into(),
            at: chrono::Utc::now(),
        };
        let (token, registration, progress) = running.register("q", "owner", started);
        let stream = QueryStream::new(
            inner,
            schema,
            Guards {
                timeout: Duration::from_secs(60),
                deadline: tokio::time::Instant::now() + Duration::from_secs(60),
                token,
                registration,
                max_rows: Some(max_rows),
                permit: None,
                progress,
            },
        );
        let truncated = stream.truncated();
        let batches: Vec<RecordBatch> = stream.map(Result::unwrap).collect().await;
        let rows = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        (rows, truncated.load(Ordering::Acquire))
    }

    #[tokio::test]
    async fn the_row_cap_cuts_inside_a_batch() {
        assert_eq!(capped(&[3, 3], 4).await, ((0..4).collect(), true));
    }

    #[tokio::test]
    async fn a_batch_ending_exactly_at_the_cap_is_cut_only_if_rows_follow() {
        // Rows after the cap (past an empty batch): truncated.
        assert_eq!(capped(&[2, 2, 0, 1], 4).await, ((0..4).collect(), true));
        // Nothing after it: the whole result, not truncated.
        assert_eq!(capped(&[2, 2, 0], 4).await, ((0..4).collect(), false));
        assert_eq!(capped(&[2, 1], 4).await, ((0..3).collect(), false));
    }

    #[test]
    fn the_running_list_shows_progress_to_those_who_may_see_it() {
        let running = Arc::new(RunningQueries::default());
        let started = |who: &str| Started {
            principal: who.into(),
            swarm: None,
            sql: format!("SELECT '{who}'").into(),
            at: chrono::Utc::now(),
        };
        let (_t1, r1, progress) = running.register("q1", "token-a", started("a"));
        let (_t2, r2, _) = running.register("q2", "token-b", started("b"));
        progress.rows.fetch_add(7, Ordering::Relaxed);
        progress.bytes.fetch_add(64, Ordering::Relaxed);
        let mine = running.list(|owner| owner == "token-a");
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].query_id.as_str(), mine[0].sql.as_str()),
            ("q1", "SELECT 'a'")
        );
        assert_eq!((mine[0].rows, mine[0].bytes), (7, 64));
        assert_eq!(running.list(|_| true).len(), 2);
        drop((r1, r2));
        assert!(running.list(|_| true).is_empty());
    }
}

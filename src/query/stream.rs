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
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
    ) -> (CancellationToken, Registration) {
        let token = CancellationToken::new();
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
            });
        (
            token,
            Registration {
                running: Arc::clone(self),
                query_id: query_id.to_string(),
                serial,
            },
        )
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

/// A query's batches, labelled with the planned schema, ending at the
/// deadline or on cancel.
pub struct QueryStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    token: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    _registration: Registration,
}

impl QueryStream {
    /// Wraps `inner`, whose producer stops itself at `deadline` or on `token`.
    pub(crate) fn new(
        inner: SendableRecordBatchStream,
        schema: SchemaRef,
        timeout: Duration,
        deadline: tokio::time::Instant,
        token: CancellationToken,
        registration: Registration,
    ) -> Self {
        Self {
            inner: Some(inner),
            schema,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            cancelled: Box::pin(token.clone().cancelled_owned()),
            token,
            _registration: registration,
        }
    }

    /// The schema every batch carries.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Why the stream stopped early, if it did.
    fn cut_short(&self) -> Option<QueryError> {
        if self.token.is_cancelled() {
            Some(QueryError::Cancelled)
        } else if self.deadline.is_elapsed() {
            Some(QueryError::Timeout(self.timeout))
        } else {
            None
        }
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        if this.cancelled.poll_unpin(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(QueryError::Cancelled)));
        }
        if this.deadline.poll_unpin(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(QueryError::Timeout(this.timeout))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.inner = None;
                // The producer also stops at the deadline or on cancel; an
                // end then is a cut, not the whole result.
                Poll::Ready(this.cut_short().map(Err))
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                Poll::Ready(Some(Err(QueryError::Execution(e))))
            }
            Poll::Ready(Some(Ok(batch))) => {
                let labelled = RecordBatch::try_new_with_options(
                    Arc::clone(&this.schema),
                    batch.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(batch.num_rows())),
                );
                match labelled {
                    Ok(batch) => Poll::Ready(Some(Ok(batch))),
                    Err(e) => {
                        this.inner = None;
                        Poll::Ready(Some(Err(QueryError::Internal(format!(
                            "result batch does not match the planned schema: {e}"
                        )))))
                    }
                }
            }
        }
    }
}

//! A runtime of its own for running query plans.
//!
//! DataFusion operators compute inside `poll`, and one poll of a join over
//! big batches can take seconds. On the gRPC runtime that would stall other
//! callers and hold back deadlines and cancels until the poll returned. So
//! plans run here, and their batches cross to the gRPC side over a bounded
//! channel: the gRPC side stays responsive, a timeout or cancel answers at
//! once, and the plan itself is dropped at the deadline or on cancel even if
//! nobody reads its output any more (dropping it interrupts the DuckDB scans
//! below it).
//!
//! A plan that is one DuckDB query or scan computes nothing in `poll`: its
//! work runs on DuckDB's threads already, so its batches skip that hop
//! ([`Run::direct`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::stream::{self, BoxStream};
use futures::task::AtomicWaker;
use futures::{StreamExt, future};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::replica::DuckDbScanExec;

/// Builds a plan to run: the one to run instead when a pushed query fails
/// in DuckDB before producing anything (see [`QueryExecutor::execute`]),
/// or, inside the executor, the plan itself.
pub(crate) type Fallback = Box<
    dyn FnOnce() -> futures::future::BoxFuture<'static, DfResult<Arc<dyn ExecutionPlan>>> + Send,
>;

/// Batches buffered between a running plan and its consumer.
const CHANNEL_BATCHES: usize = 2;

/// Stack of each executor thread. Planning and dropping expression trees
/// recurse once per level; expression depth is capped when parsing, but a
/// statement refused for its depth is still dropped here, down to whatever
/// depth the SQL length allows. Only touched pages cost memory.
const THREAD_STACK: usize = 256 * 1024 * 1024;

/// Runs query plans on dedicated threads.
pub(crate) struct QueryExecutor {
    // Option so Drop can move it out: a Runtime must not be dropped inside
    // an async context, so it is shut down in the background instead.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for QueryExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryExecutor").finish_non_exhaustive()
    }
}

impl QueryExecutor {
    /// An executor with `threads` worker threads.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("airlock-query")
            .thread_stack_size(THREAD_STACK)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs a future (planning, say) on the executor and waits for it.
    pub(crate) async fn run<F>(&self, future: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(future).await,
            None => Ok(future.await),
        }
    }

    /// Starts `plan` and returns its output. The plan stops — on this side,
    /// even if nobody reads the output — when `cancel` fires, at `deadline`,
    /// or when the output stream is dropped; the stream then just ends, and
    /// its reader tells a cut-short end from a whole one by `cancel` and
    /// `deadline`.
    ///
    /// If the first thing `plan` yields is DuckDB's "Out of Range" error (a
    /// decimal product DuckDB computes in 64 bits outgrew them, where
    /// DataFusion's 128 bits hold it), the plan `fallback` builds runs
    /// instead: nothing was sent yet, so the caller sees DataFusion's answer.
    pub(crate) fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
        cancel: CancellationToken,
        deadline: Instant,
        fallback: Option<Fallback>,
    ) -> SendableRecordBatchStream {
        let run = Run {
            // Only during shutdown is there no runtime of our own; running
            // on the caller's is still correct.
            handle: self
                .runtime
                .as_ref()
                .map_or_else(Handle::current, |runtime| runtime.handle().clone()),
            context,
            cancel,
            deadline,
        };
        if runs_in_duckdb(&plan) {
            run.direct(plan, fallback)
        } else {
            run.pumped(
                plan.schema(),
                Box::new(move || Box::pin(future::ready(Ok(plan)))),
                fallback,
            )
        }
    }
}

/// Whether all of `plan` runs inside DuckDB: a pushed query or a table scan
/// with nothing of DataFusion's above it.
fn runs_in_duckdb(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let plan = match plan.downcast_ref::<CooperativeExec>() {
        Some(cooperative) => cooperative.input(),
        None => plan,
    };
    plan.downcast_ref::<DuckDbScanExec>().is_some()
}

/// One execution: where it runs, and when it must stop.
struct Run {
    handle: Handle,
    context: Arc<TaskContext>,
    cancel: CancellationToken,
    deadline: Instant,
}

impl Run {
    /// Runs the plan `build` makes on the executor's threads, handing its
    /// batches over a channel.
    fn pumped(
        self,
        schema: SchemaRef,
        build: Fallback,
        fallback: Option<Fallback>,
    ) -> SendableRecordBatchStream {
        let Self {
            handle,
            context,
            cancel,
            deadline,
        } = self;
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        // The plan is started inside the task: operators spawn their own
        // tasks (repartitioning, merging) and DuckDB scans spawn blocking
        // work, all on whatever runtime starts them — this one.
        let pump = async move {
            let mut inner = match build()
                .await
                .and_then(|plan| execute_stream(plan, Arc::clone(&context)))
            {
                Ok(inner) => inner,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut fallback = fallback;
            while let Some(item) = inner.next().await {
                if let Err(e) = &item
                    && is_duckdb_out_of_range(e)
                    && let Some(build) = fallback.take()
                {
                    tracing::debug!(error = %e, "DuckDB could not finish a pushed query; running it in DataFusion");
                    match build()
                        .await
                        .and_then(|plan| execute_stream(plan, Arc::clone(&context)))
                    {
                        Ok(replacement) => {
                            inner = replacement;
                            continue;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                // Once something went out, the answer is this plan's.
                fallback = None;
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        };
        let task = async move {
            // Leaving the select drops `pump`, and with it the plan.
            tokio::select! {
                () = pump => {}
                () = cancel.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        };
        let guard = AbortOnDrop(handle.spawn(task));
        let stream = ReceiverStream::new(rx).map(move |item| {
            let _ = &guard;
            item
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }

    /// The short path for a plan that runs entirely in DuckDB: its scan
    /// threads' channels are read directly, without a task and channel of
    /// the executor's in between. The scans are started on the executor's
    /// blocking threads (big stacks for DuckDB; pinning a snapshot may wait
    /// for a merge's commit), and a watchdog drops them at the deadline or
    /// on cancel — which interrupts DuckDB — even if nobody reads.
    fn direct(
        self,
        plan: Arc<dyn ExecutionPlan>,
        fallback: Option<Fallback>,
    ) -> SendableRecordBatchStream {
        let schema = plan.schema();
        let context = Arc::clone(&self.context);
        let started = self.handle.spawn_blocking(move || {
            let partitions = plan.properties().partitioning.partition_count();
            (0..partitions)
                .map(|partition| plan.execute(partition, Arc::clone(&context)))
                .collect::<DfResult<Vec<_>>>()
        });
        let (cancel, deadline) = (self.cancel.clone(), self.deadline);
        let handle = self.handle.clone();
        let output_schema = Arc::clone(&schema);
        let output = stream::once(async move {
            let mut scans: BoxStream<'static, DfResult<RecordBatch>> = match started.await {
                Ok(Ok(streams)) => stream::select_all(streams).boxed(),
                Ok(Err(e)) => stream::iter([Err(e)]).boxed(),
                Err(e) => stream::iter([Err(DataFusionError::External(Box::new(e)))]).boxed(),
            };
            let first = scans.next().await;
            match (first, fallback) {
                (Some(Err(e)), Some(build)) if is_duckdb_out_of_range(&e) => {
                    tracing::debug!(error = %e, "DuckDB could not finish a pushed query; running it in DataFusion");
                    self.pumped(output_schema, build, None).boxed()
                }
                (first, _) => stream::iter(first).chain(scans).boxed(),
            }
        })
        .flatten();
        let slot = Slot::new(output.boxed());
        let watched = slot.clone();
        let watchdog = handle.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            watched.empty();
        });
        let guard = AbortOnDrop(watchdog);
        let stream = stream::poll_fn(move |cx| {
            let _ = &guard;
            slot.poll_next(cx)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// A stream shared by its reader and the watchdog. Either one empties it
/// when done — the reader when dropped, the watchdog at the deadline or on
/// cancel (or when aborted) — which drops the stream, and the DuckDB scans
/// under it are interrupted at once; the reader is woken to see the end.
#[derive(Clone)]
struct Slot {
    stream: Arc<Mutex<Option<BoxStream<'static, DfResult<RecordBatch>>>>>,
    reader: Arc<AtomicWaker>,
}

impl Slot {
    fn new(stream: BoxStream<'static, DfResult<RecordBatch>>) -> Self {
        Self {
            stream: Arc::new(Mutex::new(Some(stream))),
            reader: Arc::new(AtomicWaker::new()),
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<DfResult<RecordBatch>>> {
        self.reader.register(cx.waker());
        let mut slot = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(stream) = slot.as_mut() else {
            return Poll::Ready(None);
        };
        let item = stream.poll_next_unpin(cx);
        if let Poll::Ready(None) = item {
            *slot = None;
        }
        item
    }

    fn empty(&self) {
        // Dropped outside the lock.
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(stream);
        self.reader.wake();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.empty();
    }
}

/// DuckDB's error for a value outside its type's range (its errors carry
/// their class only in the message).
fn is_duckdb_out_of_range(error: &DataFusionError) -> bool {
    error.to_string().contains("Out of Range Error")
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

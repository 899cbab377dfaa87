//! The writer side of a load: the channel batches travel on, the
//! [`BatchSource`] DuckDB pulls them from on the blocking pool, and the
//! commit plan that swaps the new version in with its watermark.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use tokio::sync::mpsc;

use super::SyncError;
use super::watermark::{self, SyncState};
use crate::replica::{BatchSource, Merge, Pull, StagingTable};

/// How the writer commits, decided before reading.
pub(super) struct CommitPlan {
    pub(super) merge: Merge,
    pub(super) cursor: Option<String>,
    pub(super) before: Option<ScalarValue>,
    pub(super) columns_added: bool,
}

pub(super) struct Committed {
    pub(super) table_rows: u64,
    pub(super) watermark: Option<String>,
}

impl CommitPlan {
    /// Commits the load with its watermark: the larger of the previous one
    /// and the largest cursor loaded. A merge that loaded nothing (and
    /// adds no column) changes nothing and commits nothing.
    pub(super) fn commit(self, staging: StagingTable) -> Result<Committed, SyncError> {
        let merging = self.merge != Merge::Replace;
        if merging && staging.rows() == 0 && !self.columns_added {
            return Ok(Committed {
                table_rows: staging.base_rows(),
                watermark: self.before.as_ref().and_then(watermark::to_text),
            });
        }
        let watermark = match &self.cursor {
            Some(cursor) => {
                let loaded = staging.max_of(cursor)?;
                let largest = match (self.before, loaded) {
                    (Some(a), Some(b)) => Some(if b > a { b } else { a }),
                    (a, b) => a.or(b),
                };
                largest.as_ref().and_then(watermark::to_text)
            }
            None => None,
        };
        let state = match (&self.cursor, &watermark) {
            (Some(cursor), Some(watermark)) => Some(
                serde_json::to_string(&SyncState {
                    cursor: cursor.clone(),
                    watermark: watermark.clone(),
                })
                .map_err(|e| SyncError::Task(e.to_string()))?,
            ),
            _ => None,
        };
        let table_rows = staging.commit_merge(&self.merge, state.as_deref())?;
        Ok(Committed {
            table_rows,
            watermark,
        })
    }
}

pub(super) enum Load {
    Batch(RecordBatch),
    Finish,
}

/// The writer's end of the load channel, as DuckDB pulls from it.
pub(super) struct Received {
    pub(super) rx: mpsc::Receiver<Load>,
    // Set on Finish: every batch arrived.
    pub(super) finished: Arc<AtomicBool>,
}

/// How often a wait with a deadline looks at the channel.
const POLL: Duration = Duration::from_millis(1);

impl BatchSource for Received {
    fn next_batch(&mut self, patience: Option<Duration>) -> Pull {
        let message = match patience {
            // Only `StagingTable::load` waits without a deadline, on the
            // blocking pool, where blocking is allowed.
            None => self.rx.blocking_recv(),
            // DuckDB's threads wait here, inside a C callback: polling,
            // rather than a runtime timer, keeps this free of panics (a
            // runtime shutting down panics its timers; a panic here would
            // abort the process).
            Some(patience) => {
                let deadline = Instant::now() + patience;
                loop {
                    match self.rx.try_recv() {
                        Ok(message) => break Some(message),
                        Err(mpsc::error::TryRecvError::Disconnected) => break None,
                        Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                            return Pull::Waiting;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(POLL),
                    }
                }
            }
        };
        match message {
            Some(Load::Batch(batch)) => Pull::Batch(batch),
            Some(Load::Finish) => {
                self.finished.store(true, Ordering::Release);
                Pull::Done
            }
            None => Pull::Done,
        }
    }
}

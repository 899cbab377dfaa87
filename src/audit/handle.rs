//! The record of one request while it runs.
//!
//! The protocol layer opens an [`AuditHandle`] when a request arrives and
//! puts it in the request's extensions; whoever learns something on the way
//! (who the caller is, the SQL, the tables and policy) writes it in; the
//! handle is finished once, with the gRPC status, when the response ends —
//! or when it is dropped unfinished (the client went away).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tonic::Code;

use super::{AuditLog, AuditRecord};
use crate::principal::Principal;
use crate::telemetry::{self, RequestLabels};

/// Longest statement a record keeps (the default `query.max_sql_length`).
pub(super) const MAX_STATEMENT: usize = 256 * 1024;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served.
    Ok,
    /// Refused: not authenticated, not permitted, or over a limit.
    Denied,
    /// Failed for any other reason (bad input, execution error, …).
    Error,
}

impl Outcome {
    /// As stored: `ok`, `denied`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    fn of(code: Code) -> Self {
        match code {
            Code::Ok => Self::Ok,
            Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted => {
                Self::Denied
            }
            _ => Self::Error,
        }
    }
}

/// One request's record in progress; cheap to clone, finished once.
#[derive(Clone)]
pub struct AuditHandle {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<AuditLog>,
    labels: RequestLabels,
    started: Instant,
    record: Mutex<Option<AuditRecord>>,
    rows: Mutex<Option<Arc<AtomicU64>>>,
    truncated: Mutex<Option<Arc<AtomicBool>>>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle").finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Opens the record of a request arriving now; `labels` are what its
    /// metrics are counted under.
    pub fn begin(
        log: Arc<AuditLog>,
        request: String,
        labels: RequestLabels,
        remote_addr: Option<String>,
    ) -> Self {
        let record = AuditRecord {
            time: Utc::now(),
            request,
            principal_kind: None,
            principal: None,
            swarm: None,
            token_id: None,
            remote_addr,
            statement: None,
            tables: None,
            columns: None,
            policy: None,
            outcome: Outcome::Error,
            status: String::new(),
            reason: None,
            rows: None,
            bytes: 0,
            duration: Duration::ZERO,
            truncated: false,
        };
        Self {
            inner: Arc::new(Inner {
                log,
                labels,
                started: Instant::now(),
                record: Mutex::new(Some(record)),
                rows: Mutex::new(None),
                truncated: Mutex::new(None),
            }),
        }
    }

    fn update(&self, change: impl FnOnce(&mut AuditRecord)) {
        if let Some(record) = lock(&self.inner.record).as_mut() {
            change(record);
        }
    }

    /// Who made the request.
    pub fn principal(&self, principal: &Principal) {
        self.update(|r| {
            r.principal_kind = Some(principal.kind.to_string());
            r.principal = Some(principal.name.clone());
            r.swarm.clone_from(&principal.swarm);
            r.token_id = Some(principal.token_id.clone());
        });
    }

    /// The user name a handshake tried (its password is never recorded).
    pub fn attempted_user(&self, user: &str) {
        self.update(|r| r.principal = Some(user.to_string()));
    }

    /// The SQL text or action body (cut past [`MAX_STATEMENT`] bytes: an
    /// action body, a saved text, can be far larger than any SQL).
    pub fn statement(&self, statement: impl Into<String>) {
        let mut statement = statement.into();
        if statement.len() > MAX_STATEMENT {
            let mut cut = MAX_STATEMENT;
            while !statement.is_char_boundary(cut) {
                cut -= 1;
            }
            statement.truncate(cut);
            statement.push('…');
        }
        self.update(|r| r.statement = Some(statement));
    }

    /// The tables a query named and the policy applied to them.
    pub fn tables(&self, tables: &[impl ToString], policy: Option<String>) {
        let tables = tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.update(|r| {
            r.tables = Some(tables);
            r.policy = policy;
        });
    }

    /// The columns a query reads from storage.
    pub fn columns(&self, columns: Vec<String>) {
        self.update(|r| r.columns = Some(columns.join(",")));
    }

    /// Counters the result stream updates; read when the record finishes.
    pub fn track_result(&self, rows: Arc<AtomicU64>, truncated: Arc<AtomicBool>) {
        *lock(&self.inner.rows) = Some(rows);
        *lock(&self.inner.truncated) = Some(truncated);
    }

    /// Finishes the record with the request's final status and the bytes
    /// sent; later calls do nothing.
    pub fn finish(&self, code: Code, message: &str, bytes: u64) {
        self.inner.finish(code, message, bytes);
    }
}

impl Inner {
    fn finish(&self, code: Code, message: &str, bytes: u64) {
        let Some(mut record) = lock(&self.record).take() else {
            return;
        };
        record.outcome = Outcome::of(code);
        record.status = format!("{code:?}");
        record.reason = (code != Code::Ok).then(|| message.to_string());
        record.bytes = bytes;
        record.duration = self.started.elapsed();
        if let Some(rows) = lock(&self.rows).as_ref() {
            record.rows = Some(rows.load(Ordering::Acquire));
        }
        if let Some(truncated) = lock(&self.truncated).as_ref() {
            record.truncated = truncated.load(Ordering::Acquire);
        }
        telemetry::request_finished(
            &self.labels,
            record.principal_kind.as_deref().unwrap_or("none"),
            record.outcome.as_str(),
            code,
            record.duration,
            record.rows,
            record.bytes,
        );
        self.log.record(record);
    }
}

/// A request whose handler was dropped before it answered (the client went
/// away, or cancelled) still leaves its record.
impl Drop for Inner {
    fn drop(&mut self) {
        self.finish(
            Code::Cancelled,
            "the request was abandoned before its answer (the client went away or cancelled)",
            0,
        );
    }
}

/// A record's fields stay usable even if a thread panicked holding them.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

//! Prometheus metrics, through the `metrics` facade: counters and
//! histograms recorded where things happen (a request's audit record
//! finishing, a sync ending, the audit writer inserting), gauges set when
//! `/metrics` is scraped. Labels stay low-cardinality: front end, method,
//! operation (a known action or tool, else `unknown`), outcome, principal
//! kind, sync state, and table or swarm names only where a metric is per
//! table or swarm — never an agent's name, a token or SQL text.

mod history;

pub use history::{History, INTERVALS, STEP_SECONDS, Sample};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tonic::Code;

/// Buckets of latency histograms, in seconds: 0.5 ms to 5 minutes.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// How long a gauge no scrape has set stays in the output.
const GAUGE_IDLE: Duration = Duration::from_secs(300);

/// Response streams open now.
static ACTIVE_STREAMS: AtomicI64 = AtomicI64::new(0);

/// The last hour of requests, for the dashboard's charts.
pub fn history() -> &'static History {
    static HISTORY: OnceLock<History> = OnceLock::new();
    HISTORY.get_or_init(History::default)
}

/// The process's metrics, installed as the global recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        // Gauges are set when /metrics is scraped; one no longer set (a
        // removed table, a swarm without artifacts) goes away instead of
        // showing its last value forever.
        let recorder = builder
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

/// What each metric means, as `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "airlock_requests_total",
        "Requests by front end (flight, http, mcp, dashboard), method, operation (action or tool), outcome and principal kind"
    );
    describe_histogram!(
        "airlock_request_duration_seconds",
        Unit::Seconds,
        "Request latency, to the end of the response stream"
    );
    describe_counter!(
        "airlock_result_rows_total",
        "Rows sent in query results, by front end"
    );
    describe_counter!(
        "airlock_response_bytes_total",
        Unit::Bytes,
        "Bytes of responses, by front end"
    );
    describe_counter!(
        "airlock_denials_total",
        "Requests refused by policy or authentication, by reason"
    );
    describe_gauge!("airlock_active_queries", "Queries running now");
    describe_gauge!(
        "airlock_active_streams",
        "Response streams open now (every streaming Flight call, HTTP query results)"
    );
    describe_gauge!("airlock_mcp_sessions", "Open MCP sessions");
    describe_gauge!(
        "airlock_replica_epoch",
        "The epoch of each table this node serves (a cluster): compare nodes to see one behind"
    );
    describe_gauge!(
        "airlock_writer",
        "1 on the node that runs syncs (the cluster's writer, or a single node), else 0"
    );
    describe_gauge!(
        "airlock_duckdb_memory_bytes",
        Unit::Bytes,
        "Memory DuckDB uses"
    );
    describe_counter!("airlock_sync_jobs_total", "Sync jobs ended, by final state");
    describe_histogram!(
        "airlock_sync_duration_seconds",
        Unit::Seconds,
        "Sync job durations, by final state"
    );
    describe_counter!("airlock_sync_rows_total", "Rows synced into the replica");
    describe_gauge!(
        "airlock_sync_jobs",
        "Sync jobs not yet ended (state=\"active\": queued or running)"
    );
    describe_gauge!(
        "airlock_replica_age_seconds",
        Unit::Seconds,
        "Seconds since each table's last successful sync"
    );
    describe_gauge!(
        "airlock_artifact_bytes",
        Unit::Bytes,
        "Bytes of artifacts stored, per owning swarm"
    );
    describe_histogram!(
        "airlock_audit_write_lag_seconds",
        Unit::Seconds,
        "Time from a request's end to its audit record being written"
    );
    describe_counter!(
        "airlock_audit_dropped_total",
        "Audit records dropped because the writer fell behind"
    );
}

/// A session a front end keeps open for a principal (MCP), as operators
/// see it.
#[derive(Debug, Clone)]
pub struct OpenSession {
    /// The token that opened it (the only one it answers).
    pub token_id: String,
    /// Its principal (`agent:a@s`).
    pub principal: String,
    /// When it was opened.
    pub opened: chrono::DateTime<chrono::Utc>,
}

/// The sessions a front end keeps open now; none when that cannot be
/// read without waiting (sessions being opened or closed).
pub type OpenSessions = std::sync::Arc<dyn Fn() -> Option<Vec<OpenSession>> + Send + Sync>;

/// The labels a request is counted under.
#[derive(Debug, Clone)]
pub struct RequestLabels {
    /// `flight`, `http`, `mcp` or `dashboard`.
    pub frontend: &'static str,
    /// The RPC, route or MCP method, from a fixed set.
    pub method: String,
    /// The action or tool, when known to airlock (`unknown` otherwise; empty
    /// for methods that have none).
    pub operation: String,
}

impl RequestLabels {
    /// Labels of a request to `frontend`'s `method`, about `operation`.
    pub fn new(frontend: &'static str, method: &str, operation: &str) -> Self {
        Self {
            frontend,
            method: method.to_string(),
            operation: operation.to_string(),
        }
    }
}

/// A request ended.
pub fn request_finished(
    labels: &RequestLabels,
    principal_kind: &str,
    outcome: &str,
    code: Code,
    duration: Duration,
    rows: Option<u64>,
    bytes: u64,
) {
    handle();
    history().record(chrono::Utc::now(), outcome, rows.is_some(), duration);
    let frontend = labels.frontend;
    metrics::counter!(
        "airlock_requests_total",
        "frontend" => frontend,
        "method" => labels.method.clone(),
        "operation" => labels.operation.clone(),
        "outcome" => outcome.to_string(),
        "principal_kind" => principal_kind.to_string(),
    )
    .increment(1);
    metrics::histogram!(
        "airlock_request_duration_seconds",
        "frontend" => frontend,
        "method" => labels.method.clone(),
        "operation" => labels.operation.clone(),
    )
    .record(duration.as_secs_f64());
    if let Some(rows) = rows {
        metrics::counter!("airlock_result_rows_total", "frontend" => frontend).increment(rows);
    }
    metrics::counter!("airlock_response_bytes_total", "frontend" => frontend).increment(bytes);
    if outcome == "denied" {
        metrics::counter!("airlock_denials_total", "frontend" => frontend, "reason" => reason(code))
            .increment(1);
    }
}

/// Why a request was refused, by its code.
fn reason(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "limit",
        _ => "other",
    }
}

/// A sync job ended in `state` after `duration`, having synced `rows`.
pub fn sync_finished(state: &'static str, duration: Duration, rows: u64) {
    handle();
    metrics::counter!("airlock_sync_jobs_total", "state" => state).increment(1);
    metrics::histogram!("airlock_sync_duration_seconds", "state" => state)
        .record(duration.as_secs_f64());
    metrics::counter!("airlock_sync_rows_total").increment(rows);
}

/// Audit records were written `lag` after their requests ended.
pub fn audit_written(lag: Duration) {
    handle();
    metrics::histogram!("airlock_audit_write_lag_seconds").record(lag.as_secs_f64());
}

/// An audit record was dropped: the writer's queue was full.
pub fn audit_dropped() {
    handle();
    metrics::counter!("airlock_audit_dropped_total").increment(1);
}

/// A response stream opened (+1) or closed (-1).
pub fn stream_open(delta: i64) {
    ACTIVE_STREAMS.fetch_add(delta, Ordering::Relaxed);
}

/// A gauge's value now, set at scrape time.
pub fn gauge(name: &'static str, labels: &[(&'static str, String)], value: f64) {
    handle();
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect();
    metrics::gauge!(name, labels).set(value);
}

/// The metrics as Prometheus text.
pub fn render() -> String {
    let handle = handle();
    gauge(
        "airlock_active_streams",
        &[],
        ACTIVE_STREAMS.load(Ordering::Relaxed) as f64,
    );
    handle.run_upkeep();
    handle.render()
}

//! `GET /admin/syncs`: the sync jobs (filtered by table and state, paged
//! on the server with `sync.jobs`' page tokens) with cancel and retry
//! buttons, and every registered table: source, strategy, schedule, next
//! run, freshness, size, last success, a start button and a sparkline of
//! its recent sync durations.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Status;

use super::session::Admin;
use super::{Chrome, Dashboard, View, view};
use crate::jobs::JobState;

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    table: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    page_token: String,
}

#[derive(Template)]
#[template(path = "dashboard/syncs.html")]
struct SyncsPage {
    chrome: Chrome,
    table: String,
    state: String,
    states: Vec<String>,
    jobs: Vec<JobRow>,
    /// The next page's URL.
    older: Option<String>,
    tables: Vec<TableRow>,
}

/// A job as `sync.jobs` answers it.
#[derive(Deserialize)]
struct Job {
    job_id: String,
    table: String,
    strategy: String,
    trigger: Value,
    state: String,
    rows: u64,
    bytes: u64,
    source_rows: Option<u64>,
    source_bytes: u64,
    #[serde(default)]
    files: u64,
    error: Option<String>,
    attempt: u32,
    retry_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    cancellable: bool,
    retryable: bool,
}

#[derive(Deserialize)]
struct JobPage {
    jobs: Vec<Job>,
    next_page_token: Option<String>,
}

struct JobRow {
    id: String,
    table: String,
    strategy: String,
    trigger: String,
    state: String,
    rows: String,
    bytes: String,
    /// `42%` when the source's size is known.
    percent: Option<String>,
    /// For the progress bar's `value` (0–100).
    progress: Option<u64>,
    /// The source's size, once read.
    source: String,
    attempt: u32,
    retry_at: String,
    error: String,
    created: String,
    started: String,
    finished: String,
    duration: String,
    /// Bodies of the buttons that apply.
    cancel: Option<String>,
    retry: Option<String>,
}

/// A table as `table.status` answers it.
#[derive(Deserialize)]
struct TableStatus {
    name: String,
    source: String,
    strategy: String,
    schedule: Option<Value>,
    next_run: Option<DateTime<Utc>>,
    rows: Option<u64>,
    bytes_on_disk: Option<u64>,
    freshness_s: Option<i64>,
    last_success_at: Option<DateTime<Utc>>,
}

/// `table.list` for admins: registrations (the fields used here).
#[derive(Deserialize)]
struct Registrations {
    tables: Vec<Registration>,
}

#[derive(Deserialize)]
struct Registration {
    name: String,
}

struct TableRow {
    name: String,
    source: String,
    strategy: String,
    schedule: String,
    next_run: String,
    freshness: String,
    rows: String,
    bytes: String,
    last_success: String,
    start: String,
    /// Polyline points of recent sync durations (oldest first).
    sparkline: String,
    durations: String,
    /// The jobs filter for this table.
    jobs_link: String,
}

pub(super) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(rejected) => return view.reject(&admin, rejected.body_text()),
    };
    let made = build(&dashboard, &admin, &view, filter).await;
    view.render(&admin, made)
}

async fn build(
    dashboard: &Dashboard,
    admin: &Admin,
    view: &View,
    filter: Filter,
) -> Result<SyncsPage, Status> {
    let mut query = serde_json::Map::new();
    for (key, value) in [
        ("table", &filter.table),
        ("state", &filter.state),
        ("page_token", &filter.page_token),
    ] {
        if !value.is_empty() {
            query.insert(key.into(), Value::String(value.clone()));
        }
    }
    query.insert("limit".into(), json!(50));
    let page: JobPage = dashboard
        .call(admin, "sync.jobs", Value::Object(query))
        .await?;
    let now = Utc::now();
    let jobs = page.jobs.into_iter().map(|job| job_row(job, now)).collect();
    let older = page.next_page_token.map(|token| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("table", &filter.table)
            .append_pair("state", &filter.state)
            .append_pair("page_token", &token)
            .finish();
        format!("/admin/syncs?{query}")
    });
    let registrations: Registrations = dashboard.call(admin, "table.list", json!({})).await?;
    // The sparklines come from the latest jobs of all tables, in one call.
    let latest: JobPage = dashboard
        .call(admin, "sync.jobs", json!({ "limit": RECENT_JOBS }))
        .await?;
    let mut tables = Vec::with_capacity(registrations.tables.len());
    for registration in registrations.tables {
        let durations = durations_of(&latest.jobs, &registration.name);
        // A table removed or failing between the two calls shows why,
        // rather than failing the page.
        let row = table_row(dashboard, admin, &registration.name, durations, now).await;
        tables.push(row.unwrap_or_else(|e| TableRow::failed(registration.name, &e)));
    }
    Ok(SyncsPage {
        chrome: view.chrome("syncs", admin),
        table: filter.table,
        state: filter.state,
        states: JobState::ALL.iter().map(ToString::to_string).collect(),
        jobs,
        older,
        tables,
    })
}

fn job_row(job: Job, now: DateTime<Utc>) -> JobRow {
    // Rows against the source's row count (known for Parquet and
    // Snowflake; bytes are Arrow's in memory, not comparable to a file's).
    let progress = job
        .source_rows
        .filter(|&n| n > 0)
        .map(|n| (job.rows.saturating_mul(100) / n).min(100));
    JobRow {
        cancel: job
            .cancellable
            .then(|| json!({ "job_id": job.job_id }).to_string()),
        retry: job
            .retryable
            .then(|| json!({ "table": job.table }).to_string()),
        id: job.job_id,
        table: job.table,
        strategy: job.strategy,
        trigger: match job.trigger {
            Value::String(s) => s,
            other => other.to_string(),
        },
        state: job.state,
        rows: view::count(job.rows),
        bytes: view::bytes(job.bytes),
        percent: progress.map(|p| format!("{p}%")),
        progress,
        source: match (job.files, job.source_bytes, job.source_rows) {
            (0, 0, None) => String::new(),
            (files, bytes, rows) => {
                let rows = rows
                    .map(|n| format!(", {} rows", view::count(n)))
                    .unwrap_or_default();
                let files = if files == 1 {
                    "1 file".into()
                } else {
                    format!("{files} files")
                };
                format!("source: {files}, {}{rows}", view::bytes(bytes))
            }
        },
        attempt: job.attempt,
        retry_at: job
            .retry_at
            .map(|t| view::relative(&t, now))
            .unwrap_or_default(),
        error: job.error.unwrap_or_default(),
        created: view::time(&job.created_at),
        started: view::maybe_time(job.started_at.as_ref()),
        finished: view::maybe_time(job.finished_at.as_ref()),
        duration: job.duration_ms.map(view::duration_ms).unwrap_or_default(),
    }
}

/// Durations of `table`'s finished jobs among `jobs` (newest first), oldest
/// first, at most 20.
fn durations_of(jobs: &[Job], table: &str) -> Vec<i64> {
    let mut durations: Vec<i64> = jobs
        .iter()
        .filter(|j| j.table == table && j.finished_at.is_some())
        .filter_map(|j| j.duration_ms)
        .take(20)
        .collect();
    durations.reverse();
    durations
}

async fn table_row(
    dashboard: &Dashboard,
    admin: &Admin,
    name: &str,
    durations: Vec<i64>,
    now: DateTime<Utc>,
) -> Result<TableRow, Status> {
    let status: TableStatus = dashboard
        .call(admin, "table.status", json!({ "name": name }))
        .await?;
    let schedule = match &status.schedule {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
        None => "manual".into(),
    };
    Ok(TableRow {
        start: json!({ "table": status.name }).to_string(),
        jobs_link: jobs_link(&status.name),
        sparkline: sparkline(&durations),
        durations: durations
            .iter()
            .map(|&ms| view::duration_ms(ms))
            .collect::<Vec<_>>()
            .join(", "),
        name: status.name,
        source: status.source,
        strategy: status.strategy,
        schedule,
        next_run: status
            .next_run
            .map(|t| view::relative(&t, now))
            .unwrap_or_else(|| "—".into()),
        freshness: status
            .freshness_s
            .map(|s| view::duration_ms(s * 1000))
            .unwrap_or_else(|| "never synced".into()),
        rows: status.rows.map(view::count).unwrap_or_else(|| "—".into()),
        bytes: status
            .bytes_on_disk
            .map(view::bytes)
            .unwrap_or_else(|| "—".into()),
        last_success: view::maybe_time(status.last_success_at.as_ref()),
    })
}

/// The jobs of one table.
fn jobs_link(table: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("table", table)
        .finish();
    format!("/admin/syncs?{query}")
}

/// Jobs read for the sparklines (the newest, all tables).
const RECENT_JOBS: usize = 500;

impl TableRow {
    /// A table whose status could not be read, saying why.
    fn failed(name: String, error: &Status) -> Self {
        Self {
            start: json!({ "table": name }).to_string(),
            jobs_link: jobs_link(&name),
            name,
            source: format!("status unavailable: {}", error.message()),
            strategy: String::new(),
            schedule: String::new(),
            next_run: String::new(),
            freshness: String::new(),
            rows: String::new(),
            bytes: String::new(),
            last_success: String::new(),
            sparkline: String::new(),
            durations: String::new(),
        }
    }
}

/// Points of a 100 × 20 sparkline.
fn sparkline(values: &[i64]) -> String {
    let top = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = 100.0 / (values.len().max(2) - 1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", i as f64 * step, 19.0 - v as f64 / top * 18.0))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(value: serde_json::Value) -> Job {
        let mut base = json!({
            "job_id": "j1", "table": "s.t", "strategy": "full", "trigger": "manual",
            "state": "running", "rows": 50, "bytes": 4096, "source_rows": null, "source_bytes": 0,
            "files": 0, "error": null, "attempt": 1, "retry_at": null,
            "created_at": "2026-11-30T12:00:00Z", "started_at": "2026-11-30T12:00:01Z",
            "finished_at": null, "duration_ms": 1500, "cancellable": true, "retryable": false,
        });
        if let (Some(base), Some(value)) = (base.as_object_mut(), value.as_object()) {
            base.extend(value.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn jobs_show_a_share_of_the_source_only_when_its_rows_are_known() {
        let now = Utc::now();
        let known = job_row(
            job(json!({"source_rows": 200, "source_bytes": 1536, "files": 1})),
            now,
        );
        assert_eq!(
            (known.progress, known.percent.as_deref()),
            (Some(25), Some("25%"))
        );
        assert_eq!(known.source, "source: 1 file, 1.5 KiB, 200 rows");
        assert!(known.cancel.is_some() && known.retry.is_none());
        let csv = job_row(job(json!({"source_bytes": 2048, "files": 3})), now);
        assert_eq!(
            (csv.progress, csv.source.as_str()),
            (None, "source: 3 files, 2.0 KiB")
        );
        let failed = job_row(
            job(
                json!({"state": "failed", "error": "boom", "cancellable": false, "retryable": true}),
            ),
            now,
        );
        assert!(failed.cancel.is_none() && failed.retry.is_some());
        assert_eq!(
            (failed.error.as_str(), failed.source.as_str()),
            ("boom", "")
        );
    }

    #[test]
    fn sparklines_scale_to_the_slowest_sync() {
        assert_eq!(sparkline(&[100, 200, 50]), "0.0,10.0 50.0,1.0 100.0,14.5");
        assert_eq!(sparkline(&[]), "");
    }
}

//! `GET /admin`: what the node is doing now — running queries (with a
//! cancel button), open MCP sessions, health, and the last hour's charts.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tonic::Status;

use super::session::Admin;
use super::{Chrome, Dashboard, View, view};
use crate::telemetry::{self, Sample};

#[derive(Template)]
#[template(path = "dashboard/now.html")]
struct NowPage {
    chrome: Chrome,
    version: &'static str,
    uptime: String,
    memory: String,
    checks: Vec<CheckRow>,
    queries: Vec<QueryRow>,
    /// None when they could not be read at once (being opened or closed).
    sessions: Option<Vec<SessionRow>>,
    charts: Vec<Chart>,
}

struct CheckRow {
    name: &'static str,
    ok: bool,
    error: String,
}

/// `query.running`'s answer.
#[derive(Deserialize)]
struct Running {
    queries: Vec<RunningQuery>,
}

#[derive(Deserialize)]
struct RunningQuery {
    query_id: String,
    principal: String,
    swarm: Option<String>,
    sql: String,
    started: DateTime<Utc>,
    seconds: f64,
    rows: u64,
    bytes: u64,
}

struct QueryRow {
    id: String,
    principal: String,
    swarm: String,
    sql: String,
    started: String,
    duration: String,
    rows: String,
    bytes: String,
    /// The body of the cancel button's action.
    cancel: String,
}

struct SessionRow {
    principal: String,
    opened: String,
}

pub(super) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
) -> Response {
    let made = build(&dashboard, &admin, &view).await;
    view.render(&admin, made)
}

async fn build(dashboard: &Dashboard, admin: &Admin, view: &View) -> Result<NowPage, Status> {
    let services = &dashboard.services;
    let now = Utc::now();
    let checks = crate::http::health::checks(services)
        .await
        .into_iter()
        .map(|c| CheckRow {
            name: c.name,
            ok: c.ok,
            error: c.error.unwrap_or_default(),
        })
        .collect();
    let replica = Arc::clone(&services.replica);
    let memory = match tokio::task::spawn_blocking(move || replica.memory_bytes()).await {
        Ok(Ok(bytes)) => view::bytes(bytes),
        _ => "unknown".into(),
    };
    let running: Running = dashboard
        .call(admin, "query.running", serde_json::json!({}))
        .await?;
    let queries = running
        .queries
        .into_iter()
        .map(|q| QueryRow {
            cancel: serde_json::json!({ "query_id": q.query_id }).to_string(),
            id: q.query_id,
            principal: q.principal,
            swarm: q.swarm.unwrap_or_default(),
            sql: q.sql,
            started: view::time(&q.started),
            duration: view::duration_ms((q.seconds * 1000.0) as i64),
            rows: view::count(q.rows),
            bytes: view::bytes(q.bytes),
        })
        .collect();
    let sessions = (services.sessions)().map(|open| {
        open.into_iter()
            .map(|s| SessionRow {
                principal: s.principal,
                opened: view::relative(&s.opened, now),
            })
            .collect()
    });
    Ok(NowPage {
        chrome: view.chrome("now", admin),
        version: env!("CARGO_PKG_VERSION"),
        uptime: view::duration_ms(dashboard.started.elapsed().as_millis() as i64),
        memory,
        checks,
        queries,
        sessions,
        charts: charts(&telemetry::history().samples(now)),
    })
}

/// One chart: lines over the last hour, drawn in a 360 × 100 box.
pub(super) struct Chart {
    title: &'static str,
    /// The top of the scale, as a label.
    top: String,
    lines: Vec<Line>,
}

/// One series; quiet intervals (no latency to show) break it into runs.
struct Line {
    class: &'static str,
    label: &'static str,
    runs: Vec<String>,
}

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 100.0;

fn charts(samples: &[Sample]) -> Vec<Chart> {
    vec![
        chart(
            "Requests per second",
            samples,
            &[
                ("a", "requests", |s| Some(s.requests)),
                ("b", "with results", |s| Some(s.results)),
            ],
            |top| format!("{top:.1}/s"),
        ),
        chart(
            "Latency",
            samples,
            &[("a", "p50", |s| s.p50), ("c", "p99", |s| s.p99)],
            |top| view::duration_ms((top * 1000.0).round() as i64),
        ),
        chart(
            "Denials and errors per second",
            samples,
            &[
                ("c", "denials", |s| Some(s.denials)),
                ("d", "errors", |s| Some(s.errors)),
            ],
            |top| format!("{top:.1}/s"),
        ),
    ]
}

type Series = (&'static str, &'static str, fn(&Sample) -> Option<f64>);

fn chart(
    title: &'static str,
    samples: &[Sample],
    series: &[Series],
    label: fn(f64) -> String,
) -> Chart {
    let top = series
        .iter()
        .flat_map(|(_, _, value)| samples.iter().filter_map(value))
        .fold(0.0f64, f64::max);
    let scale = if top > 0.0 { top } else { 1.0 };
    let step = WIDTH / (samples.len().max(2) - 1) as f64;
    let lines = series
        .iter()
        .map(|(class, name, value)| {
            let mut runs = Vec::new();
            let mut run: Vec<(f64, f64)> = Vec::new();
            for (i, sample) in samples.iter().enumerate() {
                match value(sample) {
                    Some(v) => {
                        run.push((i as f64 * step, HEIGHT - v / scale * (HEIGHT - 2.0) - 1.0))
                    }
                    None if !run.is_empty() => runs.push(points(&std::mem::take(&mut run))),
                    None => {}
                }
            }
            if !run.is_empty() {
                runs.push(points(&run));
            }
            Line {
                class,
                label: name,
                runs,
            }
        })
        .collect();
    Chart {
        title,
        top: label(top),
        lines,
    }
}

/// A polyline's `points`; a lone point becomes a short dash, so an
/// interval between quiet ones still shows.
fn points(run: &[(f64, f64)]) -> String {
    let dash;
    let run = match run {
        [(x, y)] => {
            let other = if x + 1.5 > WIDTH { x - 1.5 } else { x + 1.5 };
            dash = [(*x, *y), (other, *y)];
            &dash[..]
        }
        _ => run,
    };
    run.iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: f64, p50: Option<f64>) -> Sample {
        Sample {
            at: Utc::now(),
            requests,
            results: 0.0,
            errors: 0.0,
            denials: 0.0,
            p50,
            p99: p50,
        }
    }

    #[test]
    fn charts_scale_to_their_top_and_break_where_there_is_no_latency() {
        let samples = [
            sample(1.0, Some(0.01)),
            sample(2.0, None),
            sample(0.5, Some(0.02)),
        ];
        let charts = charts(&samples);
        let rate = &charts[0];
        assert_eq!(rate.top, "2.0/s");
        // The busiest interval touches the top of the box; the others scale.
        assert_eq!(rate.lines[0].runs, vec!["0.0,50.0 180.0,1.0 360.0,74.5"]);
        let latency = &charts[1];
        assert_eq!(
            latency.lines[0].runs,
            vec!["0.0,50.0 1.5,50.0", "360.0,1.0 358.5,1.0"],
            "a quiet interval breaks the line; lone points show as dashes"
        );
        assert_eq!(latency.top, "20 ms");
    }
}

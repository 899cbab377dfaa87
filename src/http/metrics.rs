//! `GET /metrics`: Prometheus text. Counters and histograms accumulate
//! where things happen (see [`crate::telemetry`]); the gauges here are
//! read from the services at scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;

use super::Services;
use crate::telemetry;

/// The metrics, after refreshing the gauges.
pub(super) async fn metrics(State(services): State<Arc<Services>>) -> impl IntoResponse {
    refresh(&services).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
}

async fn refresh(services: &Services) {
    let gateway = &services.gateway;
    telemetry::gauge(
        "airlock_active_queries",
        &[],
        gateway.query.running().len() as f64,
    );
    for gauge in &services.gauges {
        gauge();
    }
    let replica = Arc::clone(&services.replica);
    match tokio::task::spawn_blocking(move || replica.memory_bytes()).await {
        Ok(Ok(bytes)) => telemetry::gauge("airlock_duckdb_memory_bytes", &[], bytes as f64),
        Ok(Err(e)) => tracing::warn!(error = %e, "reading DuckDB memory for /metrics"),
        Err(e) => tracing::warn!(error = %e, "reading DuckDB memory for /metrics"),
    }
    telemetry::gauge(
        "airlock_sync_jobs",
        &[("state", "active".into())],
        services.sync.active_jobs() as f64,
    );
    match services.sync.last_synced().await {
        Ok(tables) => {
            let now = Utc::now();
            for (table, finished) in tables {
                if let Some(finished) = finished {
                    let age = (now - finished).num_milliseconds().max(0) as f64 / 1000.0;
                    telemetry::gauge(
                        "airlock_replica_age_seconds",
                        &[("table", table.to_string())],
                        age,
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading sync freshness for /metrics"),
    }
    for (swarm, bytes) in gateway.artifacts.bytes_by_swarm() {
        let swarm = swarm.unwrap_or_else(|| "(admins)".into());
        telemetry::gauge("airlock_artifact_bytes", &[("swarm", swarm)], bytes as f64);
    }
}

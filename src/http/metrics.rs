//! `GET /metrics`: Prometheus text, for admins and the metrics token
//! (`AIRLOCK_METRICS_TOKEN`): table and swarm names are in its labels.
//! Counters and histograms accumulate where things happen (see
//! [`crate::telemetry`]); the gauges here are read from the services at
//! scrape time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::Services;
use super::error::ApiError;
use crate::auth::AuthError;
use crate::{status, telemetry};

/// The metrics, after refreshing the gauges.
pub(super) async fn metrics(State(services): State<Arc<Services>>, headers: HeaderMap) -> Response {
    if let Err(refused) = allowed(&services, &headers).await {
        return ApiError(refused).into_response();
    }
    refresh(&services).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
        .into_response()
}

/// The metrics token, or an admin's token.
async fn allowed(services: &Services, headers: &HeaderMap) -> Result<(), tonic::Status> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if let (Some(token), Some(presented)) = (&services.metrics_token, presented) {
        // Digests compare in time independent of where the tokens differ.
        if Sha256::digest(token.as_bytes()) == Sha256::digest(presented.as_bytes()) {
            return Ok(());
        }
    }
    let principal = services
        .gateway
        .auth
        .authenticate(header)
        .await
        .map_err(status::auth)?;
    principal
        .require_admin("/metrics")
        .map_err(|e| status::auth(AuthError::from(e)))
}

async fn refresh(services: &Services) {
    let gateway = &services.gateway;
    telemetry::gauge(
        "airlock_active_queries",
        &[],
        gateway.query.running().len() as f64,
    );
    if let Some(open) = (services.sessions)() {
        telemetry::gauge("airlock_mcp_sessions", &[], open.len() as f64);
    }
    let replica = Arc::clone(&services.replica);
    match tokio::task::spawn_blocking(move || replica.memory_bytes()).await {
        Ok(Ok(bytes)) => telemetry::gauge("airlock_duckdb_memory_bytes", &[], bytes as f64),
        Ok(Err(e)) => tracing::warn!(error = %e, "reading DuckDB memory for /metrics"),
        Err(e) => tracing::warn!(error = %e, "reading DuckDB memory for /metrics"),
    }
    let writer = if services.sync.is_writer() { 1.0 } else { 0.0 };
    telemetry::gauge("airlock_writer", &[], writer);
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
    for (table, epoch) in services.sync.all_served_epochs() {
        telemetry::gauge("airlock_replica_epoch", &[("table", table)], epoch as f64);
    }
    for (swarm, bytes) in gateway.artifacts.bytes_by_swarm() {
        let swarm = swarm.unwrap_or_else(|| "(admins)".into());
        telemetry::gauge("airlock_artifact_bytes", &[("swarm", swarm)], bytes as f64);
    }
}

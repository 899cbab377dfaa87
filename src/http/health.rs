//! Liveness (`/healthz`) and readiness (`/readyz`) for load balancers and
//! orchestrators.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use serde::Serialize;

use super::Services;

/// The process is up and serving HTTP.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// One readiness check's outcome: `ok`, or why not.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// This node's name (host and Flight port).
    node: String,
    /// `writer` on the node that runs syncs, `reader` on the others.
    role: &'static str,
    checks: Vec<Check>,
}

/// One part of the node, and whether it works.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    /// Why it failed (absent when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The node can serve queries: the replica and the metadata store answer,
/// the published tables are restored (cluster) and the sync scheduler
/// runs. 503 names what does not.
pub(super) async fn readyz(State(health): State<Arc<Services>>) -> impl IntoResponse {
    let checks = checks(&health).await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let role = if health.sync.is_writer() {
        "writer"
    } else {
        "reader"
    };
    let node = health.sync.node().to_string();
    let readiness = Readiness {
        ready,
        node,
        role,
        checks,
    };
    (status, Json(readiness))
}

/// The replica, the snapshots, the metadata store and the scheduler, checked now.
pub(crate) async fn checks(health: &Services) -> Vec<Check> {
    let replica = Arc::clone(&health.replica);
    let replica = tokio::task::spawn_blocking(move || replica.check())
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let metadata = health.sync.check_metadata().await;
    let scheduler = if health.sync.scheduler_running() {
        Ok(())
    } else {
        Err("the sync scheduler stopped; the log says why".to_string())
    };
    // A node of a cluster serves once it holds every published table.
    let snapshots = if health.sync.snapshots_restored() {
        Ok(())
    } else {
        Err("restoring the published tables from the snapshot store".to_string())
    };
    vec![
        check("replica", replica),
        check("snapshots", snapshots),
        check("metadata", metadata.map_err(|e| e.to_string())),
        check("scheduler", scheduler),
    ]
}

fn check(name: &'static str, outcome: Result<(), String>) -> Check {
    match outcome {
        Ok(()) => Check {
            name,
            ok: true,
            error: None,
        },
        Err(error) => Check {
            name,
            ok: false,
            error: Some(error),
        },
    }
}

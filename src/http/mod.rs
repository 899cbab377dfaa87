//! The HTTP port: liveness and readiness for load balancers and
//! orchestrators. Like `flight`, a front end: it asks the services and
//! translates their answers to HTTP, deciding nothing itself.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::TcpListener;

use crate::replica::Replica;
use crate::sync::SyncService;

/// Where the HTTP port listens: an address, or nowhere (`none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(pub Option<SocketAddr>);

impl Default for HttpAddr {
    fn default() -> Self {
        Self(Some(SocketAddr::from(([127, 0, 0, 1], 8080))))
    }
}

impl fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("none"),
        }
    }
}

impl FromStr for HttpAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("none") {
            return Ok(Self(None));
        }
        text.parse()
            .map(|addr| Self(Some(addr)))
            .map_err(|_| format!("'{text}' is not HOST:PORT (e.g. 127.0.0.1:8080) or 'none'"))
    }
}

impl Serialize for HttpAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HttpAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the health routes ask.
#[derive(Debug, Clone)]
pub struct Health {
    /// The DuckDB replica.
    pub replica: Arc<Replica>,
    /// Registrations, jobs (the metadata store) and the scheduler.
    pub sync: Arc<SyncService>,
}

/// The routes of the HTTP port.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(health))
}

/// Serves `router` on `listener` until `shutdown` completes; requests in
/// flight are finished first.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// One readiness check's outcome: `ok`, or why not.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    /// Why it failed (absent when it passed).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The node can serve queries: the replica and the metadata store answer
/// and the sync scheduler runs. 503 names what does not.
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
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
    let checks = vec![
        check("replica", replica),
        check("metadata", metadata.map_err(|e| e.to_string())),
        check("scheduler", scheduler),
    ];
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks }))
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

#[cfg(test)]
mod tests {
    use super::HttpAddr;

    #[test]
    fn http_addr_is_an_address_or_none() {
        assert_eq!("none".parse::<HttpAddr>().unwrap(), HttpAddr(None));
        assert_eq!(
            "0.0.0.0:9000".parse::<HttpAddr>().unwrap().to_string(),
            "0.0.0.0:9000"
        );
        let error = "localhost".parse::<HttpAddr>().unwrap_err();
        assert!(error.contains("HOST:PORT"), "{error}");
        assert_eq!(HttpAddr::default().to_string(), "127.0.0.1:8080");
    }
}

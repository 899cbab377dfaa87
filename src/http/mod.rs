//! The HTTP port: health for load balancers and orchestrators, and a JSON
//! API for every Flight action and for queries, for curl, browsers and
//! tools without a Flight driver. Like `flight`, a front end: requests go
//! through [`Gateway`] (same tokens, grants, limits, audit and errors as
//! Flight) and answers are translated to HTTP, deciding nothing here.
//!
//! ```text
//!  health.rs   GET /healthz, /readyz
//!  metrics.rs  GET /metrics (Prometheus text; gauges read at scrape time)
//!  api.rs      POST /api/v1/login, /api/v1/actions/{name}, /api/v1/query
//!  results.rs  query results as Arrow IPC, Parquet, CSV or JSON, streamed
//!  error.rs    a failure's code → HTTP status + JSON body, in one place
//!  tls.rs      TLS with Flight's certificate; the peer address of either
//!  openapi.rs  GET /api/v1/openapi.json, generated from the request types
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::replica::Replica;
use crate::sync::SyncService;

mod api;
mod error;
pub(crate) mod health;
mod metrics;
mod openapi;
mod results;
mod tls;

pub(crate) use error::{error_response, http_status};
pub use tls::{Peer, server_config};

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

/// What the HTTP routes call.
#[derive(Clone)]
pub struct Services {
    /// Authentication, queries, actions and audit, as Flight has them.
    pub gateway: Gateway,
    /// The DuckDB replica (readiness).
    pub replica: Arc<Replica>,
    /// Registrations, jobs (the metadata store) and the scheduler (readiness).
    pub sync: Arc<SyncService>,
    /// The MCP sessions open now (none when that cannot be read at once).
    pub sessions: crate::telemetry::OpenSessions,
    /// Whether the port serves TLS (the dashboard's cookie is `Secure`).
    pub tls: bool,
    /// A bearer token that may read `/metrics` besides admins'.
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// The routes of the HTTP port.
pub fn router(services: Services) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/login", post(api::login))
        .route("/api/v1/actions/{name}", post(api::action))
        .route("/api/v1/query", post(api::query))
        .route("/api/v1/openapi.json", get(openapi_json))
        .fallback(api::no_route)
        .with_state(Arc::new(services))
}

/// The OpenAPI document, made once.
async fn openapi_json() -> axum::Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(openapi::document).clone())
}

/// Serves `router` on `listener` (with TLS when `tls` is given) until
/// `shutdown` completes; requests in flight are finished first.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address goes into audit records, as Flight's does.
    let service = router.into_make_service_with_connect_info::<Peer>();
    match tls {
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?;
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
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

//! `airlock mcp --server URL --token T`: MCP over stdio for local agent
//! runtimes, as a thin bridge to a running server's `/mcp` (DuckDB's file
//! lock forbids a second process on the data directory, and one server
//! keeps one audit trail). Messages pass through unchanged: the tools,
//! grants and audit are the server's.

use rmcp::ErrorData;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, Transport};
use rmcp::{RoleServer, model::RequestId};

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The server could not be reached, or refused the token.
    #[error("cannot reach the MCP endpoint {url}: {message}")]
    Server {
        /// The endpoint.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Writing to the agent runtime failed.
    #[error("writing to stdout failed: {0}")]
    Stdout(String),
}

/// Serves MCP on stdin/stdout, forwarding every message to `url` with
/// `token`, until the agent runtime closes stdin.
pub async fn bridge_stdio(url: String, token: String) -> Result<(), BridgeError> {
    // reqwest is built without a crypto provider; ring is tonic's too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut agent =
        AsyncRwTransport::<RoleServer, _, _>::new(tokio::io::stdin(), tokio::io::stdout());
    let mut server = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.clone()).auth_header(token),
    );
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<ServerJsonRpcMessage>();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut started = false;
    let to_agent = |e: std::io::Error| BridgeError::Stdout(e.to_string());
    loop {
        tokio::select! {
            message = agent.receive() => {
                let Some(message) = message else { break };
                let id = match &message {
                    ClientJsonRpcMessage::Request(request) => Some(request.id.clone()),
                    _ => None,
                };
                let sending = server.send(message);
                match id {
                    // Once started, a slow tool call must not hold up others.
                    Some(id) if started => {
                        let failed = failed_tx.clone();
                        in_flight.spawn(async move {
                            if let Err(e) = sending.await {
                                let _ = failed.send(upstream_error(id, &e));
                            }
                        });
                    }
                    // The handshake (initialize, then notifications/initialized)
                    // and notifications go in order.
                    id => {
                        if let Err(e) = sending.await {
                            if !started {
                                return Err(BridgeError::Server { url, message: e.to_string() });
                            }
                            if let Some(id) = id {
                                agent.send(upstream_error(id, &e)).await.map_err(to_agent)?;
                            }
                        }
                        started = true;
                    }
                }
            }
            message = server.receive() => {
                let Some(message) = message else { break };
                agent.send(message).await.map_err(to_agent)?;
            }
            Some(message) = failed_rx.recv() => agent.send(message).await.map_err(to_agent)?,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    let _ = server.close().await;
    Ok(())
}

fn upstream_error(id: RequestId, error: &dyn std::fmt::Display) -> ServerJsonRpcMessage {
    ServerJsonRpcMessage::error(
        ErrorData::internal_error(format!("the airlock server did not answer: {error}"), None),
        Some(id),
    )
}

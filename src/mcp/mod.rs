//! The MCP endpoint: streamable HTTP at `/mcp` on the HTTP port (rmcp's
//! tower service), for agent runtimes. A front end like `flight` and
//! `http`: every tool is a call through [`Gateway`] — the caller's token,
//! grants, limits and audit, and the errors Flight gives, as tool errors.
//!
//! ```text
//!  mod.rs     the route: bearer check on every request, host check, the handler
//!  tools.rs   the tools: descriptions and schemas for models, each → an action or a query
//!  render.rs  rows as a compact CSV table within a character budget
//!  bridge.rs  `airlock mcp`: stdio ↔ a running server's /mcp, for local runtimes
//! ```

mod bridge;
mod render;
mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::audit::AuditHandle;
use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::status;
use crate::telemetry::{OpenSession, OpenSessions, RequestLabels};

pub use bridge::bridge_stdio;

/// URIs of table resources: `airlock://table/schema.name`.
const TABLE_URI: &str = "airlock://table/";

/// MCP settings (`[mcp]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// `Host` headers `/mcp` answers (DNS-rebinding protection), e.g.
    /// `["airlock.example.com"]` behind a proxy; `["*"]` for any. Empty:
    /// loopback names when the HTTP port listens on loopback, any host
    /// otherwise (every request needs a bearer token either way).
    pub allowed_hosts: Vec<String>,
}

/// The `/mcp` route, stopped with `shutdown`, and its open sessions (for
/// the `/metrics` gauge and the dashboard).
pub fn router(
    gateway: Gateway,
    settings: &McpSettings,
    listening: Option<SocketAddr>,
    shutdown: CancellationToken,
) -> (Router, OpenSessions) {
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(shutdown);
    let loopback = listening.is_some_and(|a| a.ip().is_loopback());
    config = if settings.allowed_hosts.iter().any(|h| h == "*") {
        config.disable_allowed_hosts()
    } else if !settings.allowed_hosts.is_empty() {
        config.with_allowed_hosts(settings.allowed_hosts.clone())
    } else if loopback {
        config
    } else {
        config.disable_allowed_hosts()
    };
    let nl = gateway.actions.nl_configured();
    let handler = AirlockMcp {
        gateway: gateway.clone(),
        nl,
    };
    let sessions = Arc::new(LocalSessionManager::default());
    let service =
        StreamableHttpService::new(move || Ok(handler.clone()), Arc::clone(&sessions), config);
    let owners: Arc<Mutex<HashMap<String, OpenSession>>> = Arc::default();
    let guard = Guard {
        gateway,
        sessions: Arc::clone(&sessions),
        owners: Arc::clone(&owners),
    };
    let router = Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(guard, authenticate));
    let open = move || {
        // A scrape must not wait on a session being opened or closed:
        // none (unknown) then.
        let live = sessions.sessions.try_read().ok()?;
        let owners = owners.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Vec<OpenSession> = live
            .keys()
            .filter_map(|id| owners.get(id.as_ref()).cloned())
            .collect();
        open.sort_by_key(|s| s.opened);
        Some(open)
    };
    (router, Arc::new(open))
}

/// What the bearer check needs: the gateway, and which token opened each
/// session (a session answers only the token that opened it).
#[derive(Clone)]
struct Guard {
    gateway: Gateway,
    sessions: Arc<LocalSessionManager>,
    owners: Arc<Mutex<HashMap<String, OpenSession>>>,
}

impl Guard {
    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenSession>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A refused request: audited, and answered like the JSON API.
    fn refuse(&self, status: Status, remote: Option<SocketAddr>) -> Response {
        let audit = self
            .gateway
            .begin("MCP", RequestLabels::new("mcp", "request", ""), remote);
        audit.finish(status.code(), status.message(), 0);
        crate::http::error_response(status)
    }
}

const SESSION_HEADER: &str = "mcp-session-id";

/// No request reaches the MCP service without a valid bearer token, and
/// none reaches a session another token opened (its stream could replay
/// that token's results).
async fn authenticate(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<crate::http::Peer>>()
        .map(|c| c.0.0);
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let principal = match guard.gateway.auth.authenticate(header.as_deref()).await {
        Ok(principal) => principal,
        Err(e) => return guard.refuse(status::auth(e), remote),
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(session) = &session {
        let owner = guard.owners().get(session).map(|o| o.token_id.clone());
        if owner.is_some_and(|owner| owner != principal.token_id) {
            let missing = status::not_found("no such MCP session; initialize a new one");
            return guard.refuse(missing, remote);
        }
    }
    let opener = OpenSession {
        token_id: principal.token_id.clone(),
        principal: principal.label(),
        opened: chrono::Utc::now(),
    };
    let closing = request.method() == axum::http::Method::DELETE;
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    match session {
        Some(session) if closing => {
            guard.owners().remove(&session);
        }
        Some(_) => {}
        None => {
            if let Some(opened) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                let live = guard.sessions.sessions.try_read().ok();
                let mut owners = guard.owners();
                // Forget sessions that ended (closed, or idle past their keep-alive).
                if let Some(live) = live {
                    owners.retain(|id, _| live.contains_key(id.as_str()));
                }
                owners.insert(opened.to_string(), opener);
            }
        }
    }
    response
}

/// The MCP server handler: one per session, sharing the gateway.
#[derive(Debug, Clone)]
struct AirlockMcp {
    gateway: Gateway,
    /// Whether a language model is configured (`generate_sql`, `answer_question`).
    nl: bool,
}

/// Who is calling, from the HTTP request the middleware authenticated.
fn caller(
    context: &RequestContext<RoleServer>,
) -> Result<(Principal, Option<SocketAddr>), ErrorData> {
    let parts = context.extensions.get::<Parts>();
    let principal = parts
        .and_then(|p| p.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("a bearer token is required", None))?;
    let remote = parts
        .and_then(|p| p.extensions.get::<ConnectInfo<crate::http::Peer>>())
        .map(|c| c.0.0);
    Ok((principal, remote))
}

impl AirlockMcp {
    /// The audit record of an MCP `method` (for `tools/call`, `tool` names
    /// the tool).
    fn audit(
        &self,
        method: &str,
        tool: Option<&str>,
        principal: &Principal,
        remote: Option<SocketAddr>,
    ) -> AuditHandle {
        let (request, labels) = match tool {
            Some(tool) => (
                format!("MCP {tool}"),
                RequestLabels::new("mcp", method, tools::operation_label(tool)),
            ),
            None => (
                format!("MCP {method}"),
                RequestLabels::new("mcp", method, ""),
            ),
        };
        let audit = self.gateway.begin(request, labels, remote);
        audit.principal(principal);
        audit
    }
}

impl ServerHandler for AirlockMcp {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Governed, read-only SQL over warehouse tables. Start with list_tables or search_context, \
             then describe_table; query returns at most a few hundred rows — use export_query for \
             whole results. You only ever see the rows and columns your grant allows.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (principal, remote) = caller(&context)?;
        let tools = tools::catalog(self.nl);
        self.audit("tools/list", None, &principal, remote)
            .finish(Code::Ok, "", 0);
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (principal, remote) = caller(&context)?;
        let audit = self.audit("tools/call", Some(&request.name), &principal, remote);
        let arguments = request.arguments.unwrap_or_default();
        if let Some(body) = serde_json::to_vec(&arguments)
            .ok()
            .and_then(|b| crate::redact::json_body(&b))
        {
            audit.statement(body);
        }
        let outcome = tools::call(
            &self.gateway,
            &principal,
            &request.name,
            &arguments,
            self.nl,
            &audit,
        )
        .await;
        Ok(match outcome {
            Ok(text) => {
                audit.finish(Code::Ok, "", text.len() as u64);
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            Err(status) => {
                audit.finish(status.code(), status.message(), 0);
                CallToolResult::error(vec![ContentBlock::text(tool_error(&status))])
            }
        }
        .into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let (principal, remote) = caller(&context)?;
        let audit = self.audit("resources/list", None, &principal, remote);
        let listed = self
            .gateway
            .action(&principal, "table.list", b"{}", None)
            .await;
        let tables = match listed {
            Ok(crate::actions::Answer::Json(value)) => {
                value["tables"].as_array().cloned().unwrap_or_default()
            }
            Ok(_) => Vec::new(),
            Err(status) => {
                audit.finish(status.code(), status.message(), 0);
                return Err(ErrorData::internal_error(tool_error(&status), None));
            }
        };
        audit.finish(Code::Ok, "", 0);
        let resources = tables
            .iter()
            .filter_map(|t| {
                let name = t["name"].as_str()?;
                let resource = Resource::new(format!("{TABLE_URI}{name}"), name)
                    .with_mime_type("application/json");
                Some(match t["description"].as_str() {
                    Some(description) => resource.with_description(description),
                    None => resource,
                })
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        caller(&context)?;
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{TABLE_URI}{{name}}"), "table")
                .with_description("A table you may query, e.g. airlock://table/sales.orders: its columns, types and descriptions")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let (principal, remote) = caller(&context)?;
        let audit = self.audit("resources/read", None, &principal, remote);
        audit.statement(request.uri.clone());
        let Some(table) = request.uri.strip_prefix(TABLE_URI) else {
            audit.finish(Code::NotFound, "not an airlock table URI", 0);
            return Err(ErrorData::resource_not_found(
                format!(
                    "{} is not a table resource; they look like {TABLE_URI}schema.table",
                    request.uri
                ),
                None,
            ));
        };
        let body = serde_json::json!({ "table": table }).to_string();
        match self
            .gateway
            .action(&principal, "table.describe", body.as_bytes(), Some(&audit))
            .await
        {
            Ok(answer) => {
                let text = tools::answer_text(answer);
                audit.finish(Code::Ok, "", text.len() as u64);
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(text, request.uri).with_mime_type("application/json"),
                ])
                .into())
            }
            Err(status) => {
                audit.finish(status.code(), status.message(), 0);
                Err(ErrorData::resource_not_found(tool_error(&status), None))
            }
        }
    }
}

/// A failure as a model reads it: the message Flight gives, and its code.
fn tool_error(status: &Status) -> String {
    let (_, code) = crate::http::http_status(status.code());
    format!("{} ({code})", status.message())
}

//! The operator dashboard at `/admin`: server-rendered pages (askama
//! templates, checked at compile time and escaping everything they show)
//! with one small embedded script that refreshes them and nothing else.
//! Like the other front ends it decides nothing: it reads through the same
//! actions and SQL an admin would send over Flight, as the logged-in admin
//! (health, memory and artifact bytes as `/readyz` and `/metrics` read
//! them), and every button is a `POST /admin/actions/{name}` that runs that
//! action, audited like its Flight twin.
//!
//! ```text
//!  session.rs   login, logout, the Admin extractor, the CSRF/origin guard
//!  actions.rs   POST /admin/actions/{name}: a form → the JSON action
//!  now.rs       GET /admin: running queries, MCP sessions, health, charts
//!  syncs.rs     GET /admin/syncs: jobs (filtered, paged) and tables
//!  access.rs    GET /admin/access: tokens and grants; a grant's editor with explain
//!  audit.rs     GET /admin/audit: the audit log, filtered and paged
//!  catalog.rs   GET /admin/artifacts, /admin/context
//!  view.rs      numbers, sizes and times as people read them
//! ```
//!
//! Pages are audited once per view (`GET /admin/…`, the filters as the
//! statement); the script's automatic refreshes (`X-Airlock-Refresh`) are
//! not, so an open tab does not fill the trail.

mod access;
mod actions;
mod audit;
mod catalog;
mod now;
mod session;
mod syncs;
mod view;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::actions::Answer;
use crate::audit::AuditHandle;
use crate::http::{Peer, Services};
use crate::status;
use crate::telemetry::RequestLabels;
use session::{Admin, Sessions};

/// The header the script's automatic refreshes carry.
const REFRESH_HEADER: &str = "x-airlock-refresh";

/// No script or style but ours, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the dashboard's routes share.
pub struct Dashboard {
    services: Services,
    sessions: Sessions,
    started: Instant,
}

/// A message shown once on the next page (what a button did).
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    ok: bool,
    text: String,
}

/// The dashboard's routes, under `/admin`.
pub fn router(services: Services) -> Router {
    let dashboard = Arc::new(Dashboard {
        services,
        sessions: Sessions::default(),
        started: Instant::now(),
    });
    Router::new()
        .route("/admin/login", get(login_page).post(session::login))
        .route("/admin/logout", post(session::logout))
        .route("/admin", get(now::page))
        .route("/admin/syncs", get(syncs::page))
        .route("/admin/access", get(access::page))
        .route("/admin/access/grant", get(access::grant_page))
        .route("/admin/access/grant/preview", post(access::preview))
        .route("/admin/artifacts", get(catalog::artifacts))
        .route("/admin/context", get(catalog::context))
        .route("/admin/audit", get(audit::page))
        .route("/admin/actions/{name}", post(actions::run))
        .route(
            "/admin/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/admin/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .layer(middleware::from_fn_with_state(
            Arc::clone(&dashboard),
            session::guard,
        ))
        .layer(middleware::map_response(security_headers))
        .with_state(dashboard)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it Chromium sends `Origin: null` with the
    // dashboard's own forms, which the origin check must refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An embedded asset; its URL carries a hash of the content, so it may be
/// cached for good.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The hash the asset URLs carry.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let digest = Sha256::digest([APP_JS, APP_CSS].concat());
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// A rendered template as a page.
fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; the log says why",
            )
                .into_response()
        }
    }
}

/// The login form.
#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    error: Option<String>,
}

async fn login_page() -> Response {
    page(&LoginPage { error: None })
}

/// A failure as a page, with the status the JSON API would answer.
#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    code: &'static str,
    message: &'a str,
}

fn error_page(status: &Status) -> Response {
    let (http, code) = crate::http::http_status(status.code());
    let page = page(&ErrorPage {
        code,
        message: status.message(),
    });
    (http, page).into_response()
}

/// What every page's frame shows: the navigation, who is logged in, the
/// form token and a message from the last button.
pub(crate) struct Chrome {
    section: &'static str,
    admin: String,
    csrf: String,
    flash: Option<Flash>,
    /// Where a button on this page comes back to.
    back: String,
}

/// A page view: what was asked for, and its audit record (opened when the
/// request arrived; none for automatic refreshes).
pub(crate) struct View {
    /// Path and query.
    target: String,
    audit: Option<AuditHandle>,
}

impl FromRequestParts<Arc<Dashboard>> for View {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        let target = parts
            .uri
            .path_and_query()
            .map_or(path, |p| p.as_str())
            .to_string();
        // The script's refresh of a view this session just had audited is
        // not audited again; anything else is, header or not.
        let refresh = parts.headers.contains_key(REFRESH_HEADER);
        let session = session::cookie(&parts.headers, session::cookie_name(dashboard.services.tls));
        let repeated =
            session.is_some_and(|id| dashboard.sessions.is_refresh(id, &target, refresh));
        let audit = (!repeated).then(|| {
            let audit = begin(dashboard, parts);
            if target != path {
                audit.statement(&target);
            }
            audit
        });
        Ok(View { target, audit })
    }
}

/// Opens the audit record of a dashboard request, counted under its route
/// (never the raw path: metric labels must stay few).
fn begin(dashboard: &Dashboard, parts: &Parts) -> AuditHandle {
    let remote = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.0);
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let labels = RequestLabels::new("dashboard", &format!("{} {route}", parts.method), "");
    let request = format!("{} {}", parts.method, parts.uri.path());
    dashboard.services.gateway.begin(request, labels, remote)
}

/// Audits a request refused before its handler ran.
fn audit_refusal(
    dashboard: &Dashboard,
    parts: &Parts,
    principal: Option<&crate::principal::Principal>,
    refused: &Status,
) {
    let audit = begin(dashboard, parts);
    if let Some(principal) = principal {
        audit.principal(principal);
    }
    audit.finish(refused.code(), refused.message(), 0);
}

impl View {
    /// The frame of a page in `section` for `admin`.
    fn chrome(&self, section: &'static str, admin: &Admin) -> Chrome {
        Chrome {
            section,
            admin: admin.principal.label(),
            csrf: admin.csrf.clone(),
            flash: admin.flash.clone(),
            back: self.target.clone(),
        }
    }

    /// Adds what the request did to its audit record (a POSTed form).
    fn note(&self, statement: impl Into<String>) {
        if let Some(audit) = &self.audit {
            audit.statement(statement);
        }
    }

    /// Answers a request whose query string or form was not what the page
    /// takes.
    fn reject(&self, admin: &Admin, rejection: impl std::fmt::Display) -> Response {
        let refused = status::bad_request(rejection.to_string());
        if let Some(audit) = &self.audit {
            audit.principal(&admin.principal);
            audit.finish(refused.code(), refused.message(), 0);
        }
        error_page(&refused)
    }

    /// Renders what a page handler made of the request, finishing its
    /// audit record.
    fn render<T: Template>(&self, admin: &Admin, made: Result<T, Status>) -> Response {
        if let Some(audit) = &self.audit {
            audit.principal(&admin.principal);
        }
        let (response, code, message) = match made {
            Ok(template) => (page(&template), Code::Ok, String::new()),
            Err(e) => (error_page(&e), e.code(), e.message().to_string()),
        };
        if let Some(audit) = &self.audit {
            audit.finish(code, &message, 0);
        }
        response
    }
}

impl Dashboard {
    /// Runs the action `name` as the admin, unaudited (the page view is
    /// the audited request), and reads its answer as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        admin: &Admin,
        name: &str,
        body: Value,
    ) -> Result<T, Status> {
        let body = serde_json::to_vec(&body).map_err(|e| status::internal(e.to_string()))?;
        let answer = self
            .services
            .gateway
            .action(&admin.principal, name, &body, None)
            .await?;
        let (Answer::Json(value) | Answer::Query { answer: value, .. }) = answer;
        serde_json::from_value(value)
            .map_err(|e| status::internal(format!("reading the answer of {name}: {e}")))
    }
}

//! Who may use the dashboard: admins only, by a session cookie (after
//! logging in with the admin password or an admin token) or a bearer
//! token (curl). The cookie holds a random id; the admin token and the
//! session's CSRF token stay on the server. Every state-changing request
//! passes [`guard`]: it must come from this origin and, under a cookie,
//! carry the session's CSRF token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tonic::Status;

use super::{Dashboard, Flash};
use crate::http::Peer;
use crate::principal::Principal;
use crate::status;
use crate::telemetry::RequestLabels;

/// Largest form a dashboard request may send (grant and context edits).
pub(super) const FORM_LIMIT: usize = 256 * 1024;

/// A logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    /// The admin token the session acts with, and its id.
    token: String,
    token_id: String,
    /// Issued at login (revoked at logout), or brought by the admin.
    issued: bool,
    csrf: String,
    expires_at: DateTime<Utc>,
    flash: Option<Flash>,
    /// The last page view audited, and when: an automatic refresh of it
    /// soon after is not audited again.
    last_view: Option<(String, std::time::Instant)>,
}

/// How long after an audited view its automatic refreshes go unaudited.
const REFRESH_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Sessions by cookie id, on this node (they end at restart).
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Session> {
        let now = Utc::now();
        self.lock().get(id).filter(|s| s.expires_at > now).cloned()
    }

    /// Keeps a message for the session's next page.
    pub(super) fn flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.lock().get_mut(id) {
            session.flash = Some(flash);
        }
    }

    fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Whether a view of `target` is a refresh of the session's last
    /// audited view; if not, it becomes the last audited view.
    pub(super) fn is_refresh(&self, id: &str, target: &str, refresh: bool) -> bool {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(id) else {
            return false;
        };
        let recent = session
            .last_view
            .as_ref()
            .is_some_and(|(seen, at)| seen == target && at.elapsed() < REFRESH_WINDOW);
        if refresh && recent {
            return true;
        }
        session.last_view = Some((target.to_string(), std::time::Instant::now()));
        false
    }
}

/// The cookie's name: `__Host-` under TLS (the browser then insists on
/// Secure, Path=/ and no Domain).
pub(super) fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-airlock_admin"
    } else {
        "airlock_admin"
    }
}

/// A value of `name` in the request's cookies.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Digests compare in time independent of where the values differ.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// An admin using the dashboard.
#[derive(Debug, Clone)]
pub(super) struct Admin {
    pub(super) principal: Principal,
    /// The cookie session (none under a bearer token).
    pub(super) session: Option<String>,
    /// The token forms must carry (empty under a bearer token).
    pub(super) csrf: String,
    /// A message from the previous request.
    pub(super) flash: Option<Flash>,
}

/// Not an admin: pages send browsers to the login form; a request with a
/// token that is not an admin's gets 403.
#[derive(Debug)]
pub(super) enum Refused {
    Login,
    Status(Status),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Login => Redirect::to("/admin/login").into_response(),
            Refused::Status(status) => super::error_page(&status),
        }
    }
}

impl FromRequestParts<Arc<Dashboard>> for Admin {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let auth = &dashboard.services.gateway.auth;
        if let Some(header) = parts.headers.get(header::AUTHORIZATION) {
            let header = header.to_str().ok();
            let authenticated = auth.authenticate(header).await.map_err(status::auth);
            let checked = match &authenticated {
                Ok(principal) => require_admin(principal),
                Err(e) => Err(e.clone()),
            };
            if let Err(refused) = checked {
                // A refused token is a request like any other: audited.
                let principal = authenticated.as_ref().ok();
                super::audit_refusal(dashboard, parts, principal, &refused);
                return Err(Refused::Status(refused));
            }
            let principal = authenticated.map_err(Refused::Status)?;
            return Ok(Admin {
                principal,
                session: None,
                csrf: String::new(),
                flash: None,
            });
        }
        let name = cookie_name(dashboard.services.tls);
        let id = cookie(&parts.headers, name).ok_or(Refused::Login)?;
        let session = dashboard.sessions.get(id).ok_or(Refused::Login)?;
        // The token may have been revoked or expired since login.
        let principal = auth
            .authenticate(Some(&format!("Bearer {}", session.token)))
            .await
            .map_err(|_| Refused::Login)?;
        require_admin(&principal).map_err(Refused::Status)?;
        let refresh = parts.headers.contains_key(super::REFRESH_HEADER);
        Ok(Admin {
            principal,
            session: Some(id.to_string()),
            csrf: session.csrf,
            // An automatic refresh leaves the message for the next page.
            flash: if refresh {
                None
            } else {
                dashboard.sessions.take_flash(id)
            },
        })
    }
}

fn require_admin(principal: &Principal) -> Result<(), Status> {
    principal
        .require_admin("the dashboard")
        .map_err(|e| status::auth(crate::auth::AuthError::from(e)))
}

/// The login form's fields.
#[derive(Debug, serde::Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

/// `POST /admin/login`: the admin password (or an admin token) for a
/// session cookie. Audited like the API's login.
pub(super) async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let gateway = &dashboard.services.gateway;
    let audit = gateway.begin(
        "POST /admin/login",
        RequestLabels::new("dashboard", "POST /admin/login", ""),
        Some(remote),
    );
    let token = form.token.trim();
    let (header, issued) = if token.is_empty() {
        let basic = crate::auth::basic_authorization("admin", &form.password);
        (basic, true)
    } else {
        (format!("Bearer {token}"), false)
    };
    let logged_in = match gateway.login(Some(&header), &audit).await {
        Ok((principal, token)) => require_admin(&principal).map(|()| (principal, token)),
        Err(e) => Err(e),
    };
    let (principal, token) = match logged_in {
        Ok(logged_in) => logged_in,
        Err(e) => {
            audit.finish(e.code(), e.message(), 0);
            let page = super::LoginPage {
                error: Some(e.message().to_string()),
            };
            let (code, _) = crate::http::http_status(e.code());
            return (code, super::page(&page)).into_response();
        }
    };
    audit.finish(tonic::Code::Ok, "", 0);
    let tls = dashboard.services.tls;
    // Logging in again from the same browser ends its old session, so
    // repeated logins do not leave admin tokens behind.
    let previous =
        cookie(&headers, cookie_name(tls)).and_then(|id| dashboard.sessions.lock().remove(id));
    if let Some(previous) = previous.filter(|p| p.issued)
        && let Err(e) = gateway
            .auth
            .revoke_token(&principal, &previous.token_id)
            .await
    {
        tracing::warn!(error = %e, "revoking a replaced dashboard session's token");
    }
    let id = random_id();
    let now = Utc::now();
    let expires_at = principal.expires_at;
    {
        let mut sessions = dashboard.sessions.lock();
        sessions.retain(|_, s| s.expires_at > now);
        sessions.insert(
            id.clone(),
            Session {
                token,
                token_id: principal.token_id,
                issued,
                csrf: random_id(),
                expires_at,
                flash: None,
                last_view: None,
            },
        );
    }
    let max_age = (expires_at - now).num_seconds().max(0);
    redirect_with_cookie("/admin", tls, &id, max_age)
}

/// A redirect to `to` that sets the session cookie (an empty `id` and a
/// zero `max_age` delete it).
fn redirect_with_cookie(to: &str, tls: bool, id: &str, max_age: i64) -> Response {
    let cookie = format!(
        "{}={id}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        cookie_name(tls),
        if tls { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(to).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `POST /admin/logout`: ends the session and revokes the token its login
/// issued; audited.
pub(super) async fn logout(
    State(dashboard): State<Arc<Dashboard>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    admin: Admin,
) -> Response {
    let gateway = &dashboard.services.gateway;
    let labels = RequestLabels::new("dashboard", "POST /admin/logout", "");
    let audit = gateway.begin("POST /admin/logout", labels, Some(remote));
    audit.principal(&admin.principal);
    let session = admin
        .session
        .as_ref()
        .and_then(|id| dashboard.sessions.lock().remove(id));
    if session.is_some_and(|s| s.issued) {
        let token_id = &admin.principal.token_id;
        if let Err(e) = gateway.auth.revoke_token(&admin.principal, token_id).await {
            tracing::warn!(error = %e, "revoking the dashboard session's token");
        }
    }
    audit.finish(tonic::Code::Ok, "", 0);
    redirect_with_cookie("/admin/login", dashboard.services.tls, "", 0)
}

/// Every request that changes something must come from the dashboard's
/// own pages: not from another site (`Sec-Fetch-Site`, `Origin`), and,
/// under a session cookie, with the session's CSRF token in the form
/// (`csrf`) or the `X-CSRF-Token` header. Bearer-token requests (curl)
/// carry no ambient credentials and need no token.
pub(super) async fn guard(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let refuse = |refused: Status| {
        super::audit_refusal(&dashboard, &parts, None, &refused);
        super::error_page(&refused)
    };
    let headers = &parts.headers;
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        let why = "cross-site request refused: use the dashboard's own pages";
        return refuse(status::permission_denied(why));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        if origin_host.is_none() || origin_host != host {
            let why = "request from another origin refused: use the dashboard's own pages";
            return refuse(status::permission_denied(why));
        }
    }
    let session_id = cookie(headers, cookie_name(dashboard.services.tls));
    // A bearer token is not ambient: a page on another site cannot make the
    // browser send one. A cookie is, so with one the form token is needed.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    if (bearer && session_id.is_none()) || parts.uri.path() == "/admin/login" {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let Some(session) = session_id.and_then(|id| dashboard.sessions.get(id)) else {
        return Redirect::to("/admin/login").into_response();
    };
    let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let limit = FORM_LIMIT / 1024;
            return refuse(status::bad_request(format!(
                "the form is larger than {limit} KiB"
            )));
        }
    };
    let presented = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
        });
    if !presented.is_some_and(|p| same_secret(&p, &session.csrf)) {
        let why = "missing or stale form token: reload the page and try again";
        return refuse(status::permission_denied(why));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

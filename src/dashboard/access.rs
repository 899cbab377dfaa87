//! `GET /admin/access`: swarm and agent tokens (never the token itself)
//! with expiry, state and a revoke button, and every grant rendered as
//! rules; `GET /admin/access/grant` edits one grant as JSON and shows the
//! `explain` of a sample query as its grantee.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tonic::Status;

use super::session::Admin;
use super::{Chrome, Dashboard, View, view};
use crate::policy::{ColumnRule, Grant};

#[derive(Template)]
#[template(path = "dashboard/access.html")]
struct AccessPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    grants: Vec<GrantRow>,
}

/// A token as `token.list` answers it.
#[derive(Deserialize)]
struct Token {
    id: String,
    kind: String,
    name: String,
    swarm: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    active: bool,
}

#[derive(Deserialize)]
struct Tokens {
    tokens: Vec<Token>,
}

struct TokenRow {
    id: String,
    kind: String,
    name: String,
    swarm: String,
    attributes: String,
    created: String,
    expires: String,
    state: &'static str,
    revoke: Option<String>,
}

#[derive(Deserialize)]
struct Grants {
    grants: Vec<Grant>,
}

struct GrantRow {
    key: String,
    edit: String,
    tables: Vec<RuleRow>,
    limits: String,
}

/// One table pattern's rules, in words.
struct RuleRow {
    pattern: String,
    row_filter: String,
    denied: String,
    masks: Vec<(String, String)>,
}

pub(super) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
) -> Response {
    let made = build(&dashboard, &admin, &view).await;
    view.render(&admin, made)
}

async fn build(dashboard: &Dashboard, admin: &Admin, view: &View) -> Result<AccessPage, Status> {
    let now = Utc::now();
    let tokens: Tokens = dashboard.call(admin, "token.list", json!({})).await?;
    let mut tokens: Vec<TokenRow> = tokens
        .tokens
        .into_iter()
        .filter(|t| t.kind != "admin")
        .map(|t| TokenRow {
            revoke: t.active.then(|| json!({ "id": t.id }).to_string()),
            state: match (t.active, t.revoked_at) {
                (true, _) => "active",
                (false, Some(_)) => "revoked",
                (false, None) => "expired",
            },
            id: t.id,
            kind: t.kind,
            name: t.name,
            swarm: t.swarm.unwrap_or_default(),
            attributes: t
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            created: view::time(&t.created_at),
            expires: format!(
                "{} ({})",
                view::time(&t.expires_at),
                view::relative(&t.expires_at, now)
            ),
        })
        .collect();
    // Active first, then by swarm and name.
    tokens.sort_by(|a, b| (a.state, &a.swarm, &a.name).cmp(&(b.state, &b.swarm, &b.name)));
    let grants: Grants = dashboard.call(admin, "grant.list", json!({})).await?;
    Ok(AccessPage {
        chrome: view.chrome("access", admin),
        tokens,
        grants: grants.grants.iter().map(grant_row).collect(),
    })
}

fn grant_row(grant: &Grant) -> GrantRow {
    let mut edit = form_urlencoded::Serializer::new(String::new());
    edit.append_pair("swarm", &grant.swarm);
    if let Some(agent) = &grant.agent {
        edit.append_pair("agent", agent);
    }
    let limits = &grant.limits;
    let limits = [
        limits.max_rows.map(|n| format!("max_rows {n}")),
        limits.timeout_s.map(|n| format!("timeout {n} s")),
        limits.max_concurrent.map(|n| format!("{n} at once")),
        limits.per_minute.map(|n| format!("{n} per minute")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    GrantRow {
        key: grant.key(),
        edit: format!("/admin/access/grant?{}", edit.finish()),
        tables: grant
            .tables
            .iter()
            .map(|(pattern, rule)| RuleRow {
                pattern: pattern.clone(),
                row_filter: rule.row_filter.clone().unwrap_or_default(),
                denied: rule
                    .columns
                    .iter()
                    .filter(|(_, r)| matches!(r, ColumnRule::Deny))
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                masks: rule
                    .columns
                    .iter()
                    .filter_map(|(c, r)| match r {
                        ColumnRule::Mask(mask) => Some((c.clone(), mask.clone())),
                        ColumnRule::Deny => None,
                    })
                    .collect(),
            })
            .collect(),
        limits: if limits.is_empty() {
            "server defaults".into()
        } else {
            limits
        },
    }
}

/// `GET /admin/access/grant?swarm=…[&agent=…][&sql=…]`.
#[derive(Debug, Deserialize)]
pub(super) struct GrantQuery {
    swarm: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    sql: Option<String>,
}

/// `POST /admin/access/grant/preview`: the editor's fields.
#[derive(Debug, Deserialize)]
pub(super) struct PreviewForm {
    swarm: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    sql: Option<String>,
    /// The grant as edited (JSON).
    body: String,
}

#[derive(Template)]
#[template(path = "dashboard/grant.html")]
struct GrantPage {
    chrome: Chrome,
    key: String,
    swarm: String,
    agent: String,
    /// The grant as pretty JSON (empty for a new one), or as edited.
    json: String,
    exists: bool,
    delete: String,
    /// This page's address (where Save and Delete come back to).
    edit: String,
    sql: String,
    /// Whether the explain below used the edited grant rather than the saved one.
    previewed: bool,
    /// `explain` as the grantee, when a sample query was given.
    explained: Option<Explained>,
}

#[derive(Deserialize)]
struct Explained {
    principal: String,
    access: serde_json::Value,
    logical_plan: String,
    #[serde(default)]
    duckdb_plans: Vec<String>,
}

impl Explained {
    fn access_text(&self) -> String {
        serde_json::to_string_pretty(&self.access).unwrap_or_default()
    }
}

/// The grant editor, under the saved grants.
pub(super) async fn grant_page(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
    query: Result<Query<GrantQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejected) => return view.reject(&admin, rejected.body_text()),
    };
    let made = build_grant(&dashboard, &admin, &view, query, None).await;
    view.render(&admin, made)
}

/// The grant editor, explaining the sample query under the edited grant
/// (not saved).
pub(super) async fn preview(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
    form: Result<axum::Form<PreviewForm>, FormRejection>,
) -> Response {
    let axum::Form(form) = match form {
        Ok(form) => form,
        Err(rejected) => return view.reject(&admin, rejected.body_text()),
    };
    let query = GrantQuery {
        swarm: form.swarm,
        agent: form.agent,
        sql: form.sql,
    };
    let made = build_grant(&dashboard, &admin, &view, query, Some(form.body)).await;
    view.render(&admin, made)
}

async fn build_grant(
    dashboard: &Dashboard,
    admin: &Admin,
    view: &View,
    query: GrantQuery,
    edited: Option<String>,
) -> Result<GrantPage, Status> {
    let agent = query.agent.filter(|a| !a.is_empty());
    let key = json!({ "swarm": query.swarm, "agent": agent });
    let found: Result<serde_json::Value, Status> =
        dashboard.call(admin, "grant.get", key.clone()).await;
    let (saved, exists) = match found {
        Ok(answer) => {
            let grant = answer.get("grant").cloned().unwrap_or_default();
            (
                serde_json::to_string_pretty(&grant).unwrap_or_default(),
                true,
            )
        }
        Err(e) if e.code() == tonic::Code::NotFound => {
            let empty = json!({ "swarm": query.swarm, "agent": agent, "tables": {}, "limits": {} });
            (
                serde_json::to_string_pretty(&empty).unwrap_or_default(),
                false,
            )
        }
        Err(e) => return Err(e),
    };
    let sql = query.sql.unwrap_or_default();
    let explained = if sql.trim().is_empty() {
        None
    } else {
        let principal = match &agent {
            Some(agent) => json!({ "kind": "agent", "swarm": query.swarm, "name": agent }),
            None => json!({ "kind": "swarm", "swarm": query.swarm, "name": query.swarm }),
        };
        let mut body = json!({ "sql": sql, "as": principal });
        let explained = match &edited {
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(grant) => {
                    body["grant"] = grant;
                    // The record says what was explained, as an explain
                    // action's does.
                    if let Some(statement) = crate::redact::json_body(body.to_string().as_bytes()) {
                        view.note(statement);
                    }
                    dashboard.call(admin, "explain", body).await
                }
                Err(e) => Err(crate::status::bad_request(format!(
                    "the grant is not JSON: {e}"
                ))),
            },
            None => dashboard.call(admin, "explain", body).await,
        };
        Some(explained.unwrap_or_else(|e| Explained {
            // A query the grantee may not run is the answer, not a failure.
            principal: String::new(),
            access: serde_json::Value::Null,
            logical_plan: format!("refused: {}", e.message()),
            duckdb_plans: Vec::new(),
        }))
    };
    let mut edit = form_urlencoded::Serializer::new(String::new());
    edit.append_pair("swarm", &query.swarm);
    if let Some(agent) = &agent {
        edit.append_pair("agent", agent);
    }
    Ok(GrantPage {
        chrome: view.chrome("access", admin),
        key: match &agent {
            Some(agent) => format!("{}/{agent}", query.swarm),
            None => query.swarm.clone(),
        },
        delete: key.to_string(),
        edit: format!("/admin/access/grant?{}", edit.finish()),
        swarm: query.swarm,
        agent: agent.unwrap_or_default(),
        previewed: edited.is_some(),
        json: edited.unwrap_or(saved),
        exists,
        sql,
        explained,
    })
}

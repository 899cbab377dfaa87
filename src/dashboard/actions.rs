//! `POST /admin/actions/{name}`: every button of the dashboard. The form
//! carries the action's JSON body (`body`, built by the page) and fields
//! the admin typed (`f.<key>` as strings, left out when empty; `e.<key>`
//! as strings, empty ones too; `n.<key>` as numbers), merged
//! into it; the action runs as the logged-in admin, audited like the same
//! action over Flight or the JSON API, and the browser goes back to the
//! page it came from with a message saying what happened.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};
use tonic::{Code, Status};

use super::session::Admin;
use super::{Dashboard, Flash};
use crate::actions::Answer;
use crate::http::Peer;
use crate::telemetry::RequestLabels;
use crate::{redact, status};

/// The action's JSON body from the form's fields.
pub(super) fn body_of(fields: &[(String, String)]) -> Result<Value, Status> {
    let mut body = match fields.iter().find(|(k, _)| k == "body") {
        Some((_, text)) if !text.trim().is_empty() => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(status::bad_request("the body must be a JSON object")),
            Err(e) => return Err(status::bad_request(format!("the body is not JSON: {e}"))),
        },
        _ => Map::new(),
    };
    for (key, value) in fields {
        if let Some(field) = key.strip_prefix("f.") {
            // An empty optional field is left out rather than sent as "".
            if !value.is_empty() {
                body.insert(field.to_string(), Value::String(value.clone()));
            }
        } else if let Some(field) = key.strip_prefix("e.") {
            // A text whose emptiness means something ("remove it").
            body.insert(field.to_string(), Value::String(value.clone()));
        } else if let Some(field) = key.strip_prefix("n.") {
            if value.trim().is_empty() {
                continue;
            }
            let number: serde_json::Number = value.trim().parse().map_err(|_| {
                status::bad_request(format!("{field} must be a number, not '{value}'"))
            })?;
            body.insert(field.to_string(), Value::Number(number));
        }
    }
    Ok(Value::Object(body))
}

/// Where to go afterwards: a dashboard page, never another site.
fn back_to(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .find(|(k, _)| k == "back")
        .map(|(_, v)| v.as_str())
        .filter(|v| {
            v.starts_with("/admin")
                && !v.contains("//")
                && !v.contains('\\')
                && !v.chars().any(char::is_control)
        })
        .unwrap_or("/admin")
        .to_string()
}

/// What an answer says, in a line.
fn summary(name: &str, answer: &Value) -> String {
    let pick = [
        "state",
        "cancelled",
        "revoked",
        "deleted",
        "key",
        "job_id",
        "id",
    ];
    let said: Vec<String> = pick
        .iter()
        .filter_map(|k| answer.get(*k).map(|v| format!("{k}: {}", plain(v))))
        .take(3)
        .collect();
    if said.is_empty() {
        format!("{name}: done")
    } else {
        format!("{name}: {}", said.join(", "))
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs the action and goes back.
pub(super) async fn run(
    State(dashboard): State<Arc<Dashboard>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    Path(name): Path<String>,
    admin: Admin,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let gateway = &dashboard.services.gateway;
    let audit = gateway.begin(
        format!("POST /admin/actions/{name}"),
        RequestLabels::new(
            "dashboard",
            "POST /admin/actions/{name}",
            crate::gateway::operation_label(&name),
        ),
        Some(remote),
    );
    audit.principal(&admin.principal);
    let back = back_to(&fields);
    let outcome = async {
        let body =
            serde_json::to_vec(&body_of(&fields)?).map_err(|e| status::internal(e.to_string()))?;
        if let Some(statement) = redact::json_body(&body) {
            audit.statement(statement);
        }
        gateway
            .action(&admin.principal, &name, &body, Some(&audit))
            .await
    };
    let (flash, failed) = match outcome.await {
        Ok(Answer::Json(value) | Answer::Query { answer: value, .. }) => {
            audit.finish(Code::Ok, "", 0);
            // A cancel that found nothing running did nothing: say so.
            let ok = value.get("cancelled") != Some(&Value::Bool(false));
            let text = summary(&name, &value);
            (Flash { ok, text }, None)
        }
        Err(e) => {
            audit.finish(e.code(), e.message(), 0);
            let text = format!("{name} failed: {}", e.message());
            (Flash { ok: false, text }, Some(e))
        }
    };
    match (&admin.session, failed) {
        (Some(id), _) => dashboard.sessions.flash(id, flash),
        // A bearer-token caller (curl) reads the outcome from the status.
        (None, Some(e)) => return super::error_page(&e),
        (None, None) => {}
    }
    Redirect::to(&back).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forms_become_json_bodies() {
        let body = body_of(&fields(&[
            ("csrf", "x"),
            ("body", r#"{"table":"sales.orders"}"#),
            ("f.description", "Orders <b>"),
            ("f.empty", ""),
            ("e.cleared", ""),
            ("n.limit", "20"),
        ]))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"table": "sales.orders", "description": "Orders <b>", "cleared": "", "limit": 20})
        );
        let error = body_of(&fields(&[("n.limit", "ten")])).unwrap_err();
        assert!(
            error.message().contains("limit must be a number"),
            "{error:?}"
        );
        assert!(body_of(&fields(&[("body", "[1]")])).is_err());
    }

    #[test]
    fn buttons_only_go_back_to_dashboard_pages() {
        assert_eq!(
            back_to(&fields(&[("back", "/admin/syncs?state=failed")])),
            "/admin/syncs?state=failed"
        );
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/admin",
            "/admin\\@evil",
            "/api/v1",
            "/admin\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(
                back_to(&fields(&[("back", elsewhere)])),
                "/admin",
                "{elsewhere}"
            );
        }
    }
}

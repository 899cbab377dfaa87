//! The JSON API: `POST /api/v1/login`, `POST /api/v1/actions/{name}` (every
//! Flight action, same names and bodies) and `POST /api/v1/query` (a result
//! streamed as Arrow, Parquet, CSV or JSON). Every request is audited like
//! its Flight twin and fails with the same code and message.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::{Code, Status};

use super::error::ApiError;
use super::results::{self, Format};
use super::{Peer, Services};
use crate::actions::Answer;
use crate::audit::{AuditHandle, AuditedStream};
use crate::redact;
use crate::status;
use crate::telemetry::RequestLabels;

/// `POST /api/v1/login`: credentials for a bearer token.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// `admin`.
    pub(crate) username: String,
    /// The admin password.
    pub(crate) password: String,
}

/// A bearer token and whom it names.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct LoginAnswer {
    /// Send as `Authorization: Bearer <token>`.
    pub(crate) token: String,
    /// `admin`, `swarm` or `agent`.
    pub(crate) kind: String,
    /// The principal's name.
    pub(crate) name: String,
}

/// `POST /api/v1/query`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One SELECT (or WITH … SELECT), with `$1`, `$2`, … placeholders.
    pub(crate) sql: String,
    /// Values for the placeholders, in order: strings, numbers, booleans, null.
    #[serde(default)]
    pub(crate) params: Vec<Value>,
    /// `json` (default), `arrow`, `parquet` or `csv`.
    #[serde(default)]
    pub(crate) format: Format,
    /// Rows at most; lowers (never raises) the cap the caller's grant sets.
    #[serde(default)]
    pub(crate) max_rows: Option<u64>,
}

/// `POST /api/v1/login`. Credentials as a JSON body
/// (`{"username": "admin", "password": …}`) or an `Authorization` header
/// (Basic, or a bearer token to check).
pub(crate) async fn login(
    State(services): State<Arc<Services>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gateway = &services.gateway;
    let audit = gateway.begin(
        "POST /api/v1/login",
        RequestLabels::new("http", "POST /api/v1/login", ""),
        Some(remote),
    );
    let header = if body.iter().all(u8::is_ascii_whitespace) {
        match authorization(&headers) {
            Ok(header) => header.map(str::to_string),
            Err(e) => return fail(&audit, e),
        }
    } else {
        match serde_json::from_slice::<LoginRequest>(&body) {
            Ok(login) => Some(crate::auth::basic_authorization(
                &login.username,
                &login.password,
            )),
            // serde's message could quote the password: say what is wanted.
            Err(_) => {
                let wanted = "invalid login body: send {\"username\": \"admin\", \"password\": \"…\"} (strings)";
                return fail(&audit, status::bad_request(wanted));
            }
        }
    };
    match gateway.login(header.as_deref(), &audit).await {
        Ok((principal, token)) => json(
            &audit,
            &LoginAnswer {
                token,
                kind: principal.kind.to_string(),
                name: principal.name,
            },
        ),
        Err(e) => fail(&audit, e),
    }
}

/// `POST /api/v1/actions/{name}`: the Flight action `name` with this JSON
/// body. An action that answers with rows (`table.sample`) answers the SQL
/// to send to `/api/v1/query`.
pub(crate) async fn action(
    State(services): State<Arc<Services>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gateway = &services.gateway;
    let audit = gateway.begin(
        format!("POST /api/v1/actions/{name}"),
        RequestLabels::new(
            "http",
            "POST /api/v1/actions/{name}",
            crate::gateway::operation_label(&name),
        ),
        Some(remote),
    );
    if let Some(body) = redact::json_body(&body) {
        audit.statement(body);
    }
    let outcome = async {
        let principal = gateway
            .authenticate(authorization(&headers)?, &audit)
            .await?;
        gateway.action(&principal, &name, &body, Some(&audit)).await
    };
    match outcome.await {
        Ok(Answer::Json(value) | Answer::Query { answer: value, .. }) => json(&audit, &value),
        Err(e) => fail(&audit, e),
    }
}

/// `POST /api/v1/query`: runs one query as the caller and streams its
/// result. `X-Airlock-Max-Rows` carries the row cap in effect: a result
/// with exactly that many rows may have been cut.
pub(crate) async fn query(
    State(services): State<Arc<Services>>,
    ConnectInfo(Peer(remote)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gateway = &services.gateway;
    let audit = gateway.begin(
        "POST /api/v1/query",
        RequestLabels::new("http", "POST /api/v1/query", ""),
        Some(remote),
    );
    let query_id = uuid::Uuid::new_v4().to_string();
    let started = async {
        let principal = gateway
            .authenticate(authorization(&headers)?, &audit)
            .await?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(status::bad_request("the query body must be a JSON object"));
        }
        let request: QueryRequest = serde_json::from_slice(&body)
            .map_err(|e| status::bad_request(format!("invalid query body: {e}")))?;
        let values = request
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| crate::gateway::json_parameter(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut planned = gateway
            .plan(&principal, &request.sql, values, Some(&audit))
            .await?;
        if let Some(max_rows) = request.max_rows {
            planned = planned.at_most(max_rows);
        }
        let schema = planned.schema();
        let stream = gateway
            .execute(&principal, planned, &query_id, Some(&audit))
            .await?;
        let max_rows = stream.max_rows();
        let bytes = results::encode(request.format, schema, stream)?;
        Ok::<_, Status>((request.format, max_rows, bytes))
    };
    let (format, max_rows, bytes) = match started.await {
        Ok(started) => started,
        Err(e) => return fail(&audit, e),
    };
    let body = AuditedStream::new(bytes, audit, Bytes::len);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(id) = HeaderValue::from_str(&query_id) {
        headers.insert("x-airlock-query-id", id);
    }
    if let Some(max_rows) = max_rows {
        headers.insert("x-airlock-max-rows", HeaderValue::from(max_rows));
    }
    response
}

/// Any other path: a JSON 404 like every other error.
pub(crate) async fn no_route() -> Response {
    ApiError(status::not_found(
        "no such route; the API is under /api/v1 (see /api/v1/openapi.json)",
    ))
    .into_response()
}

/// The `Authorization` header, if any.
fn authorization(headers: &HeaderMap) -> Result<Option<&str>, Status> {
    headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| status::auth(crate::auth::AuthError::MalformedHeader("not ASCII")))
        })
        .transpose()
}

/// A JSON answer; the audit record counts its bytes.
fn json(audit: &AuditHandle, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            audit.finish(Code::Ok, "", bytes.len() as u64);
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => fail(audit, status::internal(format!("encoding the answer: {e}"))),
    }
}

/// An error answer; the audit record says why.
fn fail(audit: &AuditHandle, error: Status) -> Response {
    audit.finish(error.code(), error.message(), 0);
    ApiError(error).into_response()
}

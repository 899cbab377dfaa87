//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the HTTP port,
//! generated at start from the request types themselves (schemars) and
//! the action catalog — so it says exactly what the server accepts.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::api::{LoginAnswer, LoginRequest, QueryRequest};
use super::error::ErrorBody;
use crate::actions::Action;

/// The document.
pub(super) fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let error = schema::<ErrorBody>(&mut generator);
    let failed = json!({
        "description": "An error: the code and message a Flight client gets for the same request",
        "content": {"application/json": {"schema": error}}
    });
    paths.insert(
        "/api/v1/login".into(),
        json!({"post": {
            "operationId": "login",
            "summary": "Exchange the admin password (or a token) for a bearer token",
            "description": "Credentials as this JSON body, or an Authorization header (Basic admin:<password>).",
            "security": [],
            "requestBody": {"required": false, "content": {"application/json": {"schema": schema::<LoginRequest>(&mut generator)}}},
            "responses": {
                "200": {"description": "A bearer token", "content": {"application/json": {"schema": schema::<LoginAnswer>(&mut generator)}}},
                "default": failed,
            }
        }}),
    );
    paths.insert(
        "/api/v1/query".into(),
        json!({"post": {
            "operationId": "query",
            "summary": "Run one query as the caller and stream its result",
            "description": "The caller's grants, limits and audit apply as over Flight. X-Airlock-Max-Rows carries the row cap in effect.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": schema::<QueryRequest>(&mut generator)}}},
            "responses": {
                "200": {
                    "description": "The result, in the format asked for",
                    "content": {
                        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                        "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
                        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                        "text/csv; charset=utf-8": {"schema": {"type": "string"}}
                    }
                },
                "default": failed,
            }
        }}),
    );
    for action in Action::ALL {
        let body = action.request_schema(&mut generator);
        paths.insert(
            format!("/api/v1/actions/{}", action.name()),
            json!({"post": {
                "operationId": action.name(),
                "summary": action.name(),
                "description": action.description(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
                "responses": {
                    "200": {"description": "The action's answer, as over Flight", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "default": failed,
                }
            }}),
        );
    }
    for (path, summary, content, public) in [
        ("/healthz", "The process is up", "text/plain", true),
        (
            "/readyz",
            "The node can serve: replica, metadata store and scheduler",
            "application/json",
            true,
        ),
        (
            "/metrics",
            "Prometheus metrics (an admin's token or AIRLOCK_METRICS_TOKEN)",
            "text/plain",
            false,
        ),
    ] {
        let body = if content == "application/json" {
            json!({"type": "object"})
        } else {
            json!({"type": "string"})
        };
        let mut responses = json!({
            "200": {"description": summary, "content": {content: {"schema": body}}},
        });
        if public {
            responses["503"] = json!({"description": "Not ready: the checks that fail", "content": {content: {"schema": body}}});
        } else {
            responses["default"] = failed.clone();
        }
        let mut operation = json!({"summary": summary, "responses": responses});
        if public {
            operation["security"] = json!([]);
        }
        paths.insert(path.into(), json!({"get": operation}));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "airlock",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Governed, read-only access to warehouse data: every Flight action, and queries streamed as JSON, Arrow, Parquet or CSV. Send Authorization: Bearer <token>."
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

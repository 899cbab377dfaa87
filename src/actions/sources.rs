//! Connection actions (admin): `sources.create|list|get|update|delete|test`
//! and `sources.list_tables`. Connections belong to `sync::connections`;
//! this file parses bodies and shapes answers.
//!
//! Bodies here carry secrets, so a body that does not parse is reported
//! without the quoted values serde would echo (an `"options": "<key>"`
//! typo must not put the key in an error message or the audit).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Action, ActionError, Actions, Empty, parse};
use crate::principal::Principal;
use crate::sync::snowflake::SourceTable;
use crate::sync::{ConnectionRequest, ConnectionView, SyncError, TestOutcome};

/// The body of `sources.get` and `sources.delete`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameRequest {
    name: String,
}

/// The body of `sources.list_tables`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ListTablesRequest {
    connection: String,
    database: String,
    schema: String,
}

/// `sources.list_tables`.
#[derive(Debug, Serialize)]
pub(super) struct SourceTablesView {
    tables: Vec<SourceTable>,
}

/// `sources.list`.
#[derive(Debug, Serialize)]
pub(super) struct ConnectionsView {
    connections: Vec<ConnectionView>,
}

/// `sources.delete`.
#[derive(Debug, Serialize)]
pub(super) struct DeletedView {
    name: String,
    deleted: bool,
}

impl Actions {
    /// `sources.list_tables`: the tables of a Snowflake schema.
    pub(super) async fn sources_list_tables(
        &self,
        body: &[u8],
    ) -> Result<SourceTablesView, ActionError> {
        let request: ListTablesRequest = parse(Action::SourcesListTables, body)?;
        let tables = self
            .sync
            .list_source_tables(&request.connection, &request.database, &request.schema)
            .await?;
        Ok(SourceTablesView { tables })
    }

    /// `sources.create`.
    pub(super) async fn sources_create(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ConnectionView, ActionError> {
        let request = parse_secret(Action::SourcesCreate, body)?;
        let connections = self.sync.sources().connections();
        Ok(connections
            .create(&principal.label(), request)
            .await
            .map_err(SyncError::from)?)
    }

    /// `sources.list`.
    pub(super) async fn sources_list(&self, body: &[u8]) -> Result<ConnectionsView, ActionError> {
        let Empty {} = parse(Action::SourcesList, body)?;
        let connections = self.sync.sources().connections();
        Ok(ConnectionsView {
            connections: connections.list().await.map_err(SyncError::from)?,
        })
    }

    /// `sources.get`.
    pub(super) async fn sources_get(&self, body: &[u8]) -> Result<ConnectionView, ActionError> {
        let NameRequest { name } = parse(Action::SourcesGet, body)?;
        let connections = self.sync.sources().connections();
        Ok(connections.get(&name).await.map_err(SyncError::from)?)
    }

    /// `sources.update`.
    pub(super) async fn sources_update(&self, body: &[u8]) -> Result<ConnectionView, ActionError> {
        let request = parse_secret(Action::SourcesUpdate, body)?;
        let connections = self.sync.sources().connections();
        Ok(connections.update(request).await.map_err(SyncError::from)?)
    }

    /// `sources.delete`.
    pub(super) async fn sources_delete(&self, body: &[u8]) -> Result<DeletedView, ActionError> {
        let NameRequest { name } = parse(Action::SourcesDelete, body)?;
        self.sync.delete_connection(&name).await?;
        Ok(DeletedView {
            name,
            deleted: true,
        })
    }

    /// `sources.test`.
    pub(super) async fn sources_test(&self, body: &[u8]) -> Result<TestOutcome, ActionError> {
        let request = parse_secret(Action::SourcesTest, body)?;
        Ok(self.sync.sources().connections().test(request).await)
    }
}

/// Parses a body that may hold secrets. serde's messages quote the
/// offending value, so the body's shape is checked here first with
/// messages that name fields and types only.
fn parse_secret(action: Action, body: &[u8]) -> Result<ConnectionRequest, ActionError> {
    let bad = |message: String| ActionError::BadRequest {
        action: action.name(),
        message,
    };
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let value: Value = serde_json::from_slice(text).map_err(|e| {
        bad(format!(
            "the body is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = &value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    for (field, value) in fields {
        match (field.as_str(), value) {
            (
                "name" | "type" | "account" | "user" | "role" | "warehouse" | "database" | "url"
                | "password" | "private_key",
                Value::String(_) | Value::Null,
            ) => {}
            ("options", Value::Object(options)) => {
                if let Some((key, _)) = options.iter().find(|(_, v)| !v.is_string()) {
                    return Err(bad(format!("options.{key} must be a string")));
                }
            }
            ("options", Value::Null) => {}
            (
                "name" | "type" | "account" | "user" | "role" | "warehouse" | "database" | "url"
                | "password" | "private_key",
                _,
            ) => return Err(bad(format!("\"{field}\" must be a string"))),
            ("options", _) => {
                return Err(bad("\"options\" must be an object of strings".into()));
            }
            _ => {
                return Err(bad(format!(
                    "unknown field \"{field}\"; expected name, type, account, user, role, warehouse, \
                     database, url, password, private_key or options"
                )));
            }
        }
    }
    if let Some(kind) = fields.get("type").and_then(Value::as_str)
        && !matches!(kind, "snowflake" | "object_store")
    {
        return Err(bad(
            "\"type\" must be \"snowflake\" or \"object_store\"".into()
        ));
    }
    serde_json::from_value(value).map_err(|_| bad("the body does not fit this action".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_keep_no_secret_values() {
        for body in [
            &br#"{"name":"lake","type":"object_store","options":"AKIA-SECRET"}"#[..],
            br#"{"name":"lake","password":12345678}"#,
            br#"{"name":"lake","options":{"aws_secret_access_key":98765}}"#,
            br#"{"name":"lake","type":"AKIA\"SECRET"}"#,
            br#"{"name":"lake","password":"ab\"cd-SECRET" "#,
        ] {
            let error = parse_secret(Action::SourcesCreate, body)
                .unwrap_err()
                .to_string();
            for secret in ["AKIA", "SECRET", "12345678", "98765"] {
                assert!(!error.contains(secret), "{error}");
            }
            assert!(error.contains("sources.create"), "{error}");
        }
        let error = parse_secret(Action::SourcesCreate, br#"{"passwrd":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("passwrd"), "field names stay: {error}");
        assert!(parse_secret(Action::SourcesTest, b"").is_ok());
    }
}

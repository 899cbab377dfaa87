//! Connection actions (admin): `sources.create|list|get|update|delete|test`
//! and `sources.list_tables`. Connections belong to `sync::connections`;
//! this file parses bodies and shapes answers.
//!
//! Bodies here carry secrets, so a body that does not parse is reported
//! without the quoted values serde would echo (an `"options": "<key>"`
//! typo must not put the key in an error message or the audit).

use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Actions, Empty, parse};
use crate::principal::Principal;
use crate::sync::snowflake::SourceTable;
use crate::sync::{ConnectionRequest, ConnectionView, SyncError, TestOutcome};

/// The body of `sources.get` and `sources.delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameRequest {
    name: String,
}

/// The body of `sources.list_tables`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListTablesRequest {
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

/// Parses a body that may hold secrets; errors keep no quoted value.
fn parse_secret(action: Action, body: &[u8]) -> Result<ConnectionRequest, ActionError> {
    parse(action, body).map_err(|e| match e {
        ActionError::BadRequest { action, message } => ActionError::BadRequest {
            action,
            message: without_quoted(&message),
        },
        other => other,
    })
}

/// `message` with the text between double quotes replaced by `…`.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_keep_no_secret_values() {
        let body = br#"{"name":"lake","type":"object_store","options":"AKIA-SECRET"}"#;
        let error = parse_secret(Action::SourcesCreate, body)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("AKIA-SECRET"), "{error}");
        assert!(error.contains("sources.create"), "{error}");
        let error = parse_secret(Action::SourcesCreate, br#"{"passwrd":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("passwrd"), "field names stay: {error}");
    }
}

//! Connections as `sources.list` and `sources.get` show them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ConnectionKind;
use super::record::{ConnectionRecord, StoredSpec};
use crate::sync::snowflake::SnowflakeConfig;

/// A connection as `sources.list` and `sources.get` show it: settings and
/// which secrets are set, never a secret's value.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionView {
    /// Name.
    pub name: String,
    /// `snowflake` or `object_store`.
    #[serde(rename = "type")]
    pub kind: ConnectionKind,
    /// `config` (the config file) or `runtime` (sources.create).
    pub origin: &'static str,
    /// Config-file connections cannot be changed here.
    pub read_only: bool,
    /// Snowflake account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Snowflake user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Snowflake role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Snowflake warehouse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Snowflake database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Snowflake base URL or object-store root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Object-store options that are not secret.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Names of the secrets that are set (`password`, `aws_secret_access_key`, …).
    pub secrets_set: Vec<String>,
    /// Why the connection cannot be used (its secrets do not open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who created it (runtime connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl ConnectionRecord {
    /// The view of a runtime connection; `error` says why it is unusable.
    pub(super) fn view(&self, error: Option<String>) -> ConnectionView {
        let record = self;
        let mut view = ConnectionView {
            name: record.name.clone(),
            kind: record.spec.kind(),
            origin: "runtime",
            read_only: false,
            account: None,
            user: None,
            role: None,
            warehouse: None,
            database: None,
            url: None,
            options: BTreeMap::new(),
            secrets_set: Vec::new(),
            error,
            created_by: Some(record.created_by.clone()),
            created_at: Some(record.created_at),
            updated_at: Some(record.updated_at),
        };
        match &record.spec {
            StoredSpec::Snowflake {
                settings,
                password,
                private_key,
            } => {
                view.account = Some(settings.account.clone());
                view.user = Some(settings.user.clone());
                view.role = settings.role.clone();
                view.warehouse = settings.warehouse.clone();
                view.database = settings.database.clone();
                view.url = settings.url.as_deref().map(crate::redact::url);
                for (secret, set) in [("password", password), ("private_key", private_key)] {
                    if set.is_some() {
                        view.secrets_set.push(secret.into());
                    }
                }
            }
            StoredSpec::ObjectStore {
                url,
                options,
                secret_options,
            } => {
                view.url = Some(crate::redact::url(url));
                view.options = options.clone();
                view.secrets_set = secret_options.keys().cloned().collect();
            }
        }
        view
    }
}

pub(super) fn config_view((name, section): (&str, &SnowflakeConfig)) -> ConnectionView {
    let secrets_set = [
        (
            "password",
            section.password_env.is_some() || section.password_file.is_some(),
        ),
        (
            "private_key",
            section.private_key_env.is_some() || section.private_key_file.is_some(),
        ),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(secret, _)| secret.to_string())
    .collect();
    ConnectionView {
        name: name.to_string(),
        kind: ConnectionKind::Snowflake,
        origin: "config",
        read_only: true,
        account: Some(section.account.clone()),
        user: Some(section.user.clone()),
        role: section.role.clone(),
        warehouse: section.warehouse.clone(),
        database: section.database.clone(),
        url: section.url.as_deref().map(crate::redact::url),
        options: BTreeMap::new(),
        secrets_set,
        error: None,
        created_by: None,
        created_at: None,
        updated_at: None,
    }
}

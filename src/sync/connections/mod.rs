//! Connections: the Snowflake accounts and object stores that sources are
//! read through.
//!
//! Those of the config file (`[snowflake.NAME]`) are listed read-only.
//! Those made at run time (`sources.create|update|delete`) are documents
//! of the metadata whose secrets (password, private key, secret-looking
//! object-store options) are sealed by [`SecretBox`] with a key kept
//! outside it. Secrets are opened once, at load or write, into the live
//! clients and option maps that [`super::Sources`] reads; no view, error
//! or log ever carries one — a view says which secrets are set, not what
//! they are. A runtime connection reads no server file or environment
//! variable (that would let an admin ship the server's files to a URL of
//! their choosing): its secrets come in the request body.

mod probe;
mod record;
mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use serde::{Deserialize, Serialize};

pub use self::probe::TestOutcome;
pub use self::record::ConnectionRequest;
use self::record::{ConnectionRecord, Live, StoredSpec, is_under, open_record};
pub use self::view::ConnectionView;
use self::view::config_view;
use super::snowflake::SnowflakeConnections;
use super::snowflake::client::Client;
use super::source::SourceError;
use crate::meta::{Cache, Collection, Expect, Labels, Meta, MetaError};
use crate::secrets::{SecretBox, SecretsError};

/// Why a connection cannot be created, changed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// No such connection.
    #[error("no connection named '{0}'; sources.list shows the connections")]
    NotFound(String),
    /// The name is taken by a runtime connection.
    #[error(
        "connection '{0}' already exists; change it with sources.update or choose another name"
    )]
    Exists(String),
    /// The name belongs to the config file.
    #[error(
        "connection '{0}' is defined in the config file ([snowflake.{0}]) and is read-only here; \
         change it there, or use another name for a runtime connection"
    )]
    ReadOnly(String),
    /// Registered tables read through it.
    #[error("connection '{name}' is used by {tables}; remove those tables first (table.remove)")]
    InUse {
        /// The connection.
        name: String,
        /// The tables, comma-separated.
        tables: String,
    },
    /// The sealing key is unusable.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What a connection reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    /// A Snowflake account, for `snowflake://NAME/DB.SCHEMA.TABLE` sources.
    Snowflake,
    /// An object store (S3, GCS, Azure, HTTP), for file sources naming it
    /// with `"connection"`.
    ObjectStore,
}

impl ConnectionKind {
    fn label(self) -> &'static str {
        match self {
            ConnectionKind::Snowflake => "Snowflake",
            ConnectionKind::ObjectStore => "object store",
        }
    }
}

/// All connections: the config file's and the runtime ones.
#[derive(Debug)]
pub struct Connections {
    config: SnowflakeConnections,
    meta: Meta,
    secrets: SecretBox,
    live: RwLock<BTreeMap<String, Live>>,
    // Create, update and delete check and write one at a time.
    changes: tokio::sync::Mutex<()>,
}

impl Connections {
    /// Loads the runtime connections and opens their secrets. One whose
    /// secrets do not open (the key changed) stays listed with the reason,
    /// so an admin can set its secrets again; the server still starts.
    pub async fn open(
        meta: Meta,
        secrets: SecretBox,
        config: SnowflakeConnections,
    ) -> Result<Arc<Self>, ConnectionError> {
        let live = load(&meta, &secrets).await?;
        Ok(Arc::new(Self {
            config,
            meta,
            secrets,
            live: RwLock::new(live),
            changes: tokio::sync::Mutex::new(()),
        }))
    }

    /// The Snowflake client of connection `name` (config file first).
    pub fn snowflake(&self, name: &str) -> Result<Arc<Client>, SourceError> {
        if let Ok(client) = self.config.get(name) {
            return Ok(client);
        }
        match self.read_live().get(name) {
            Some(Live::Snowflake(client)) => Ok(Arc::clone(client)),
            Some(Live::ObjectStore { .. }) => Err(SourceError::Connection(format!(
                "connection '{name}' is an object store connection; snowflake:// sources need a Snowflake one"
            ))),
            Some(Live::Broken(reason)) => Err(unusable(name, reason)),
            None => Err(SourceError::UnknownConnection(name.to_string())),
        }
    }

    /// The options of object-store connection `name` for reading `url`,
    /// which must lie under the connection's root.
    pub fn object_store_options(
        &self,
        name: &str,
        url: &str,
    ) -> Result<BTreeMap<String, String>, SourceError> {
        let live = self.read_live();
        let (root, options) = match live.get(name) {
            Some(Live::ObjectStore { root, options }) => (root, options),
            Some(Live::Snowflake(_)) => {
                return Err(SourceError::Connection(format!(
                    "connection '{name}' is a Snowflake connection; name it in a snowflake:// source instead"
                )));
            }
            Some(Live::Broken(reason)) => return Err(unusable(name, reason)),
            None if self.config.get(name).is_ok() => {
                return Err(SourceError::Connection(format!(
                    "connection '{name}' is a Snowflake connection; name it in a snowflake:// source instead"
                )));
            }
            None => return Err(SourceError::UnknownConnection(name.to_string())),
        };
        if !is_under(url, root) {
            return Err(SourceError::Connection(format!(
                "source '{}' is not under '{root}', the root of connection '{name}'",
                crate::redact::url(url)
            )));
        }
        Ok(options.clone())
    }

    /// All connections, config file first, by name.
    pub async fn list(&self) -> Result<Vec<ConnectionView>, ConnectionError> {
        let mut views: Vec<ConnectionView> = self.config.sections().map(config_view).collect();
        let records: Vec<ConnectionRecord> = self.meta.list(Collection::Connections).await?;
        let mut runtime: Vec<ConnectionView> = records.iter().map(|r| self.view(r)).collect();
        runtime.sort_by(|a, b| a.name.cmp(&b.name));
        views.extend(runtime);
        Ok(views)
    }

    /// One connection.
    pub async fn get(&self, name: &str) -> Result<ConnectionView, ConnectionError> {
        if let Some(view) = self
            .config
            .sections()
            .find(|(n, _)| *n == name)
            .map(config_view)
        {
            return Ok(view);
        }
        let record = self.record(name).await?;
        Ok(self.view(&record))
    }

    /// Creates a runtime connection.
    pub async fn create(
        &self,
        caller: &str,
        request: ConnectionRequest,
    ) -> Result<ConnectionView, ConnectionError> {
        let name = check_name(request.name.as_deref())?;
        let _changes = self.changes.lock().await;
        if self.config.get(&name).is_ok() {
            return Err(ConnectionError::ReadOnly(name));
        }
        let kind = request.kind.ok_or_else(|| {
            ConnectionError::Invalid(
                "\"type\" is required: \"snowflake\" or \"object_store\"".into(),
            )
        })?;
        let spec = StoredSpec::build(&name, kind, None, request, &self.secrets)?;
        let now = Utc::now();
        let record = ConnectionRecord {
            name: name.clone(),
            spec,
            created_by: caller.to_string(),
            created_at: now,
            updated_at: now,
        };
        let live = open_record(&record, &self.secrets)?;
        let written = self
            .meta
            .put_if(
                Collection::Connections,
                &name,
                &record,
                Labels::new(),
                Expect::Absent,
            )
            .await;
        match written {
            Err(MetaError::Conflict { .. }) => return Err(ConnectionError::Exists(name)),
            other => other?,
        };
        self.write_live().insert(name, live);
        Ok(self.view(&record))
    }

    /// Changes a runtime connection: given fields replace stored ones.
    pub async fn update(
        &self,
        request: ConnectionRequest,
    ) -> Result<ConnectionView, ConnectionError> {
        let name = check_name(request.name.as_deref())?;
        let _changes = self.changes.lock().await;
        if self.config.get(&name).is_ok() {
            return Err(ConnectionError::ReadOnly(name));
        }
        let mut record = self.record(&name).await?;
        let kind = record.spec.kind();
        if request.kind.is_some_and(|k| k != kind) {
            return Err(ConnectionError::Invalid(format!(
                "connection '{name}' is a {} connection; its type cannot change (delete it and create a new one)",
                kind.label()
            )));
        }
        record.spec = StoredSpec::build(&name, kind, Some(&record.spec), request, &self.secrets)?;
        record.updated_at = Utc::now();
        let live = open_record(&record, &self.secrets)?;
        self.meta
            .put(Collection::Connections, &name, &record)
            .await?;
        self.write_live().insert(name, live);
        Ok(self.view(&record))
    }

    /// Removes a runtime connection; `users` are the tables reading through it.
    pub async fn delete(&self, name: &str, users: &[String]) -> Result<(), ConnectionError> {
        let _changes = self.changes.lock().await;
        if self.config.get(name).is_ok() {
            return Err(ConnectionError::ReadOnly(name.to_string()));
        }
        if !users.is_empty() {
            return Err(ConnectionError::InUse {
                name: name.to_string(),
                tables: users.join(", "),
            });
        }
        if !self.meta.delete(Collection::Connections, name).await? {
            return Err(ConnectionError::NotFound(name.to_string()));
        }
        self.write_live().remove(name);
        Ok(())
    }

    /// Tries a stored connection (`name`) or unsaved settings: logs in or
    /// lists, and says what went wrong with a stable code.
    pub async fn test(&self, request: ConnectionRequest) -> TestOutcome {
        let name = request.name.clone();
        let live = match &name {
            Some(name) if request.is_name_only() => match self.config.get(name) {
                Ok(client) => Ok(Live::Snowflake(client)),
                Err(_) => self.read_live().get(name).cloned().ok_or_else(|| {
                    TestOutcome::failed(
                        probe::Code::NotFound,
                        format!("no connection named '{name}'; sources.list shows the connections"),
                    )
                }),
            },
            // Changes to a stored connection, tried before sources.update.
            Some(stored) if request.kind.is_none() && self.config.get(stored).is_err() => {
                match self.record(stored).await {
                    Ok(record) => self.draft(record.spec.kind(), Some(&record.spec), request),
                    Err(_) => Err(TestOutcome::failed(
                        probe::Code::NotFound,
                        format!("no connection named '{stored}'; sources.list shows the connections"),
                    )),
                }
            }
            _ => match request.kind {
                Some(kind) => self.draft(kind, None, request),
                None => Err(TestOutcome::failed(
                    probe::Code::InvalidConfig,
                    "give \"name\" of a stored connection (and changes to try), or \"type\" and the \
                     settings of a new one"
                        .into(),
                )),
            },
        };
        match live {
            Ok(live) => probe::test(name, &live).await,
            Err(outcome) => outcome.named(name),
        }
    }

    /// A connection made from unsaved settings (on top of `old`), for
    /// `sources.test`.
    fn draft(
        &self,
        kind: ConnectionKind,
        old: Option<&StoredSpec>,
        request: ConnectionRequest,
    ) -> Result<Live, TestOutcome> {
        let name = request.name.clone().unwrap_or_else(|| "draft".into());
        let spec =
            StoredSpec::build(&name, kind, old, request, &self.secrets).map_err(probe::invalid)?;
        let record = ConnectionRecord {
            name,
            spec,
            created_by: String::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        open_record(&record, &self.secrets).map_err(probe::invalid)
    }

    async fn record(&self, name: &str) -> Result<ConnectionRecord, ConnectionError> {
        self.meta
            .get(Collection::Connections, name)
            .await?
            .ok_or_else(|| ConnectionError::NotFound(name.to_string()))
    }

    fn view(&self, record: &ConnectionRecord) -> ConnectionView {
        let error = match self.read_live().get(&record.name) {
            Some(Live::Broken(reason)) => Some(reason.clone()),
            _ => None,
        };
        record.view(error)
    }

    fn read_live(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Live>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one
        // half-written, so a poisoned lock is still sound.
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_live(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Live>> {
        self.live.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every runtime connection, its secrets opened.
async fn load(meta: &Meta, secrets: &SecretBox) -> Result<BTreeMap<String, Live>, MetaError> {
    let records: Vec<ConnectionRecord> = meta.list(Collection::Connections).await?;
    let mut live = BTreeMap::new();
    for record in records {
        let connection = match open_record(&record, secrets) {
            Ok(connection) => connection,
            Err(e) => {
                tracing::warn!(connection = %record.name, error = %e, "connection unusable");
                Live::Broken(e.to_string())
            }
        };
        live.insert(record.name, connection);
    }
    Ok(live)
}

// Connections made on another node are announced; this node opens their
// secrets with the key every node shares (AIRLOCK_SECRETS_KEY).
#[async_trait::async_trait]
impl Cache for Connections {
    fn name(&self) -> &'static str {
        "connections"
    }

    fn collections(&self) -> &'static [Collection] {
        &[Collection::Connections]
    }

    async fn refresh(&self, _: Collection, _: Option<&str>) -> Result<(), MetaError> {
        let live = load(&self.meta, &self.secrets).await?;
        *self.write_live() = live;
        Ok(())
    }
}

fn check_name(name: Option<&str>) -> Result<String, ConnectionError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ConnectionError::Invalid(format!(
            "connection name '{name}' is invalid: use 1 to 64 letters, digits, '_' or '-'"
        )));
    }
    Ok(name.to_string())
}

fn unusable(name: &str, reason: &str) -> SourceError {
    SourceError::Connection(format!("connection '{name}' cannot be used: {reason}"))
}

#[cfg(test)]
mod tests;

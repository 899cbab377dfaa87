//! The stored form of a runtime connection, made from a request with its
//! secrets sealed, and opened back into a usable [`Live`] connection.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{ConnectionError, ConnectionKind};
use crate::object_stores::StoreAccess;
use crate::secrets::SecretBox;
use crate::sync::snowflake::SnowflakeConfig;
use crate::sync::snowflake::client::{Client, Credentials};

/// The body of `sources.create`, `sources.update` and (without a name,
/// to try settings before saving them) `sources.test`.
#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// The connection's name: letters, digits, `_` and `-`.
    #[serde(default)]
    pub name: Option<String>,
    /// `snowflake` or `object_store` (create and test only).
    #[serde(default, rename = "type")]
    pub kind: Option<ConnectionKind>,
    /// Snowflake: account identifier.
    #[serde(default)]
    pub account: Option<String>,
    /// Snowflake: login name.
    #[serde(default)]
    pub user: Option<String>,
    /// Snowflake: role ("" clears it on update).
    #[serde(default)]
    pub role: Option<String>,
    /// Snowflake: warehouse ("" clears it on update).
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Snowflake: default database ("" clears it on update).
    #[serde(default)]
    pub database: Option<String>,
    /// Snowflake: base URL (private links, emulators); object store: the
    /// store root the connection serves, e.g. `s3://bucket/` (required).
    #[serde(default)]
    pub url: Option<String>,
    /// Snowflake: password.
    #[serde(default)]
    pub password: Option<String>,
    /// Snowflake: unencrypted PKCS#8 PEM private key (key-pair login).
    #[serde(default)]
    pub private_key: Option<String>,
    /// Object store: `object_store` options (`aws_region`,
    /// `aws_secret_access_key`, …); those whose names look secret are
    /// sealed. On update, given keys are set and "" removes one.
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

impl ConnectionRequest {
    /// Whether it names a connection and sets nothing.
    pub(super) fn is_name_only(&self) -> bool {
        let Self {
            name,
            kind,
            account,
            user,
            role,
            warehouse,
            database,
            url,
            password,
            private_key,
            options,
        } = self;
        name.is_some()
            && kind.is_none()
            && account.is_none()
            && user.is_none()
            && role.is_none()
            && warehouse.is_none()
            && database.is_none()
            && url.is_none()
            && password.is_none()
            && private_key.is_none()
            && options.is_none()
    }
}

impl std::fmt::Debug for ConnectionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which fields are given, never a secret's value.
        f.debug_struct("ConnectionRequest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("account", &self.account)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("private_key", &self.private_key.as_ref().map(|_| "<set>"))
            .field(
                "options",
                &self.options.as_ref().map(|o| o.keys().collect::<Vec<_>>()),
            )
            .finish_non_exhaustive()
    }
}

/// A stored runtime connection. Secret values are sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConnectionRecord {
    pub(super) name: String,
    #[serde(flatten)]
    pub(super) spec: StoredSpec,
    pub(super) created_by: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

/// The settings of a runtime Snowflake connection that are not secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SnowflakeSettings {
    pub(super) account: String,
    pub(super) user: String,
    pub(super) role: Option<String>,
    pub(super) warehouse: Option<String>,
    pub(super) database: Option<String>,
    pub(super) url: Option<String>,
}

impl SnowflakeSettings {
    /// Takes the settings a request gives; "" clears an optional one.
    fn apply(&mut self, request: &mut ConnectionRequest) {
        let optional = |given: Option<String>, old: &mut Option<String>| match given {
            Some(v) if v.trim().is_empty() => *old = None,
            Some(v) => *old = Some(v.trim().to_string()),
            None => {}
        };
        if let Some(account) = request.account.take() {
            self.account = account.trim().to_string();
        }
        if let Some(user) = request.user.take() {
            self.user = user.trim().to_string();
        }
        optional(request.role.take(), &mut self.role);
        optional(request.warehouse.take(), &mut self.warehouse);
        optional(request.database.take(), &mut self.database);
        optional(request.url.take(), &mut self.url);
    }

    /// The config section a client is made from.
    fn config(&self) -> SnowflakeConfig {
        SnowflakeConfig {
            account: self.account.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            warehouse: self.warehouse.clone(),
            database: self.database.clone(),
            url: self.url.clone(),
            ..SnowflakeConfig::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum StoredSpec {
    Snowflake {
        #[serde(flatten)]
        settings: SnowflakeSettings,
        /// Sealed.
        password: Option<String>,
        /// Sealed.
        private_key: Option<String>,
    },
    ObjectStore {
        url: String,
        options: BTreeMap<String, String>,
        /// Sealed values.
        secret_options: BTreeMap<String, String>,
    },
}

/// A usable runtime connection: secrets opened.
#[derive(Clone)]
pub(super) enum Live {
    Snowflake(Arc<Client>),
    ObjectStore {
        root: Url,
        options: BTreeMap<String, String>,
    },
    /// Stored but unusable; the reason, for views and errors.
    Broken(String),
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Live::Snowflake(client) => f.debug_tuple("Snowflake").field(client).finish(),
            // Option names only: the values hold opened secrets.
            Live::ObjectStore { root, options } => f
                .debug_struct("ObjectStore")
                .field("root", &crate::redact::url(root.as_str()))
                .field("options", &options.keys().collect::<Vec<_>>())
                .finish(),
            Live::Broken(reason) => f.debug_tuple("Broken").field(reason).finish(),
        }
    }
}

impl StoredSpec {
    /// The stored form of a request, on top of `old` for updates;
    /// secrets are sealed with `secrets`.
    pub(super) fn build(
        name: &str,
        kind: ConnectionKind,
        old: Option<&StoredSpec>,
        request: ConnectionRequest,
        secrets: &SecretBox,
    ) -> Result<StoredSpec, ConnectionError> {
        let seal = |field: &str, value: &str| secrets.seal(&secret_context(name, field), value);
        match kind {
            ConnectionKind::Snowflake => {
                if request.options.is_some() {
                    return Err(ConnectionError::Invalid(
                        "\"options\" are for object store connections; a Snowflake connection \
                         takes account, user, role, warehouse, database, url and password or private_key"
                            .into(),
                    ));
                }
                let (mut settings, mut password, mut private_key) = match old {
                    Some(StoredSpec::Snowflake {
                        settings,
                        password,
                        private_key,
                    }) => (settings.clone(), password.clone(), private_key.clone()),
                    _ => Default::default(),
                };
                let mut request = request;
                settings.apply(&mut request);
                match (request.password, request.private_key) {
                    (Some(_), Some(_)) => {
                        return Err(ConnectionError::Invalid(
                            "give password or private_key, not both".into(),
                        ));
                    }
                    (Some(p), None) => {
                        (password, private_key) = (Some(seal("password", &p)), None);
                    }
                    (None, Some(k)) => {
                        (password, private_key) = (None, Some(seal("private_key", &k)));
                    }
                    (None, None) => {}
                }
                if password.is_none() && private_key.is_none() {
                    return Err(ConnectionError::Invalid(format!(
                        "connection '{name}' needs \"password\" or \"private_key\""
                    )));
                }
                Ok(StoredSpec::Snowflake {
                    settings,
                    password,
                    private_key,
                })
            }
            ConnectionKind::ObjectStore => {
                if let Some(field) = [
                    ("account", request.account.is_some()),
                    ("user", request.user.is_some()),
                    ("role", request.role.is_some()),
                    ("warehouse", request.warehouse.is_some()),
                    ("database", request.database.is_some()),
                    ("password", request.password.is_some()),
                    ("private_key", request.private_key.is_some()),
                ]
                .iter()
                .find_map(|(field, given)| given.then_some(field))
                {
                    return Err(ConnectionError::Invalid(format!(
                        "\"{field}\" is for Snowflake connections; an object store connection takes url and options"
                    )));
                }
                let (mut url, mut options, mut secret_options) = match old {
                    Some(StoredSpec::ObjectStore {
                        url,
                        options,
                        secret_options,
                    }) => (url.clone(), options.clone(), secret_options.clone()),
                    _ => Default::default(),
                };
                if let Some(given) = request.url {
                    url = given.trim().to_string();
                }
                if url.is_empty() {
                    return Err(ConnectionError::Invalid(
                        "\"url\" is required: the store root this connection serves, e.g. s3://bucket/"
                            .into(),
                    ));
                }
                for (key, value) in request.options.unwrap_or_default() {
                    let key = key.trim().to_ascii_lowercase();
                    options.remove(&key);
                    secret_options.remove(&key);
                    if value.is_empty() {
                        continue;
                    }
                    if crate::redact::is_secret_key(&key) {
                        let sealed = seal(&key, &value);
                        secret_options.insert(key, sealed);
                    } else {
                        options.insert(key, value);
                    }
                }
                Ok(StoredSpec::ObjectStore {
                    url,
                    options,
                    secret_options,
                })
            }
        }
    }

    pub(super) fn kind(&self) -> ConnectionKind {
        match self {
            StoredSpec::Snowflake { .. } => ConnectionKind::Snowflake,
            StoredSpec::ObjectStore { .. } => ConnectionKind::ObjectStore,
        }
    }
}

/// What a sealed secret belongs to: it opens only for that connection and
/// field.
fn secret_context(connection: &str, field: &str) -> String {
    format!("connection/{connection}/{field}")
}

/// Opens a record's secrets into a usable connection, checking its
/// settings (URL, options) on the way.
pub(super) fn open_record(
    record: &ConnectionRecord,
    secrets: &SecretBox,
) -> Result<Live, ConnectionError> {
    let name = &record.name;
    match &record.spec {
        StoredSpec::Snowflake {
            settings,
            password,
            private_key,
        } => {
            let credentials = match (password, private_key) {
                (Some(sealed), _) => Credentials::Password(
                    secrets.unseal(&secret_context(name, "password"), sealed)?,
                ),
                (None, Some(sealed)) => Credentials::KeyPair(
                    secrets.unseal(&secret_context(name, "private_key"), sealed)?,
                ),
                (None, None) => {
                    return Err(ConnectionError::Invalid(format!(
                        "connection '{name}' has neither password nor private_key"
                    )));
                }
            };
            let client = settings
                .config()
                .client(name, credentials)
                .map_err(|e| ConnectionError::Invalid(e.replace("[snowflake.", "[connection ")))?;
            Ok(Live::Snowflake(Arc::new(client)))
        }
        StoredSpec::ObjectStore {
            url,
            options,
            secret_options,
        } => {
            let root = Url::parse(url).map_err(|e| {
                ConnectionError::Invalid(format!(
                    "url '{}' of connection '{name}' is not a URL: {e}",
                    crate::redact::url(url)
                ))
            })?;
            let mut all = options.clone();
            for (key, sealed) in secret_options {
                all.insert(
                    key.clone(),
                    secrets.unseal(&secret_context(name, key), sealed)?,
                );
            }
            // Builds the store now so a wrong option, value or scheme is
            // refused when the connection is saved, not at the first sync.
            crate::object_stores::open_with(&root, StoreAccess::Connection(&all))
                .map_err(|e| ConnectionError::Invalid(format!("connection '{name}': {e}")))?;
            Ok(Live::ObjectStore { root, options: all })
        }
    }
}

/// Whether `url` names something under `root` (same scheme and host, and
/// a path below the root's).
pub(super) fn is_under(url: &str, root: &Url) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false;
    };
    let root_path = root.path().trim_end_matches('/');
    url.scheme() == root.scheme()
        && url.host_str() == root.host_str()
        && url.port_or_known_default() == root.port_or_known_default()
        && (url.path() == root_path || url.path().starts_with(&format!("{root_path}/")))
}

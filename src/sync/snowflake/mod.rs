//! Snowflake as a source: tables addressed as `DB.SCHEMA.TABLE` through a
//! connection named in the config (`[snowflake.NAME]`).
//!
//! [`client`] speaks Snowflake's driver API (see there why it is written
//! here rather than taken from the `snowflake-api` crate); [`decode`] turns
//! Snowflake's Arrow encoding into replica types; `listing` answers
//! `sources.list_tables`. Extraction is one
//! `SELECT` of the registered columns, with `WHERE cursor >= …` for
//! incremental syncs; its result streams chunk by chunk, so a table larger
//! than memory syncs in bounded memory.

pub mod client;
pub mod decode;
mod listing;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use self::client::{Client, ClientConfig, ClientError, Credentials};
pub use self::listing::{SourceTable, list_tables};
use super::source::{RowStream, Since, Source, SourceError, SourceSize};

/// A `[snowflake.NAME]` section of the config. Secrets are named, never
/// written inline: `password_env`/`password_file` or
/// `private_key_env`/`private_key_file` (unencrypted PKCS#8 PEM).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `xy12345.us-east-1` or `myorg-myaccount`.
    pub account: String,
    /// Login name.
    pub user: String,
    /// Role to use.
    pub role: Option<String>,
    /// Warehouse that runs the extraction queries.
    pub warehouse: Option<String>,
    /// Default database.
    pub database: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the private key (PEM).
    pub private_key_env: Option<String>,
    /// File holding the private key (PEM).
    pub private_key_file: Option<PathBuf>,
    /// Base URL, for private links and emulators; default
    /// `https://{account}.snowflakecomputing.com`.
    pub url: Option<String>,
    /// Result chunks downloaded ahead while a sync writes [default: 4].
    pub prefetch: Option<usize>,
}

impl SnowflakeConfig {
    /// A client for this connection with `credentials`; checks the
    /// settings but connects to nothing yet.
    pub(crate) fn client(&self, name: &str, credentials: Credentials) -> Result<Client, String> {
        if self.account.trim().is_empty() || self.user.trim().is_empty() {
            return Err(format!("[snowflake.{name}]: account and user are required"));
        }
        let base_url = self
            .url
            .clone()
            .unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", self.account));
        match url::Url::parse(&base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(format!(
                    "[snowflake.{name}]: '{base_url}' is not an http(s) URL; check account and url"
                ));
            }
        }
        let config = ClientConfig {
            account: self.account.clone(),
            user: self.user.clone(),
            role: self.role.clone(),
            warehouse: self.warehouse.clone(),
            database: self.database.clone(),
            credentials,
            base_url,
            prefetch: self.prefetch.unwrap_or(4).max(1),
            request_timeout: Duration::from_secs(120),
        };
        Client::new(config).map_err(|e| format!("[snowflake.{name}]: {e}"))
    }

    fn credentials(&self, name: &str) -> Result<Credentials, String> {
        let from_env = |var: &String| {
            std::env::var(var)
                .map_err(|_| format!("[snowflake.{name}]: environment variable {var} is not set"))
        };
        let from_file = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end().to_string())
                .map_err(|e| format!("[snowflake.{name}]: cannot read {}: {e}", path.display()))
        };
        match (
            &self.password_env,
            &self.password_file,
            &self.private_key_env,
            &self.private_key_file,
        ) {
            (Some(var), None, None, None) => Ok(Credentials::Password(from_env(var)?)),
            (None, Some(path), None, None) => Ok(Credentials::Password(from_file(path)?)),
            (None, None, Some(var), None) => Ok(Credentials::KeyPair(from_env(var)?)),
            (None, None, None, Some(path)) => Ok(Credentials::KeyPair(from_file(path)?)),
            _ => Err(format!(
                "[snowflake.{name}]: set exactly one of password_env, password_file, \
                 private_key_env, private_key_file"
            )),
        }
    }
}

/// The configured Snowflake connections, by name.
#[derive(Debug, Clone, Default)]
pub struct SnowflakeConnections {
    clients: BTreeMap<String, Arc<Client>>,
    sections: BTreeMap<String, SnowflakeConfig>,
}

impl SnowflakeConnections {
    /// Connections from config; reads the secrets now so a missing one
    /// stops the server at start rather than failing a sync at night.
    pub fn from_config(sections: &BTreeMap<String, SnowflakeConfig>) -> Result<Self, String> {
        let mut clients = BTreeMap::new();
        for (name, section) in sections {
            let client = section.client(name, section.credentials(name)?)?;
            clients.insert(name.clone(), Arc::new(client));
        }
        Ok(Self {
            clients,
            sections: sections.clone(),
        })
    }

    /// The client of a connection.
    pub fn get(&self, name: &str) -> Result<Arc<Client>, SourceError> {
        self.clients
            .get(name)
            .cloned()
            .ok_or_else(|| SourceError::UnknownConnection(name.to_string()))
    }

    /// Names of the configured connections.
    pub fn names(&self) -> Vec<String> {
        self.clients.keys().cloned().collect()
    }

    /// The config sections (which name secrets, never hold them).
    pub fn sections(&self) -> impl Iterator<Item = (&str, &SnowflakeConfig)> {
        self.sections
            .iter()
            .map(|(name, section)| (name.as_str(), section))
    }
}

/// A Snowflake table as registered: `snowflake://CONNECTION/DB.SCHEMA.TABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnowflakeSpec {
    /// Connection name (`[snowflake.NAME]`).
    pub connection: String,
    /// Database, schema and table, as given (unquoted parts resolve
    /// upper-case, as in Snowflake).
    pub table: String,
}

impl fmt::Display for SnowflakeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "snowflake://{}/{}", self.connection, self.table)
    }
}

impl SnowflakeSpec {
    /// Parses `CONNECTION/DB.SCHEMA.TABLE`.
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::BadUrl {
            url: format!("snowflake://{text}"),
            reason: reason.to_string(),
        };
        let (connection, table) = text
            .split_once('/')
            .ok_or_else(|| bad("expected snowflake://CONNECTION/DATABASE.SCHEMA.TABLE"))?;
        if connection.is_empty() {
            return Err(bad("the connection name is missing"));
        }
        let parts = split_identifier(table).map_err(|e| bad(&e))?;
        if parts.len() != 3 {
            return Err(bad(
                "name the table fully as DATABASE.SCHEMA.TABLE (quote parts with \"…\" to keep their case)",
            ));
        }
        Ok(Self {
            connection: connection.to_string(),
            table: table.to_string(),
        })
    }
}

/// Splits `a."B c".d` into parts, each rendered safe for SQL: unquoted
/// parts must be plain identifiers; quoted ones keep their case.
pub(crate) fn split_identifier(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| "unterminated quoted identifier".to_string())?;
            let inner = &quoted[..end];
            if inner.is_empty() {
                return Err("empty quoted identifier".into());
            }
            parts.push(format!("\"{inner}\""));
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let part = &rest[..end];
            let plain = part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !plain {
                return Err(format!(
                    "'{part}' is not an identifier; quote it with \"…\" if it is one"
                ));
            }
            parts.push(part.to_string());
            rest = &rest[end..];
        }
        match rest.strip_prefix('.') {
            Some(next) => rest = next,
            None if rest.is_empty() => return Ok(parts),
            None => return Err(format!("unexpected '{rest}' after an identifier")),
        }
    }
}

/// A column name as a quoted Snowflake identifier.
fn quote_column(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Replica names for Snowflake columns. Unquoted Snowflake identifiers
/// are stored upper-case, while airlock's SQL folds unquoted names to lower
/// case; so an all-upper-case name becomes lower-case (`ORDER_ID` is
/// queried as `order_id`, quoted or not), unless that would collide with
/// another column. Names created quoted in mixed case keep their case.
fn replica_names(columns: &[decode::ColumnType]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            let lower = c.name.to_lowercase();
            let upper_case = c.name == c.name.to_uppercase() && lower != c.name;
            let collides = columns.iter().any(|other| other.name == lower);
            if upper_case && !collides {
                lower
            } else {
                c.name.clone()
            }
        })
        .collect()
}

/// A Snowflake table, readable.
#[derive(Debug)]
pub struct SnowflakeSource {
    client: Arc<Client>,
    spec: SnowflakeSpec,
    table_sql: String,
    // Replica column name -> Snowflake column name, from the last schema().
    names: std::sync::Mutex<BTreeMap<String, String>>,
}

impl SnowflakeSource {
    /// The source of `spec` through `client`.
    pub fn new(client: Arc<Client>, spec: &SnowflakeSpec) -> Self {
        let table_sql = split_identifier(&spec.table)
            .map(|parts| parts.join("."))
            .unwrap_or_default();
        Self {
            client,
            spec: spec.clone(),
            table_sql,
            names: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The Snowflake name of a replica column.
    fn source_column(&self, replica: &str) -> String {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(replica)
            .cloned()
            .unwrap_or_else(|| replica.to_string())
    }

    fn error(&self, e: ClientError) -> SourceError {
        source_error(&self.spec.to_string(), e)
    }
}

/// Maps client failures to source failures.
pub(crate) fn source_error(name: &str, e: ClientError) -> SourceError {
    match e {
        ClientError::Unavailable(message) => SourceError::Unavailable {
            source_name: name.to_string(),
            message,
        },
        ClientError::Login { message, .. } | ClientError::Key(message) => SourceError::Refused {
            source_name: name.to_string(),
            message,
        },
        e @ ClientError::Query { .. } if e.is_missing_object() => {
            SourceError::NoTable(name.to_string())
        }
        other => SourceError::Read {
            url: name.to_string(),
            message: other.to_string(),
        },
    }
}

#[async_trait]
impl Source for SnowflakeSource {
    fn name(&self) -> String {
        self.spec.to_string()
    }

    async fn schema(&self) -> Result<SchemaRef, SourceError> {
        let result = self
            .client
            .query(&format!("SELECT * FROM {} LIMIT 0", self.table_sql))
            .await
            .map_err(|e| self.error(e))?;
        let names = replica_names(&result.rowtype);
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names
            .iter()
            .zip(&result.rowtype)
            .map(|(replica, column)| (replica.clone(), column.name.clone()))
            .collect();
        let schema = decode::replica_schema(&result.rowtype).map_err(|e| match e {
            decode::DecodeError::Unsupported { column, kind } => SourceError::UnsupportedColumn {
                source_name: self.name(),
                column,
                data_type: kind,
                reason: "no lasting replica type for it".into(),
            },
            other => SourceError::Read {
                url: self.name(),
                message: other.to_string(),
            },
        })?;
        Ok(renamed(&schema, &names))
    }

    async fn size(&self) -> Result<SourceSize, SourceError> {
        let parts = split_identifier(&self.spec.table).map_err(|reason| SourceError::BadUrl {
            url: self.name(),
            reason,
        })?;
        let [database, schema, table] = parts.as_slice() else {
            return Ok(SourceSize::default());
        };
        let sql = format!(
            "SELECT ROW_COUNT AS ROW_COUNT, BYTES AS BYTES FROM {database}.INFORMATION_SCHEMA.TABLES \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            name_literal(schema),
            name_literal(table)
        );
        let (_, rows) = self
            .client
            .query_strings(&sql)
            .await
            .map_err(|e| self.error(e))?;
        let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<u64>().ok());
        Ok(rows
            .first()
            .map_or_else(SourceSize::default, |row| SourceSize {
                files: None,
                rows: row.first().and_then(number),
                bytes: row.get(1).and_then(number),
            }))
    }

    async fn extract(
        &self,
        schema: SchemaRef,
        since: Option<&Since>,
    ) -> Result<RowStream, SourceError> {
        if self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            self.schema().await?;
        }
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| quote_column(&self.source_column(f.name())))
            .collect();
        let mut sql = format!("SELECT {} FROM {}", columns.join(", "), self.table_sql);
        if let Some(since) = since {
            let op = if since.inclusive { ">=" } else { ">" };
            sql.push_str(&format!(
                " WHERE {} {op} {}",
                quote_column(&self.source_column(&since.column)),
                literal(&since.value)?
            ));
        }
        let result = self.client.query(&sql).await.map_err(|e| self.error(e))?;
        let rowtype = result.rowtype.clone();
        let returned = decode::replica_schema(&rowtype).map_err(|e| SourceError::Read {
            url: self.name(),
            message: e.to_string(),
        })?;
        let returned = renamed(&returned, &replica_names(&rowtype));
        // The table changed between the schema check and the extraction.
        if returned.fields().len() != schema.fields().len()
            || returned
                .fields()
                .iter()
                .zip(schema.fields())
                .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
        {
            return Err(SourceError::Read {
                url: self.name(),
                message: "the table's columns changed while the sync started; it will be retried"
                    .into(),
            });
        }
        let name = self.name();
        Ok(result
            .batches()
            .map(move |batch| {
                let batch = batch.map_err(|e| source_error(&name, e))?;
                decode::decode_batch(&batch, &rowtype, &schema).map_err(|e| SourceError::Read {
                    url: name.clone(),
                    message: e.to_string(),
                })
            })
            .boxed())
    }
}

fn renamed(schema: &SchemaRef, names: &[String]) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| f.as_ref().clone().with_name(name))
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
}

/// A name as a string literal for INFORMATION_SCHEMA filters: quoted
/// identifiers keep their case, unquoted ones are upper-case in Snowflake.
fn name_literal(part: &str) -> String {
    let name = match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => part.to_ascii_uppercase(),
    };
    format!("'{}'", name.replace('\'', "''"))
}

/// A cursor value as a Snowflake literal of the column's type.
fn literal(value: &ScalarValue) -> Result<String, SourceError> {
    let unsupported = || SourceError::UnsupportedColumn {
        source_name: "snowflake".into(),
        column: "cursor".into(),
        data_type: value.data_type().to_string(),
        reason: "a cursor must be a number, date, timestamp or text".into(),
    };
    let text = value
        .to_array()
        .ok()
        .and_then(|array| datafusion::arrow::compute::cast(&array, &DataType::Utf8).ok())
        .and_then(|array| {
            use datafusion::arrow::array::{Array, AsArray};
            let strings = array.as_string::<i32>();
            (!strings.is_null(0)).then(|| strings.value(0).to_string())
        })
        .ok_or_else(unsupported)?;
    let quoted = format!("'{}'", text.replace('\'', "''"));
    Ok(match value.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(..)
        | DataType::Float64 => text,
        DataType::Date32 => format!("{quoted}::DATE"),
        DataType::Timestamp(_, None) => format!("{quoted}::TIMESTAMP_NTZ"),
        DataType::Timestamp(_, Some(_)) => format!("{quoted}::TIMESTAMP_TZ"),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => quoted,
        _ => return Err(unsupported()),
    })
}

#[cfg(test)]
mod tests;

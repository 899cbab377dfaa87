//! Sources: where replicas come from.
//!
//! Every kind of source (files on an object store, a Snowflake table, and
//! whatever comes next: Postgres, another Flight SQL server) implements
//! [`Source`]: tell the columns in replica types, and stream rows with
//! bounded memory, optionally only those past a cursor value. Strategies,
//! jobs and the replica know nothing else about a source, so a new kind is
//! one file plus a line in [`Sources::open`].

mod files;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::scalar::ScalarValue;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use files::{CsvOptions, FileFormat, FileSource, FileSpec};

use super::connections::Connections;
use super::snowflake::{SnowflakeSource, SnowflakeSpec};
use crate::object_stores::StoreAccess;

/// Why a source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not a URL or path airlock understands.
    #[error("source '{url}' is not a valid URL or absolute path: {reason}")]
    BadUrl {
        /// The source as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The URL scheme has no object store.
    #[error(
        "source scheme '{0}' is not supported; use file://, s3://, gs://, az://, abfss://, https:// or snowflake://"
    )]
    UnsupportedScheme(String),
    /// The file type is not Parquet, CSV or JSON.
    #[error(
        "unsupported file type '{0}': airlock reads Parquet (.parquet), CSV (.csv, .tsv) and \
         newline-delimited JSON (.json, .jsonl, .ndjson), optionally compressed (.gz, .bz2, .xz, .zst)"
    )]
    UnsupportedFormat(String),
    /// A local path inside airlock's own data directory.
    #[error(
        "source '{0}' is inside airlock's data directory, which holds secrets and replicas; copy the files elsewhere"
    )]
    Protected(String),
    /// A CSV option is invalid.
    #[error("invalid CSV options: {0}")]
    BadCsv(String),
    /// A prefix without a format.
    #[error("cannot tell the file type of '{0}': add \"format\": \"parquet\", \"csv\" or \"json\"")]
    UnknownFormat(String),
    /// Nothing matched.
    #[error(
        "no {format} files found at '{url}'; check the path (a directory needs a trailing '/')"
    )]
    NoFiles {
        /// The source.
        url: String,
        /// The expected format.
        format: FileFormat,
    },
    /// No connection has this name.
    #[error(
        "no connection named '{0}'; sources.list shows the connections, sources.create adds one \
         (or add [snowflake.{0}] to the config file)"
    )]
    UnknownConnection(String),
    /// The connection does not fit the source, or cannot be used.
    #[error("{0}")]
    Connection(String),
    /// The source table does not exist or is not visible to the role.
    #[error("source table {0} does not exist or the configured role cannot see it")]
    NoTable(String),
    /// A column the source cannot provide in a replica type.
    #[error(
        "column '{column}' of {source_name} has type {data_type}, which airlock cannot replicate: {reason}"
    )]
    UnsupportedColumn {
        /// The source.
        source_name: String,
        /// The column.
        column: String,
        /// Its type at the source.
        data_type: String,
        /// Why.
        reason: String,
    },
    /// The source refused us (bad credentials, missing privilege). Not retried.
    #[error("{source_name} refused the request: {message}")]
    Refused {
        /// The source.
        source_name: String,
        /// What it said.
        message: String,
    },
    /// The source is unreachable or overloaded; worth retrying.
    #[error("{source_name} is unavailable: {message}")]
    Unavailable {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// Listing, schema inference or reading failed.
    #[error("reading '{url}' failed: {message}")]
    Read {
        /// The source.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl SourceError {
    /// Whether trying again later may succeed (network trouble, throttling,
    /// a source restarting), as opposed to a mistake retrying repeats.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Unavailable { .. })
    }
}

/// Where a table's data comes from, as registered.
///
/// Untagged so that registrations stored before Snowflake sources existed
/// (a bare file spec) still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SourceSpec {
    /// A Snowflake table.
    Snowflake(SnowflakeSpec),
    /// Files on an object store.
    Files(FileSpec),
}

impl SourceSpec {
    /// The connection it is read through, if named.
    pub fn connection(&self) -> Option<&str> {
        match self {
            SourceSpec::Snowflake(spec) => Some(&spec.connection),
            SourceSpec::Files(spec) => spec.connection.as_deref(),
        }
    }

    /// The source as shown to users: credentials removed.
    pub fn display(&self) -> String {
        match self {
            SourceSpec::Snowflake(spec) => spec.to_string(),
            SourceSpec::Files(spec) => crate::redact::url(&spec.url),
        }
    }
}

/// Rows to extract: those whose `column` is past `value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Since {
    /// The cursor column.
    pub column: String,
    /// The lower bound.
    pub value: ScalarValue,
    /// `>=` rather than `>`.
    pub inclusive: bool,
}

/// What a source knows of its size before reading, for progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSize {
    /// Files, for file sources.
    pub files: Option<u64>,
    /// Rows, when the source keeps a count.
    pub rows: Option<u64>,
    /// Bytes at the source.
    pub bytes: Option<u64>,
}

/// A stream of rows from a source.
pub(super) type RowStream = BoxStream<'static, Result<RecordBatch, SourceError>>;

/// A readable source.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The source for messages (no credentials).
    fn name(&self) -> String;

    /// Checks that the source exists; its columns in replica types.
    async fn schema(&self) -> Result<SchemaRef, SourceError>;

    /// Its size, as far as it is cheap to know.
    async fn size(&self) -> Result<SourceSize, SourceError>;

    /// Streams rows with `schema`'s columns (as returned by
    /// [`Source::schema`]), in source order, only those past `since` when
    /// given. Memory stays bounded whatever the table's size.
    async fn extract(
        &self,
        schema: SchemaRef,
        since: Option<&Since>,
    ) -> Result<RowStream, SourceError>;
}

/// Opens sources from their specs: holds the configured object store
/// options and the connections (config file and runtime).
#[derive(Debug, Clone)]
pub struct Sources {
    object_store_options: BTreeMap<String, String>,
    connections: Arc<Connections>,
}

impl Sources {
    /// Sources with these settings.
    pub fn new(
        object_store_options: BTreeMap<String, String>,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            object_store_options,
            connections,
        }
    }

    /// Parses what `table.register` names: `snowflake://CONNECTION/DB.SCHEMA.TABLE`,
    /// or a file URL or absolute path with its format options and,
    /// optionally, the object-store connection to read it through.
    pub fn parse(
        &self,
        source: &str,
        format: Option<FileFormat>,
        csv: CsvOptions,
        connection: Option<String>,
    ) -> Result<SourceSpec, SourceError> {
        match source.strip_prefix("snowflake://") {
            Some(_) if connection.is_some() => Err(SourceError::Connection(
                "\"connection\" names the object store of a file source; a Snowflake source \
                 names its connection in the URL: snowflake://CONNECTION/DB.SCHEMA.TABLE"
                    .into(),
            )),
            Some(rest) => Ok(SourceSpec::Snowflake(SnowflakeSpec::parse(rest)?)),
            None => Ok(SourceSpec::Files(FileSpec {
                url: source.to_string(),
                format,
                csv,
                connection,
            })),
        }
    }

    /// A readable source for `spec`.
    pub fn open(&self, spec: &SourceSpec) -> Result<Arc<dyn Source>, SourceError> {
        Ok(match spec {
            SourceSpec::Files(spec) => Arc::new(self.files(spec)?),
            SourceSpec::Snowflake(spec) => Arc::new(SnowflakeSource::new(
                self.connections.snowflake(&spec.connection)?,
                spec,
            )),
        })
    }

    /// A file source, read with its connection's credentials alone, or
    /// without one with the server's (environment and `[object_store]`).
    pub fn files(&self, spec: &FileSpec) -> Result<FileSource, SourceError> {
        match &spec.connection {
            Some(name) => {
                let options = self.connections.object_store_options(name, &spec.url)?;
                FileSource::resolve(spec, StoreAccess::Connection(&options))
            }
            None => FileSource::resolve(spec, StoreAccess::Server(&self.object_store_options)),
        }
    }

    /// The connections.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }
}

//! Durable metadata: tokens, grants, table registrations, jobs and settings.
//!
//! The store is a small document store ([`MetaStore`]): each module owns
//! the shape of its records and keeps them as JSON documents in a named
//! [`Collection`]. That keeps this seam narrow, so that a shared store
//! (Postgres, say) can replace the local DuckDB file when airlock runs on
//! several nodes, without touching the modules that own the records.

#[cfg(test)]
pub(crate) mod contract;
mod duckdb_store;
mod feed;
mod limits;
mod postgres_limits;
mod postgres_sessions;
mod postgres_store;
#[cfg(test)]
pub(crate) mod test_postgres;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use duckdb_store::DuckDbMetaStore;
pub use feed::{Cache, Change, follow};
pub use limits::SharedLimits;
pub use postgres_store::{PgMetaStore, parse_url as parse_meta_url, with_causes};

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The metadata database could not be opened.
    #[error("cannot open the metadata database: {0}")]
    Open(#[from] crate::duckdb_setup::OpenError),
    /// The underlying database failed.
    #[error("metadata store error: {0}")]
    Store(#[from] duckdb::Error),
    /// A stored document no longer parses as its record type.
    #[error("metadata document {collection}/{key} is corrupt: {source}")]
    Corrupt {
        /// Collection of the document.
        collection: &'static str,
        /// Key of the document.
        key: String,
        /// Parse error.
        source: serde_json::Error,
    },
    /// A conditional write found another version than it expected.
    #[error(
        "metadata document {collection}/{key} was changed by someone else \
         (expected {expected}); read it again and retry"
    )]
    Conflict {
        /// Collection of the document.
        collection: &'static str,
        /// Key of the document.
        key: String,
        /// What the write expected, e.g. `version 3` or `no document`.
        expected: String,
    },
    /// A blocking task was cancelled or panicked.
    #[error("metadata store task failed: {0}")]
    Task(String),
    /// Postgres failed, or could not be reached.
    #[error("metadata store (Postgres) error: {0}")]
    Postgres(String),
    /// A write of a writer that another node has replaced.
    #[error(
        "this node is no longer the cluster's writer (its term {term} was superseded); \
         the write was refused and the new writer carries on"
    )]
    Fenced {
        /// The term this node wrote under.
        term: u64,
    },
}

/// A named set of documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// Server-wide settings (admin password hash, …).
    Settings,
    /// Issued tokens.
    Tokens,
    /// Registered tables.
    Tables,
    /// Sync jobs.
    Jobs,
    /// Grants.
    Grants,
    /// Artifacts (their versions and who may read them).
    Artifacts,
    /// Durable jobs of the data tools (exports, …).
    ToolJobs,
    /// Table and column descriptions (agent context).
    ContextTables,
    /// Business rules for writing SQL (agent context).
    Instructions,
    /// Questions with the SQL that answers them (agent context).
    GoldenSql,
    /// What tables' columns hold, per scan (agent context).
    ContextScans,
    /// Snowflake and object-store connections made at run time.
    Connections,
    /// Prompts sent to models by `nl.sql`.
    NlPrompts,
    /// `nl.sql` results.
    NlGenerations,
    /// Fine-tuning jobs.
    Finetunes,
    /// The latest published snapshot of each replica table (a cluster's
    /// readers load it); a document's version is the table's epoch.
    Snapshots,
}

impl Collection {
    /// Every collection.
    pub const ALL: [Collection; 16] = [
        Collection::Settings,
        Collection::Tokens,
        Collection::Tables,
        Collection::Jobs,
        Collection::Grants,
        Collection::Artifacts,
        Collection::ToolJobs,
        Collection::ContextTables,
        Collection::Instructions,
        Collection::GoldenSql,
        Collection::ContextScans,
        Collection::Connections,
        Collection::NlPrompts,
        Collection::NlGenerations,
        Collection::Finetunes,
        Collection::Snapshots,
    ];

    /// The collection stored under `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Stable name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Settings => "settings",
            Collection::Tokens => "tokens",
            Collection::Tables => "tables",
            Collection::Jobs => "jobs",
            Collection::Grants => "grants",
            Collection::Artifacts => "artifacts",
            Collection::ToolJobs => "tool_jobs",
            Collection::ContextTables => "context_tables",
            Collection::Instructions => "instructions",
            Collection::GoldenSql => "golden_sql",
            Collection::ContextScans => "context_scans",
            Collection::Connections => "connections",
            Collection::NlPrompts => "nl_prompts",
            Collection::NlGenerations => "nl_generations",
            Collection::Finetunes => "finetunes",
            Collection::Snapshots => "snapshots",
        }
    }
}

/// Indexed attributes of a document (owner, swarm, state, …), stored beside
/// it so listings filter without parsing every document. A document's
/// labels are replaced whenever it is written.
pub type Labels = BTreeMap<&'static str, String>;

/// What a write expects to find, so concurrent writers cannot overwrite
/// each other's changes unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there (last writer wins).
    Any,
    /// Create only: fail if the key exists.
    Absent,
    /// Replace only the version read earlier (compare-and-swap).
    Version(u64),
}

/// A document as stored: its key, text, version and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDoc {
    /// Key within its collection.
    pub key: String,
    /// JSON text.
    pub doc: String,
    /// Starts at 1 and grows by one per write.
    pub version: u64,
}

/// Which documents a listing returns, in key order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Keys starting with this.
    pub prefix: Option<String>,
    /// Keys strictly after this one (the cursor of the previous page).
    pub after: Option<String>,
    /// Documents whose labels have all these values.
    pub labels: Vec<(&'static str, String)>,
    /// At most this many documents; none means all.
    pub limit: Option<usize>,
    /// Keys in descending order (newest first where keys sort by time);
    /// `after` is then the key the previous page ended at, going down.
    pub descending: bool,
}

impl ListQuery {
    /// Documents whose label `name` is `value`.
    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((name, value.into()));
        self
    }
}

/// Turns a claimed document (key, text) into its claimed text and labels.
pub type ClaimUpdate<'a> = dyn FnMut(&str, &str) -> Result<(String, Labels), MetaError> + Send + 'a;

/// A durable key → JSON document store, one namespace per [`Collection`].
/// Writes are versioned so that callers on several nodes can update a
/// document with compare-and-swap ([`Expect::Version`]) and claim work
/// exactly once ([`Meta::claim`]).
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Writes a document and its labels if `expect` holds; returns the new
    /// version, or [`MetaError::Conflict`] when it does not hold.
    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
        labels: Labels,
        expect: Expect,
    ) -> Result<u64, MetaError>;
    /// Reads one document.
    async fn get_raw(&self, collection: Collection, key: &str)
    -> Result<Option<RawDoc>, MetaError>;
    /// Deletes a document, returning whether it existed.
    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError>;
    /// The documents a query selects, in key order.
    async fn list_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
    ) -> Result<Vec<RawDoc>, MetaError>;
    /// Changes written by every node, for a store several nodes share;
    /// none for a store only this process writes.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
    /// Claims one document a query selects: `update` turns its text into
    /// the claimed text and labels, written only if nobody else claimed or
    /// changed it first. Returns the claimed document, or none when nothing
    /// is left. This default reads, then writes with compare-and-swap.
    async fn claim_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
        update: &mut ClaimUpdate<'_>,
    ) -> Result<Option<RawDoc>, MetaError> {
        for candidate in self.list_raw(collection, query).await? {
            let (doc, labels) = update(&candidate.key, &candidate.doc)?;
            let expect = Expect::Version(candidate.version);
            match self
                .put_raw(collection, &candidate.key, doc.clone(), labels, expect)
                .await
            {
                Ok(version) => {
                    return Ok(Some(RawDoc {
                        key: candidate.key,
                        doc,
                        version,
                    }));
                }
                Err(MetaError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
    /// Campaigns for this node to be the cluster's one writer (which runs
    /// the syncs): the receiver holds the writer's term while this node is
    /// the writer, and none while it is not. The campaign ends when every
    /// receiver is dropped. A store only this process writes makes it the
    /// writer at once, for good (term 0).
    fn campaign(&self, _node: &str) -> tokio::sync::watch::Receiver<Option<u64>> {
        tokio::sync::watch::channel(Some(0)).1
    }
    /// This store, with every write refused ([`MetaError::Fenced`]) once
    /// `term` is no longer the writer's. A store only this process writes
    /// has no other writer to fear.
    fn fenced(self: Arc<Self>, _term: u64) -> Arc<dyn MetaStore>;
    /// Per-agent limits counted across every node sharing this store;
    /// none for a store only this process uses.
    fn shared_limits(&self) -> Option<Arc<dyn SharedLimits>> {
        None
    }
    /// The Postgres pool of a store several nodes share, for modules that
    /// keep tables of their own beside it (the audit trail).
    fn postgres(&self) -> Option<deadpool_postgres::Pool> {
        None
    }
    /// How long this node's caches may have been missing changes (its
    /// feed lost, and the reload after it not finished); none while they
    /// are current, and always for a store only this process writes.
    fn feed_lag(&self) -> Option<std::time::Duration> {
        None
    }
    /// The caches reloaded everything, as of `started`: changes lost
    /// before then are in them.
    fn caches_current(&self, _started: std::time::Instant) {}
}

/// A record and the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The record's key.
    pub key: String,
    /// The version to pass to [`Expect::Version`] when writing it back.
    pub version: u64,
    /// The record.
    pub value: T,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The records, in key order.
    pub items: Vec<Versioned<T>>,
    /// Pass as [`ListQuery::after`] for the next page; none on the last.
    pub next: Option<String>,
}

/// Typed access to a [`MetaStore`]: what the rest of airlock holds.
#[derive(Debug, Clone)]
pub struct Meta {
    store: Arc<dyn MetaStore>,
}

impl Meta {
    /// Wraps a store.
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        Self { store }
    }

    /// Serializes and stores a record (last writer wins, no labels).
    pub async fn put<T: Serialize>(
        &self,
        collection: Collection,
        key: &str,
        record: &T,
    ) -> Result<(), MetaError> {
        self.put_if(collection, key, record, Labels::new(), Expect::Any)
            .await
            .map(|_| ())
    }

    /// Stores a record with labels if `expect` holds; returns its new version.
    pub async fn put_if<T: Serialize>(
        &self,
        collection: Collection,
        key: &str,
        record: &T,
        labels: Labels,
        expect: Expect,
    ) -> Result<u64, MetaError> {
        let doc = serde_json::to_string(record).map_err(|source| MetaError::Corrupt {
            collection: collection.name(),
            key: key.to_string(),
            source,
        })?;
        self.store
            .put_raw(collection, key, doc, labels, expect)
            .await
    }

    /// Reads and parses a record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        Ok(self
            .get_versioned(collection, key)
            .await?
            .map(|versioned| versioned.value))
    }

    /// Reads and parses a record with its version.
    pub async fn get_versioned<T: DeserializeOwned>(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<Versioned<T>>, MetaError> {
        match self.store.get_raw(collection, key).await? {
            None => Ok(None),
            Some(raw) => parse(collection, raw).map(Some),
        }
    }

    /// Reads and parses every record of a collection, in key order.
    pub async fn list<T: DeserializeOwned>(
        &self,
        collection: Collection,
    ) -> Result<Vec<T>, MetaError> {
        let page = self.page(collection, &ListQuery::default()).await?;
        Ok(page.items.into_iter().map(|v| v.value).collect())
    }

    /// One page of the records a query selects. A page is full when it
    /// holds `limit` records; only then does it name a next page.
    pub async fn page<T: DeserializeOwned>(
        &self,
        collection: Collection,
        query: &ListQuery,
    ) -> Result<Page<T>, MetaError> {
        let raw = self.store.list_raw(collection, query).await?;
        let full = query.limit.is_some_and(|limit| raw.len() >= limit);
        let next = if full {
            raw.last().map(|doc| doc.key.clone())
        } else {
            None
        };
        let items = raw
            .into_iter()
            .map(|doc| parse(collection, doc))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    /// Claims one record a query selects, exactly once across every caller
    /// of every node: `update` turns the record into its claimed form (and
    /// gives its new labels), and the write succeeds only if nobody wrote the
    /// record since it was read. Records claimed by someone else meanwhile
    /// are skipped. Returns the claimed record, or none if nothing was left.
    pub async fn claim<T, F>(
        &self,
        collection: Collection,
        query: &ListQuery,
        mut update: F,
    ) -> Result<Option<Versioned<T>>, MetaError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&mut T) -> Labels + Send,
    {
        let mut raw_update = |key: &str, doc: &str| {
            let corrupt = |source| MetaError::Corrupt {
                collection: collection.name(),
                key: key.to_string(),
                source,
            };
            let mut value: T = serde_json::from_str(doc).map_err(corrupt)?;
            let labels = update(&mut value);
            Ok((serde_json::to_string(&value).map_err(corrupt)?, labels))
        };
        match self
            .store
            .claim_raw(collection, query, &mut raw_update)
            .await?
        {
            None => Ok(None),
            Some(raw) => parse(collection, raw).map(Some),
        }
    }

    /// Campaigns for this node to be the writer; see [`MetaStore::campaign`].
    pub fn campaign(&self, node: &str) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.store.campaign(node)
    }

    /// The Postgres pool of a shared store, if this is one.
    pub fn postgres(&self) -> Option<deadpool_postgres::Pool> {
        self.store.postgres()
    }

    /// Per-agent limits shared with the other nodes, if any.
    pub fn shared_limits(&self) -> Option<Arc<dyn SharedLimits>> {
        self.store.shared_limits()
    }

    /// This store, refusing writes once `term` is no longer the writer's.
    pub fn fenced(&self, term: u64) -> Meta {
        Meta::new(Arc::clone(&self.store).fenced(term))
    }

    /// Deletes a record, returning whether it existed.
    pub async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        self.store.delete(collection, key).await
    }

    /// Keeps `caches` in step with changes other nodes make, if the store
    /// is shared; returns the task doing it.
    pub fn follow(
        &self,
        caches: Vec<std::sync::Weak<dyn Cache>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let store = Arc::downgrade(&self.store);
        let current = move |started| {
            if let Some(store) = store.upgrade() {
                store.caches_current(started);
            }
        };
        self.store
            .subscribe()
            .map(|changes| follow(changes, caches, current))
    }

    /// See [`MetaStore::feed_lag`].
    pub fn feed_lag(&self) -> Option<std::time::Duration> {
        self.store.feed_lag()
    }
}

fn parse<T: DeserializeOwned>(
    collection: Collection,
    raw: RawDoc,
) -> Result<Versioned<T>, MetaError> {
    match serde_json::from_str(&raw.doc) {
        Ok(value) => Ok(Versioned {
            key: raw.key,
            version: raw.version,
            value,
        }),
        Err(source) => Err(MetaError::Corrupt {
            collection: collection.name(),
            key: raw.key,
            source,
        }),
    }
}

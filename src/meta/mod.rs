//! Durable metadata: tokens, table registrations, sync jobs and settings.
//!
//! The store is a small document store ([`MetaStore`]): each module owns
//! the shape of its records and keeps them as JSON documents in a named
//! [`Collection`]. That keeps this seam narrow, so that a shared store
//! (Postgres, say) can replace the local DuckDB file when airlock runs on
//! several nodes, without touching the modules that own the records.

mod duckdb_store;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use duckdb_store::DuckDbMetaStore;

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
    /// A blocking task was cancelled or panicked.
    #[error("metadata store task failed: {0}")]
    Task(String),
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
}

impl Collection {
    /// Stable name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Settings => "settings",
            Collection::Tokens => "tokens",
            Collection::Tables => "tables",
            Collection::Jobs => "jobs",
            Collection::Grants => "grants",
        }
    }
}

/// A durable key → JSON document store, one namespace per [`Collection`].
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces a document.
    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
    ) -> Result<(), MetaError>;
    /// Reads one document.
    async fn get_raw(&self, collection: Collection, key: &str)
    -> Result<Option<String>, MetaError>;
    /// Deletes a document, returning whether it existed.
    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError>;
    /// All documents of a collection as (key, document), in key order.
    async fn list_raw(&self, collection: Collection) -> Result<Vec<(String, String)>, MetaError>;
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

    /// Serializes and stores a record.
    pub async fn put<T: Serialize>(
        &self,
        collection: Collection,
        key: &str,
        record: &T,
    ) -> Result<(), MetaError> {
        let doc = serde_json::to_string(record).map_err(|source| MetaError::Corrupt {
            collection: collection.name(),
            key: key.to_string(),
            source,
        })?;
        self.store.put_raw(collection, key, doc).await
    }

    /// Reads and parses a record.
    pub async fn get<T: DeserializeOwned>(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        match self.store.get_raw(collection, key).await? {
            None => Ok(None),
            Some(doc) => parse(collection, key, &doc).map(Some),
        }
    }

    /// Reads and parses every record of a collection, in key order.
    pub async fn list<T: DeserializeOwned>(
        &self,
        collection: Collection,
    ) -> Result<Vec<T>, MetaError> {
        self.store
            .list_raw(collection)
            .await?
            .iter()
            .map(|(key, doc)| parse(collection, key, doc))
            .collect()
    }

    /// Deletes a record, returning whether it existed.
    pub async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        self.store.delete(collection, key).await
    }
}

fn parse<T: DeserializeOwned>(
    collection: Collection,
    key: &str,
    doc: &str,
) -> Result<T, MetaError> {
    serde_json::from_str(doc).map_err(|source| MetaError::Corrupt {
        collection: collection.name(),
        key: key.to_string(),
        source,
    })
}

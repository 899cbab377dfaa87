//! The local [`MetaStore`]: one table in a DuckDB file of its own
//! (`<data_dir>/meta.duckdb`), separate from the replica so that metadata
//! writes never contend with syncs and the replica can be rebuilt freely.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duckdb::{Connection, OptionalExt};

use super::{Collection, MetaError, MetaStore};
use crate::duckdb_setup::{Database, DuckDbResources, open_hardened};

/// Metadata kept in a hardened DuckDB file.
#[derive(Debug, Clone)]
pub struct DuckDbMetaStore {
    // One connection serialized by a mutex: metadata writes are small and
    // rare next to queries, and one writer keeps them trivially ordered.
    conn: Arc<Mutex<Connection>>,
    // Kept open for as long as the store lives (see `Database`).
    _database: Arc<Database>,
}

impl DuckDbMetaStore {
    /// Opens or creates `<dir>/meta.duckdb`.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        let temp_directory = dir.join("tmp").join("meta");
        let resources = DuckDbResources {
            threads: 1,
            memory_limit: bytesize::ByteSize::mib(256),
            temp_directory: temp_directory.clone(),
            max_temp_directory_size: bytesize::ByteSize::mib(256),
        };
        // No file reads happen here: allow only the spill directory.
        let database = open_hardened(&dir.join("meta.duckdb"), &temp_directory, &resources)?;
        let conn = database.connect()?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS docs (
                 collection VARCHAR NOT NULL,
                 key VARCHAR NOT NULL,
                 doc VARCHAR NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                 PRIMARY KEY (collection, key))",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            _database: Arc::new(database),
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, duckdb::Error> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means an earlier call panicked mid-statement;
            // DuckDB rolled that statement back, so the connection is usable.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard).map_err(MetaError::from)
        })
        .await
        .map_err(|e| MetaError::Task(e.to_string()))?
    }
}

#[async_trait]
impl MetaStore for DuckDbMetaStore {
    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
    ) -> Result<(), MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO docs (collection, key, doc, updated_at) VALUES (?, ?, ?, now())",
                [collection.name(), key.as_str(), doc.as_str()],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get_raw(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<String>, MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT doc FROM docs WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
                |row| row.get(0),
            )
            .optional()
        })
        .await
    }

    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM docs WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn list_raw(&self, collection: Collection) -> Result<Vec<(String, String)>, MetaError> {
        self.with_conn(move |conn| {
            let mut stmt =
                conn.prepare("SELECT key, doc FROM docs WHERE collection = ? ORDER BY key")?;
            let rows = stmt.query_map([collection.name()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        n: u32,
    }

    #[tokio::test]
    async fn documents_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
            meta.put(Collection::Jobs, "b", &Rec { n: 2 })
                .await
                .unwrap();
            meta.put(Collection::Jobs, "a", &Rec { n: 1 })
                .await
                .unwrap();
            meta.put(Collection::Jobs, "a", &Rec { n: 3 })
                .await
                .unwrap();
            meta.put(Collection::Tables, "a", &Rec { n: 9 })
                .await
                .unwrap();
        }
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        let jobs: Vec<Rec> = meta.list(Collection::Jobs).await.unwrap();
        assert_eq!(jobs, vec![Rec { n: 3 }, Rec { n: 2 }]);
        assert_eq!(
            meta.get::<Rec>(Collection::Tables, "a").await.unwrap(),
            Some(Rec { n: 9 })
        );
        assert!(meta.delete(Collection::Tables, "a").await.unwrap());
        assert!(!meta.delete(Collection::Tables, "a").await.unwrap());
        assert_eq!(
            meta.get::<Rec>(Collection::Tables, "a").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn corrupt_documents_are_reported_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = DuckDbMetaStore::open(dir.path()).unwrap();
        store
            .put_raw(Collection::Tokens, "t1", "{not json".into())
            .await
            .unwrap();
        let meta = Meta::new(Arc::new(store));
        let err = meta.get::<Rec>(Collection::Tokens, "t1").await.unwrap_err();
        assert!(err.to_string().contains("tokens/t1"), "{err}");
    }
}

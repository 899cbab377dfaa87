//! The local [`MetaStore`]: one table in a DuckDB file of its own
//! (`<data_dir>/meta.duckdb`), separate from the replica so that metadata
//! writes never contend with syncs and the replica can be rebuilt freely.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duckdb::types::Value;
use duckdb::{Connection, OptionalExt, params, params_from_iter};

use super::{Collection, Expect, Labels, ListQuery, MetaError, MetaStore, RawDoc};
use crate::duckdb_setup::{Database, DuckDbResources, open_hardened};

/// Documents with their versions, and their labels (no key constraint on
/// labels: DuckDB checks keys eagerly, so deleting and re-inserting a
/// document's labels in one transaction would trip a primary key).
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS documents (
        collection VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        doc VARCHAR NOT NULL,
        version UBIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (collection, key));
    CREATE TABLE IF NOT EXISTS doc_labels (
        collection VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        value VARCHAR NOT NULL);";

/// Data directories from before versioned documents kept them in `docs`:
/// move them over once, at version 1.
fn migrate_unversioned(conn: &Connection) -> Result<(), duckdb::Error> {
    let old: i64 = conn.query_row(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'docs'",
        [],
        |row| row.get(0),
    )?;
    if old > 0 {
        conn.execute_batch(
            "BEGIN;
             INSERT OR IGNORE INTO documents (collection, key, doc, version, updated_at)
                 SELECT collection, key, doc, 1, updated_at FROM docs;
             DROP TABLE docs;
             COMMIT;",
        )?;
    }
    Ok(())
}

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
        conn.execute_batch(SCHEMA)?;
        migrate_unversioned(&conn)?;
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
    // One process writes this file: there is no other writer to fence.
    fn fenced(self: Arc<Self>, _term: u64) -> Arc<dyn MetaStore> {
        self
    }

    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
        labels: Labels,
        expect: Expect,
    ) -> Result<u64, MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            // The store's one connection is held under its mutex from the
            // version check to the commit, so no other write interleaves.
            let current: Option<u64> = conn
                .query_row(
                    "SELECT version FROM documents WHERE collection = ? AND key = ?",
                    [collection.name(), key.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::Version(v) => current == Some(v),
            };
            if !holds {
                return Ok(Err(MetaError::Conflict {
                    collection: collection.name(),
                    key,
                    expected: match expect {
                        Expect::Version(v) => format!("version {v}"),
                        _ => "no document".to_string(),
                    },
                }));
            }
            let version = current.unwrap_or(0) + 1;
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO documents (collection, key, doc, version, updated_at)
                 VALUES (?, ?, ?, ?, now())",
                params![collection.name(), key, doc, version],
            )?;
            tx.execute(
                "DELETE FROM doc_labels WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
            )?;
            for (name, value) in &labels {
                tx.execute(
                    "INSERT INTO doc_labels VALUES (?, ?, ?, ?)",
                    [collection.name(), key.as_str(), name, value.as_str()],
                )?;
            }
            tx.commit()?;
            Ok(Ok(version))
        })
        .await?
    }

    async fn get_raw(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<RawDoc>, MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT key, doc, version FROM documents WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
                raw_doc,
            )
            .optional()
        })
        .await
    }

    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        let key = key.to_string();
        self.with_conn(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let deleted = tx.execute(
                "DELETE FROM documents WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
            )?;
            tx.execute(
                "DELETE FROM doc_labels WHERE collection = ? AND key = ?",
                [collection.name(), key.as_str()],
            )?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn list_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
    ) -> Result<Vec<RawDoc>, MetaError> {
        let mut sql =
            String::from("SELECT key, doc, version FROM documents d WHERE collection = ?");
        let mut values: Vec<Value> = vec![Value::Text(collection.name().to_string())];
        if let Some(prefix) = &query.prefix {
            sql.push_str(" AND starts_with(key, ?)");
            values.push(Value::Text(prefix.clone()));
        }
        if let Some(after) = &query.after {
            sql.push_str(if query.descending {
                " AND key < ?"
            } else {
                " AND key > ?"
            });
            values.push(Value::Text(after.clone()));
        }
        for (name, value) in &query.labels {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM doc_labels l WHERE l.collection = d.collection \
                 AND l.key = d.key AND l.name = ? AND l.value = ?)",
            );
            values.push(Value::Text((*name).to_string()));
            values.push(Value::Text(value.clone()));
        }
        sql.push_str(if query.descending {
            " ORDER BY key DESC"
        } else {
            " ORDER BY key"
        });
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            values.push(Value::BigInt(i64::try_from(limit).unwrap_or(i64::MAX)));
        }
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), raw_doc)?;
            rows.collect()
        })
        .await
    }
}

fn raw_doc(row: &duckdb::Row<'_>) -> Result<RawDoc, duckdb::Error> {
    Ok(RawDoc {
        key: row.get(0)?,
        doc: row.get(1)?,
        version: row.get(2)?,
    })
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
            .put_raw(
                Collection::Tokens,
                "t1",
                "{not json".into(),
                Labels::new(),
                Expect::Any,
            )
            .await
            .unwrap();
        let meta = Meta::new(Arc::new(store));
        let err = meta.get::<Rec>(Collection::Tokens, "t1").await.unwrap_err();
        assert!(err.to_string().contains("tokens/t1"), "{err}");
    }

    #[tokio::test]
    async fn conditional_writes_detect_concurrent_changes() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        crate::meta::contract::conditional_writes_detect_concurrent_changes(meta).await;
    }

    #[tokio::test]
    async fn listings_page_and_filter_by_label_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        crate::meta::contract::listings_page_and_filter_by_label_and_prefix(meta).await;
    }

    #[tokio::test]
    async fn each_queued_record_is_claimed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        crate::meta::contract::each_queued_record_is_claimed_exactly_once(meta).await;
    }

    #[tokio::test]
    async fn unversioned_documents_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let temp = dir.path().join("tmp");
            let resources = DuckDbResources {
                threads: 1,
                memory_limit: bytesize::ByteSize::mib(64),
                temp_directory: temp.clone(),
                max_temp_directory_size: bytesize::ByteSize::mib(64),
            };
            let db = open_hardened(&dir.path().join("meta.duckdb"), &temp, &resources).unwrap();
            let conn = db.connect().unwrap();
            conn.execute_batch(
                "CREATE TABLE docs (collection VARCHAR NOT NULL, key VARCHAR NOT NULL,
                     doc VARCHAR NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                     PRIMARY KEY (collection, key));
                 INSERT INTO docs (collection, key, doc) VALUES ('grants', 'g', '{\"n\": 7}');",
            )
            .unwrap();
        }
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        let read = meta
            .get_versioned::<Rec>(Collection::Grants, "g")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read.version, read.value), (1, Rec { n: 7 }));
    }
}

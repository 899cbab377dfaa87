//! The shared [`MetaStore`] of a cluster: documents in Postgres
//! (`--meta-url postgres://…`), so every node reads and writes the same
//! tokens, grants, registrations and jobs. Versions make writes
//! compare-and-swap across nodes; a trigger announces every change of a
//! cached collection on the `airlock_meta` channel.
//!
//! Keys are `COLLATE "C"` so they sort bytewise, as in the local store, and
//! page cursors mean the same on both. Documents are `text`, not `jsonb`:
//! they come back exactly as written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use tokio::sync::broadcast;
use tokio_util::task::AbortOnDropHandle;

use super::postgres_feed;
use super::{Change, Collection, Expect, Labels, ListQuery, MetaError, MetaStore, RawDoc};

/// The schema, created by the first node to start (under an advisory
/// lock, so nodes starting together do not race).
const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS airlock;
CREATE TABLE IF NOT EXISTS airlock.documents (
    collection text NOT NULL,
    key text COLLATE "C" NOT NULL,
    doc text NOT NULL,
    version bigint NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, key));
CREATE TABLE IF NOT EXISTS airlock.doc_labels (
    collection text NOT NULL,
    key text COLLATE "C" NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (collection, key, name),
    FOREIGN KEY (collection, key) REFERENCES airlock.documents ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS doc_labels_by_value ON airlock.doc_labels (collection, name, value, key);
CREATE OR REPLACE FUNCTION airlock.notify_document_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    -- A payload must stay under 8000 bytes: a longer key is announced as
    -- null (listeners reload the collection).
    PERFORM pg_notify('airlock_meta', json_build_object('c', r.collection,
                      'k', CASE WHEN octet_length(r.key) <= 1000 THEN r.key END,
                      'op', lower(TG_OP))::text);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER documents_notify AFTER INSERT OR UPDATE OR DELETE ON airlock.documents
    FOR EACH ROW EXECUTE FUNCTION airlock.notify_document_change();
"#;

/// The advisory lock the schema is created under.
const MIGRATION_LOCK: i64 = 0x6169_726c_6f63_6b01;

/// Connections per node.
const POOL_SIZE: usize = 16;

/// Changes a node may fall behind by before it reloads everything.
const FEED_CAPACITY: usize = 4096;

/// Documents in Postgres.
#[derive(Clone)]
pub struct PgMetaStore {
    pool: Pool,
    /// Where dedicated sessions (the feed, the writer's lock) connect.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    changes: broadcast::Sender<Change>,
    /// Listens for changes while any clone of the store lives.
    _listener: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for PgMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMetaStore").finish_non_exhaustive()
    }
}

fn pg(error: impl std::fmt::Display) -> MetaError {
    MetaError::Postgres(error.to_string())
}

/// A `postgres://` URL as a connection config, and the CA file its
/// `sslrootcert` names (tokio-postgres refuses options it does not know,
/// so that one is taken out). TLS is required unless the URL says
/// `sslmode=disable`: `prefer` would fall back to plaintext silently.
pub fn parse_url(text: &str) -> Result<(tokio_postgres::Config, Option<PathBuf>), String> {
    let mut url =
        url::Url::parse(text).map_err(|e| format!("the metadata URL is not a URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the metadata URL must start with postgres:// (not {}://)",
            url.scheme()
        ));
    }
    let mut ca_file = None;
    let mut mode = None;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match k.as_ref() {
            "sslrootcert" => {
                ca_file = Some(PathBuf::from(v.as_ref()));
                None
            }
            "sslmode" => {
                mode = Some(v.to_string());
                Some((k.to_string(), v.to_string()))
            }
            _ => Some((k.to_string(), v.to_string())),
        })
        .collect();
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in &kept {
            query.append_pair(k, v);
        }
        if mode.is_none() {
            query.append_pair("sslmode", "require");
        }
    }
    let text = url.as_str().trim_end_matches('?');
    let config = text
        .parse::<tokio_postgres::Config>()
        .map_err(|e| format!("the metadata URL is not one Postgres accepts: {e}"))?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer {
        return Err(
            "sslmode=prefer could fall back to plaintext: use require (the default) or disable"
                .into(),
        );
    }
    Ok((config, ca_file))
}

/// TLS for Postgres connections: the CA file's certificates, or the
/// system's roots.
fn tls(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("reading {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgMetaStore {
    /// Connects to `url` and creates the schema if it is missing.
    pub async fn open(url: &str) -> Result<Self, MetaError> {
        let (config, ca_file) = parse_url(url).map_err(MetaError::Postgres)?;
        let tls = tls(ca_file.as_deref()).map_err(MetaError::Postgres)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(pg)?;
        let (changes, _) = broadcast::channel(FEED_CAPACITY);
        let listener = tokio::spawn(postgres_feed::listen(
            config.clone(),
            tls.clone(),
            changes.clone(),
        ));
        let store = Self {
            pool,
            config,
            tls,
            changes,
            _listener: Arc::new(AbortOnDropHandle::new(listener)),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        self.pool.get().await.map_err(pg)
    }

    async fn migrate(&self) -> Result<(), MetaError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Transaction-scoped: released at commit, even if this node dies.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(SCHEMA).await.map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}

fn version_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn put_raw(
        &self,
        collection: Collection,
        key: &str,
        doc: String,
        labels: Labels,
        expect: Expect,
    ) -> Result<u64, MetaError> {
        let name = collection.name();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let written = match expect {
            Expect::Any => {
                tx.query_opt(
                    "INSERT INTO airlock.documents AS d (collection, key, doc, version) \
                     VALUES ($1, $2, $3, 1) ON CONFLICT (collection, key) DO UPDATE \
                     SET doc = EXCLUDED.doc, version = d.version + 1, updated_at = now() \
                     RETURNING version",
                    &[&name, &key, &doc],
                )
                .await
            }
            Expect::Absent => {
                tx.query_opt(
                    "INSERT INTO airlock.documents (collection, key, doc, version) \
                     VALUES ($1, $2, $3, 1) ON CONFLICT (collection, key) DO NOTHING \
                     RETURNING version",
                    &[&name, &key, &doc],
                )
                .await
            }
            Expect::Version(version) => {
                let version = i64::try_from(version).unwrap_or(i64::MAX);
                // Under READ COMMITTED a concurrent committed write makes
                // the re-checked WHERE fail: the swap is exact.
                tx.query_opt(
                    "UPDATE airlock.documents SET doc = $3, version = version + 1, \
                     updated_at = now() WHERE collection = $1 AND key = $2 AND version = $4 \
                     RETURNING version",
                    &[&name, &key, &doc, &version],
                )
                .await
            }
        }
        .map_err(pg)?;
        let Some(row) = written else {
            return Err(MetaError::Conflict {
                collection: name,
                key: key.to_string(),
                expected: match expect {
                    Expect::Version(version) => format!("version {version}"),
                    Expect::Absent => "no document".into(),
                    Expect::Any => "any version".into(),
                },
            });
        };
        let version: i64 = row.get(0);
        tx.execute(
            "DELETE FROM airlock.doc_labels WHERE collection = $1 AND key = $2",
            &[&name, &key],
        )
        .await
        .map_err(pg)?;
        if !labels.is_empty() {
            let names: Vec<&str> = labels.keys().copied().collect();
            let values: Vec<&str> = labels.values().map(String::as_str).collect();
            tx.execute(
                "INSERT INTO airlock.doc_labels (collection, key, name, value) \
                 SELECT $1, $2, n, v FROM unnest($3::text[], $4::text[]) AS t(n, v)",
                &[&name, &key, &names, &values],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(version_of(version))
    }

    async fn get_raw(
        &self,
        collection: Collection,
        key: &str,
    ) -> Result<Option<RawDoc>, MetaError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT key, doc, version FROM airlock.documents WHERE collection = $1 AND key = $2",
                &[&collection.name(), &key],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|row| RawDoc {
            key: row.get(0),
            doc: row.get(1),
            version: version_of(row.get(2)),
        }))
    }

    async fn delete(&self, collection: Collection, key: &str) -> Result<bool, MetaError> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM airlock.documents WHERE collection = $1 AND key = $2",
                &[&collection.name(), &key],
            )
            .await
            .map_err(pg)?;
        Ok(deleted > 0)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    async fn list_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
    ) -> Result<Vec<RawDoc>, MetaError> {
        let name = collection.name();
        let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&name];
        let mut sql = String::from(
            "SELECT d.key, d.doc, d.version FROM airlock.documents d WHERE d.collection = $1",
        );
        if let Some(prefix) = &query.prefix {
            params.push(prefix);
            sql.push_str(&format!(" AND starts_with(d.key, ${})", params.len()));
        }
        if let Some(after) = &query.after {
            params.push(after);
            let op = if query.descending { '<' } else { '>' };
            sql.push_str(&format!(" AND d.key {op} ${}", params.len()));
        }
        for (label, value) in &query.labels {
            params.push(label);
            params.push(value);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM airlock.doc_labels l WHERE l.collection = d.collection \
                 AND l.key = d.key AND l.name = ${} AND l.value = ${})",
                params.len() - 1,
                params.len()
            ));
        }
        sql.push_str(if query.descending {
            " ORDER BY d.key DESC"
        } else {
            " ORDER BY d.key"
        });
        if let Some(limit) = &limit {
            params.push(limit);
            sql.push_str(&format!(" LIMIT ${}", params.len()));
        }
        let client = self.client().await?;
        let rows = client.query(&sql, &params).await.map_err(pg)?;
        Ok(rows
            .iter()
            .map(|row| RawDoc {
                key: row.get(0),
                doc: row.get(1),
                version: version_of(row.get(2)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::test_postgres::TestPostgres;
    use crate::meta::{Meta, contract};

    async fn meta(postgres: &TestPostgres) -> Meta {
        Meta::new(Arc::new(PgMetaStore::open(&postgres.url()).await.unwrap()))
    }

    #[tokio::test]
    async fn postgres_keeps_the_store_contract() {
        let postgres = TestPostgres::start();
        // Each contract on a fresh database, over a pool of its own, as
        // another node would connect.
        contract::conditional_writes_detect_concurrent_changes(meta(&postgres).await).await;
        let (admin, _) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| (client, tokio::spawn(connection)))
            .unwrap();
        admin
            .batch_execute("TRUNCATE airlock.documents CASCADE")
            .await
            .unwrap();
        contract::listings_page_and_filter_by_label_and_prefix(meta(&postgres).await).await;
        admin
            .batch_execute("TRUNCATE airlock.documents CASCADE")
            .await
            .unwrap();
        contract::each_queued_record_is_claimed_exactly_once(meta(&postgres).await).await;
    }

    #[tokio::test]
    async fn two_nodes_share_documents_and_every_change_is_announced() {
        let postgres = TestPostgres::start();
        let (one, two) = (meta(&postgres).await, meta(&postgres).await);
        let (listener, mut connection) =
            tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let (sender, mut notes) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
                if let tokio_postgres::AsyncMessage::Notification(note) = message {
                    let _ = sender.send(note.payload().to_string());
                }
            }
        });
        listener.batch_execute("LISTEN airlock_meta").await.unwrap();
        one.put(Collection::Grants, "emea", &serde_json::json!({"n": 1}))
            .await
            .unwrap();
        let read: Option<serde_json::Value> = two.get(Collection::Grants, "emea").await.unwrap();
        assert_eq!(read, Some(serde_json::json!({"n": 1})));
        assert!(two.delete(Collection::Grants, "emea").await.unwrap());
        let mut seen = Vec::new();
        for _ in 0..2 {
            let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(serde_json::from_str::<serde_json::Value>(&note).unwrap());
        }
        assert_eq!(
            seen,
            vec![
                serde_json::json!({"c": "grants", "k": "emea", "op": "insert"}),
                serde_json::json!({"c": "grants", "k": "emea", "op": "delete"}),
            ]
        );
        // Nodes starting together create the schema once, without racing.
        let url = postgres.url();
        let again = futures::future::join_all((0..3).map(|_| PgMetaStore::open(&url))).await;
        assert!(again.iter().all(Result::is_ok));
    }

    /// The next change naming `key`, skipping others.
    async fn next_change_of(changes: &mut broadcast::Receiver<Change>, key: &str) -> Change {
        loop {
            let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .expect("no change announced within 10 s")
                .unwrap();
            match &change {
                Change::Document { key: Some(k), .. } if k == key => return change,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn the_feed_announces_other_nodes_changes_and_its_own_reconnection() {
        let postgres = TestPostgres::start();
        let store = PgMetaStore::open(&postgres.url()).await.unwrap();
        let mut changes = store.subscribe().unwrap();
        let other = meta(&postgres).await;
        other
            .put(Collection::Grants, "emea", &serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(
            next_change_of(&mut changes, "emea").await,
            Change::Document {
                collection: Collection::Grants,
                key: Some("emea".into())
            }
        );
        // Keys too long to announce name their whole collection.
        let long = "k".repeat(1001);
        other
            .put(Collection::Tokens, &long, &serde_json::json!({}))
            .await
            .unwrap();
        loop {
            let change = changes.recv().await.unwrap();
            if let Change::Document {
                collection: Collection::Tokens,
                key,
            } = change
            {
                assert_eq!(key, None);
                break;
            }
        }
        // Postgres drops the feed's session: the node reconnects and, as
        // announcements were lost meanwhile, tells its caches to reload.
        let (admin, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&postgres_feed::FEED_NAME],
            )
            .await
            .unwrap();
        // Both stores' feeds (each node has one).
        assert_eq!(killed.len(), 2);
        let reloaded = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if changes.recv().await.unwrap() == Change::Everything {
                    return;
                }
            }
        })
        .await;
        assert!(reloaded.is_ok(), "no reload after the feed was cut");
        other
            .put(Collection::Grants, "apac", &serde_json::json!({}))
            .await
            .unwrap();
        next_change_of(&mut changes, "apac").await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
        let error = PgMetaStore::open(&url).await.unwrap_err();
        assert!(matches!(error, MetaError::Postgres(_)), "{error}");
        assert!(error.to_string().contains("Postgres"), "{error}");
    }

    #[test]
    fn urls_require_tls_unless_they_turn_it_off() {
        let (config, ca) = parse_url("postgres://airlock@db.example:5432/meta").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(ca, None);
        let (config, ca) =
            parse_url("postgresql://db.example/meta?sslrootcert=/etc/ca.pem&application_name=a")
                .unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_application_name(), Some("a"));
        assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
        let (config, _) = parse_url("postgres://127.0.0.1:5544/meta?sslmode=disable").unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert!(
            parse_url("postgres://h/m?sslmode=prefer")
                .unwrap_err()
                .contains("plaintext")
        );
        assert!(
            parse_url("mysql://h/m")
                .unwrap_err()
                .contains("postgres://")
        );
        assert!(
            parse_url("postgres://h/m?bogus=1")
                .unwrap_err()
                .contains("Postgres accepts")
        );
    }
}

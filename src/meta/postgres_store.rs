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

use tokio::sync::{broadcast, watch};
use tokio_util::task::AbortOnDropHandle;

use super::{
    Change, ClaimUpdate, Collection, Expect, Labels, ListQuery, MetaError, MetaStore, RawDoc,
    SharedLimits,
};
use super::{postgres_limits, postgres_sessions};

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
CREATE TABLE IF NOT EXISTS airlock.writer (
    id int PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL,
    node text NOT NULL,
    since timestamptz NOT NULL);
INSERT INTO airlock.writer VALUES (1, 0, '', now()) ON CONFLICT DO NOTHING;
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
    /// The writer's term every write of this handle must still hold.
    fence: Option<u64>,
    /// Whether this node's caches may be missing changes.
    feed: Arc<postgres_sessions::FeedHealth>,
    /// Listens for changes while any clone of the store lives.
    _listener: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for PgMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMetaStore").finish_non_exhaustive()
    }
}

/// A Postgres failure with its causes ("db error" alone says nothing).
pub(super) fn pg(error: impl std::error::Error) -> MetaError {
    MetaError::Postgres(with_causes(&error))
}

/// An error's message followed by its causes' (tokio-postgres and
/// deadpool put what went wrong in the causes).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
        let feed = Arc::new(postgres_sessions::FeedHealth::default());
        let listener = tokio::spawn(postgres_sessions::listen(
            config.clone(),
            tls.clone(),
            changes.clone(),
            Arc::clone(&feed),
        ));
        let store = Self {
            pool,
            config,
            tls,
            changes,
            fence: None,
            feed,
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
        // "already exists, skipping" notices on every start are noise.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(pg)?;
        tx.batch_execute(SCHEMA).await.map_err(pg)?;
        tx.batch_execute(postgres_limits::SCHEMA)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }
}

/// Fails a fenced transaction unless its term is still the writer's. The
/// row stays locked FOR SHARE until the commit, so a new writer's term
/// cannot begin in between.
async fn check_fence(
    tx: &deadpool_postgres::Transaction<'_>,
    fence: Option<u64>,
) -> Result<(), MetaError> {
    let Some(term) = fence else {
        return Ok(());
    };
    let current: i64 = tx
        .query_one(
            "SELECT term FROM airlock.writer WHERE id = 1 FOR SHARE",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if version_of(current) == term {
        Ok(())
    } else {
        Err(MetaError::Fenced { term })
    }
}

/// Replaces a document's labels (inside its writing transaction).
async fn write_labels(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    key: &str,
    labels: &Labels,
) -> Result<(), MetaError> {
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
    Ok(())
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
        check_fence(&tx, self.fence).await?;
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
        write_labels(&tx, name, key, &labels).await?;
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        check_fence(&tx, self.fence).await?;
        let deleted = tx
            .execute(
                "DELETE FROM airlock.documents WHERE collection = $1 AND key = $2",
                &[&collection.name(), &key],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted > 0)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }

    fn campaign(&self, node: &str) -> watch::Receiver<Option<u64>> {
        let (role, receiver) = watch::channel(None);
        tokio::spawn(postgres_sessions::campaign(
            self.config.clone(),
            self.tls.clone(),
            node.to_string(),
            role,
        ));
        receiver
    }

    fn postgres(&self) -> Option<deadpool_postgres::Pool> {
        Some(self.pool.clone())
    }

    fn feed_lag(&self) -> Option<Duration> {
        self.feed.lag()
    }

    fn caches_current(&self, started: std::time::Instant) {
        self.feed.current(started);
    }

    fn shared_limits(&self) -> Option<Arc<dyn SharedLimits>> {
        Some(Arc::new(postgres_limits::PgLimits {
            pool: self.pool.clone(),
        }))
    }

    fn fenced(self: Arc<Self>, term: u64) -> Arc<dyn MetaStore> {
        Arc::new(Self {
            fence: Some(term),
            ..Self::clone(&self)
        })
    }

    async fn claim_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
        update: &mut ClaimUpdate<'_>,
    ) -> Result<Option<RawDoc>, MetaError> {
        let name = collection.name();
        let (sql, params) = select_sql(name, query, true);
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        check_fence(&tx, self.fence).await?;
        // Rows another claimer holds are skipped, not waited for.
        let Some(row) = tx.query_opt(&sql, &params).await.map_err(pg)? else {
            return Ok(None);
        };
        let key: String = row.get(0);
        let (doc, labels) = update(&key, row.get(1))?;
        let version: i64 = tx
            .query_one(
                "UPDATE airlock.documents SET doc = $3, version = version + 1, updated_at = now() \
                 WHERE collection = $1 AND key = $2 RETURNING version",
                &[&name, &key, &doc],
            )
            .await
            .map_err(pg)?
            .get(0);
        write_labels(&tx, name, &key, &labels).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(RawDoc {
            key,
            doc,
            version: version_of(version),
        }))
    }

    async fn list_raw(
        &self,
        collection: Collection,
        query: &ListQuery,
    ) -> Result<Vec<RawDoc>, MetaError> {
        let (sql, params) = select_sql(collection.name(), query, false);
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
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

/// The SELECT of a listing, and its parameters. A claim takes the first
/// row only, and locks it and its label rows, skipping rows another
/// claimer holds. Labels are joined, not tested with EXISTS: a claim must
/// lock the label rows it matched, or it can pick a row whose labels were
/// changed by a claim that committed meanwhile.
fn select_sql(
    collection: &'static str,
    query: &ListQuery,
    claim: bool,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(collection)];
    let mut joins = String::new();
    let mut filters = String::new();
    if let Some(prefix) = &query.prefix {
        params.push(Box::new(prefix.clone()));
        filters.push_str(&format!(" AND starts_with(d.key, ${})", params.len()));
    }
    if let Some(after) = &query.after {
        params.push(Box::new(after.clone()));
        let op = if query.descending { '<' } else { '>' };
        filters.push_str(&format!(" AND d.key {op} ${}", params.len()));
    }
    let mut locked = vec!["d".to_string()];
    for (n, (label, value)) in query.labels.iter().enumerate() {
        params.push(Box::new(*label));
        params.push(Box::new(value.clone()));
        joins.push_str(&format!(
            " JOIN airlock.doc_labels l{n} ON l{n}.collection = d.collection AND l{n}.key = d.key \
             AND l{n}.name = ${} AND l{n}.value = ${}",
            params.len() - 1,
            params.len()
        ));
        locked.push(format!("l{n}"));
    }
    let order = if query.descending { "DESC" } else { "ASC" };
    let mut sql = format!(
        "SELECT d.key, d.doc, d.version FROM airlock.documents d{joins} \
         WHERE d.collection = $1{filters} ORDER BY d.key {order}"
    );
    let limit = if claim {
        Some(1)
    } else {
        query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
    };
    if let Some(limit) = limit {
        params.push(Box::new(limit));
        sql.push_str(&format!(" LIMIT ${}", params.len()));
    }
    if claim {
        sql.push_str(&format!(" FOR UPDATE OF {} SKIP LOCKED", locked.join(", ")));
    }
    (sql, params)
}

#[cfg(test)]
mod tests;

//! What a node opens outside its replica: the secrets it is given through
//! the environment, and the metadata store (the local file, or Postgres
//! shared by the nodes of a cluster).

use std::path::Path;
use std::sync::Arc;

use super::{ServerError, Settings};
use crate::meta::{DuckDbMetaStore, Meta, MetaStore, PgMetaStore};

/// Secrets given through the environment, never through config files.
#[derive(Default, Clone)]
pub struct Secrets {
    /// `AIRLOCK_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
    /// `AIRLOCK_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// `AIRLOCK_SECRETS_KEY`: seals connection secrets in the metadata
    /// (default: `<data_dir>/secrets/connections.key`).
    pub secrets_key: Option<String>,
    /// `AIRLOCK_METRICS_TOKEN`: a bearer token that may read `/metrics`
    /// (for Prometheus; admins' tokens may too).
    pub metrics_token: Option<String>,
    /// `--meta-url` / `AIRLOCK_META_URL`: metadata in Postgres (it may
    /// carry a password, so it is kept with the secrets).
    pub meta_url: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// Reads `AIRLOCK_ADMIN_PASSWORD`, `AIRLOCK_JWT_SECRET`,
    /// `AIRLOCK_SECRETS_KEY`, `AIRLOCK_METRICS_TOKEN` and `AIRLOCK_META_URL`.
    pub fn from_env() -> Self {
        Self {
            admin_password: std::env::var("AIRLOCK_ADMIN_PASSWORD").ok(),
            jwt_secret: std::env::var("AIRLOCK_JWT_SECRET").ok(),
            secrets_key: std::env::var("AIRLOCK_SECRETS_KEY").ok(),
            metrics_token: std::env::var("AIRLOCK_METRICS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            meta_url: std::env::var("AIRLOCK_META_URL")
                .ok()
                .filter(|u| !u.is_empty()),
        }
    }
}

/// The metadata store: the local DuckDB file, or Postgres shared by the
/// nodes of a cluster. A cluster node needs what every node must agree on
/// from outside its data directory: the token-signing secret, the key that
/// seals connection secrets, and an artifact store all nodes reach.
pub(super) async fn open_meta(
    config: &Settings,
    secrets: &Secrets,
    data_dir: &Path,
) -> Result<Meta, ServerError> {
    let Some(url) = &secrets.meta_url else {
        return Ok(Meta::new(Arc::new(DuckDbMetaStore::open(data_dir)?)));
    };
    let mut missing = Vec::new();
    if secrets.jwt_secret.is_none() {
        missing.push("AIRLOCK_JWT_SECRET");
    }
    if secrets.secrets_key.is_none() {
        missing.push("AIRLOCK_SECRETS_KEY");
    }
    if !missing.is_empty() {
        return Err(ServerError::Config(format!(
            "with --meta-url every node must share {}: set the same value on each node",
            missing.join(" and ")
        )));
    }
    if config.artifacts.store.is_empty() || config.artifacts.store.starts_with("file:") {
        return Err(ServerError::Config(
            "with --meta-url artifacts must live in a store every node reaches: set [artifacts] store = \"s3://bucket/prefix\" (or gs://, az://)".into(),
        ));
    }
    if config.sync.snapshot_store.is_empty() {
        return Err(ServerError::Config(
            "with --meta-url the writer publishes synced tables for the other nodes: set --snapshot-store (AIRLOCK_SNAPSHOT_STORE) to s3://bucket/prefix or a directory every node reaches".into(),
        ));
    }
    let store: Arc<dyn MetaStore> = Arc::new(PgMetaStore::open(url).await?);
    tracing::info!(meta = %crate::redact::url(url), "metadata in Postgres");
    Ok(Meta::new(store))
}

/// Where the writer publishes synced tables: only for a node on shared
/// metadata (a single node has no one to publish to).
pub(super) fn open_snapshots(
    config: &Settings,
    secrets: &Secrets,
) -> Result<Option<crate::sync::SnapshotStore>, ServerError> {
    if secrets.meta_url.is_none() || config.sync.snapshot_store.is_empty() {
        return Ok(None);
    }
    crate::sync::SnapshotStore::open(&config.sync.snapshot_store, &config.object_store)
        .map(Some)
        .map_err(|e| ServerError::Config(e.to_string()))
}

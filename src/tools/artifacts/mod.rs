//! Artifacts: named blobs and tables that agents keep and hand to each
//! other, in an object store (a directory under the data directory by
//! default; S3, GCS or Azure by URL), with their records in `meta`.
//!
//! ```text
//!  upload (DoPut, ADBC ingest) ──► LimitedWriter ──► object <scope>/<name>/<uuid>.<ext>
//!        bytes counted and hashed as written; over a limit → abort, nothing kept
//!  complete ──► commit: quota and name checked under one lock, record written last
//!  read (DoGet, artifacts.<name> in SQL, artifact.* actions) ──► visible_to(principal)?
//! ```
//!
//! An artifact is readable by its owner, by admins, and — when shared — by
//! its swarm. To everyone else it does not exist: every refusal is the same
//! NOT_FOUND as for an id that never existed. An object becomes visible
//! only when its record names it, so readers see a whole version or none.

mod housekeeping;
mod index;
mod parquet;
mod read;
mod record;
mod upload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

pub use read::{ArtifactTables, Download, chunk_schema};
pub use record::{
    Artifact, ArtifactKind, ArtifactTicket, ArtifactVersion, ColumnInfo, Owner, Visibility,
};
pub use upload::{CHUNK_COLUMN, UploadMode, UploadOptions, Uploaded};

use crate::meta::{Collection, Expect, Meta, MetaError};
use crate::principal::Principal;
use index::{Indexed, load_index};
use record::Scope;

/// The schema tabular artifacts are queried under.
pub const ARTIFACT_SCHEMA: &str = "artifacts";

/// The URL the query engine reads artifact objects through.
pub const STORE_URL: &str = "airlock-artifacts://store/";

/// Artifact settings, read from `[artifacts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactSettings {
    /// Where artifacts are stored: an object store URL (`s3://bucket/prefix`,
    /// `gs://…`, `az://…`, `file:///dir`); empty means
    /// `<data_dir>/artifacts`. Store options come from `[object_store]`.
    pub store: String,
    /// Largest stored object of one artifact version, in bytes.
    pub max_bytes: u64,
    /// Bytes all artifacts of one swarm may hold (every version counts).
    pub swarm_quota: ByteSize,
    /// Lifetime of an artifact whose upload gives no `ttl_seconds`.
    #[serde(with = "crate::duration_text")]
    pub default_ttl: Duration,
    /// Longest lifetime an upload or `artifact.extend` may ask for.
    #[serde(with = "crate::duration_text")]
    pub max_ttl: Duration,
}

impl Default for ArtifactSettings {
    fn default() -> Self {
        Self {
            store: String::new(),
            max_bytes: 50_000_000,
            swarm_quota: ByteSize::gib(1),
            default_ttl: Duration::from_secs(7 * 86_400),
            max_ttl: Duration::from_secs(365 * 86_400),
        }
    }
}

/// Artifact failures.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The name is not an SQL identifier.
    #[error(
        "invalid artifact name '{0}': use letters, digits and '_', starting with a letter \
         or '_', at most 63 characters"
    )]
    BadName(String),
    /// Upload options or an action body are wrong.
    #[error("invalid artifact request: {0}")]
    BadRequest(String),
    /// No such artifact, or not one the caller may see.
    #[error("no artifact '{0}' (it does not exist, expired, or is not visible to you)")]
    NotFound(String),
    /// The name belongs to another principal of the swarm.
    #[error("artifact name '{0}' is taken by another principal of your swarm; choose another name")]
    NameTaken(String),
    /// The caller already has an artifact of this name (an upload that
    /// must create one).
    #[error("artifact '{0}' already exists; upload a new version instead (ADBC: mode='replace')")]
    Exists(String),
    /// Over the per-artifact size limit.
    #[error(
        "artifact '{name}' is larger than artifacts.max_bytes ({limit} bytes); nothing was \
         kept — split it or filter it"
    )]
    TooLarge {
        /// The artifact's name.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// Over the swarm's quota.
    #[error(
        "swarm '{scope}' would exceed its artifact quota (artifacts.swarm_quota, {quota} bytes; \
         {used} in use); nothing was kept — delete old artifacts or versions first"
    )]
    QuotaExceeded {
        /// The swarm (or `admins`).
        scope: String,
        /// The quota.
        quota: u64,
        /// Bytes in use before this upload.
        used: u64,
    },
    /// The caller may see the artifact but not change it.
    #[error("only the owner of artifact '{0}' or an admin may change it")]
    NotOwner(String),
    /// The uploaded stream is malformed.
    #[error("invalid upload: {0}")]
    Input(String),
    /// The object store failed.
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
    /// Writing or reading Parquet failed.
    #[error("artifact Parquet data: {0}")]
    Parquet(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The artifact store, its records, and the rules of who sees what.
#[derive(Debug)]
pub struct ArtifactService {
    store: Arc<dyn ObjectStore>,
    meta: Meta,
    settings: ArtifactSettings,
    /// Every artifact by id, mirrored from `meta` (written through).
    index: RwLock<BTreeMap<String, Indexed>>,
    /// Grows on every change, so query sessions see new artifacts.
    changes: AtomicU64,
    /// Commits take turns: quota and name checks hold until the record is
    /// written.
    commit: tokio::sync::Mutex<()>,
    /// The local directory of a local store, for cleaning staging files.
    local_root: Option<PathBuf>,
}

/// Filters of `artifact.list`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    /// Artifacts carrying this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Artifacts of this owner name.
    #[serde(default)]
    pub owner: Option<String>,
    /// `private` or `swarm`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Names starting with this.
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Created at or after.
    #[serde(default)]
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    #[serde(default)]
    pub created_before: Option<DateTime<Utc>>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_page_token` of the previous page.
    #[serde(default)]
    pub page_token: Option<String>,
}

/// One page of `artifact.list`.
#[derive(Debug, Clone)]
pub struct ArtifactPage {
    /// Artifacts, by name then id.
    pub artifacts: Vec<Artifact>,
    /// Pass back for the next page; none on the last.
    pub next_page_token: Option<String>,
}

impl ArtifactService {
    /// Opens the store named by `settings.store` (or `<data_dir>/artifacts`),
    /// loads the records, and removes objects no record names (uploads cut
    /// off by a crash).
    pub async fn open(
        meta: Meta,
        data_dir: &std::path::Path,
        settings: ArtifactSettings,
        options: &BTreeMap<String, String>,
    ) -> Result<Arc<Self>, ArtifactError> {
        let (store, local_root): (Arc<dyn ObjectStore>, Option<PathBuf>) =
            if settings.store.is_empty() {
                let root = data_dir.join("artifacts");
                std::fs::create_dir_all(&root).map_err(|e| {
                    ArtifactError::BadRequest(format!("cannot create {}: {e}", root.display()))
                })?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                (Arc::new(local), Some(root))
            } else {
                let url = url::Url::parse(&settings.store).map_err(|e| {
                    ArtifactError::BadRequest(format!(
                        "artifacts.store '{}': {e}",
                        crate::redact::url(&settings.store)
                    ))
                })?;
                let (store, prefix) = crate::object_stores::open(&url, options).map_err(|e| {
                    ArtifactError::BadRequest(format!(
                        "artifacts.store '{}': {e}",
                        crate::redact::url(&settings.store)
                    ))
                })?;
                let local_root = (url.scheme() == "file").then(|| PathBuf::from(url.path()));
                let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                    store
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
                };
                (store, local_root)
            };
        let index = load_index(&meta).await?;
        let service = Arc::new(Self {
            store,
            meta,
            settings,
            index: RwLock::new(index),
            changes: AtomicU64::new(0),
            commit: tokio::sync::Mutex::new(()),
            local_root,
        });
        service.remove_orphans().await?;
        Ok(service)
    }

    /// The object store artifacts live in (the query engine reads tabular
    /// ones through it at [`STORE_URL`]).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The settings in force.
    pub fn settings(&self) -> &ArtifactSettings {
        &self.settings
    }

    /// Artifacts `principal` may read now, unexpired.
    fn visible(&self, principal: &Principal) -> Vec<Artifact> {
        let now = Utc::now();
        self.read_index()
            .values()
            .map(|i| &i.artifact)
            .filter(|a| !a.expired(now) && visible_to(principal, a))
            .cloned()
            .collect()
    }

    /// `artifact.get`: an artifact by id, or by name in the caller's scope.
    pub fn get(&self, principal: &Principal, id_or_name: &str) -> Result<Artifact, ArtifactError> {
        let now = Utc::now();
        let index = self.read_index();
        let by_id = index.get(id_or_name).map(|i| &i.artifact);
        let scope = Scope::of(principal);
        let found = by_id.or_else(|| {
            index
                .values()
                .map(|i| &i.artifact)
                .find(|a| a.name == id_or_name && a.scope() == scope)
        });
        found
            .filter(|a| !a.expired(now) && visible_to(principal, a))
            .cloned()
            .ok_or_else(|| ArtifactError::NotFound(id_or_name.to_string()))
    }

    /// `artifact.list`: what the caller may read, filtered, in pages.
    pub fn list(
        &self,
        principal: &Principal,
        filter: &ListFilter,
    ) -> Result<ArtifactPage, ArtifactError> {
        let limit = filter.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(ArtifactError::BadRequest(
                "limit must be between 1 and 1000".into(),
            ));
        }
        let after = filter
            .page_token
            .as_deref()
            .map(|token| {
                token
                    .split_once('/')
                    .map(|(name, id)| (name.to_string(), id.to_string()))
                    .ok_or_else(|| ArtifactError::BadRequest("malformed page_token".into()))
            })
            .transpose()?;
        let mut matching: Vec<Artifact> = self
            .visible(principal)
            .into_iter()
            .filter(|a| {
                filter.tag.as_ref().is_none_or(|t| a.tags.contains(t))
                    && filter.owner.as_ref().is_none_or(|o| &a.owner.name == o)
                    && filter.visibility.is_none_or(|v| a.visibility == v)
                    && filter
                        .name_prefix
                        .as_ref()
                        .is_none_or(|p| a.name.starts_with(p.as_str()))
                    && filter.created_after.is_none_or(|t| a.created_at >= t)
                    && filter.created_before.is_none_or(|t| a.created_at < t)
            })
            .filter(|a| {
                after
                    .as_ref()
                    .is_none_or(|(name, id)| (&a.name, &a.id) > (name, id))
            })
            .collect();
        matching.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next_page_token = more
            .then(|| matching.last().map(|a| format!("{}/{}", a.name, a.id)))
            .flatten();
        Ok(ArtifactPage {
            artifacts: matching,
            next_page_token,
        })
    }

    /// `artifact.share`: sets who besides the owner may read it.
    pub async fn share(
        &self,
        principal: &Principal,
        id: &str,
        visibility: Visibility,
    ) -> Result<Artifact, ArtifactError> {
        self.change(principal, id, |a| {
            a.visibility = visibility;
            Ok(())
        })
        .await
    }

    /// `artifact.extend`: a new expiry, `ttl_seconds` from now.
    pub async fn extend(
        &self,
        principal: &Principal,
        id: &str,
        ttl_seconds: u64,
    ) -> Result<Artifact, ArtifactError> {
        let expires_at = self.expiry(Some(ttl_seconds))?;
        self.change(principal, id, |a| {
            a.expires_at = expires_at;
            Ok(())
        })
        .await
    }

    /// `artifact.delete`: the record first (readers stop seeing it at once),
    /// then every version's object.
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<Artifact, ArtifactError> {
        let _turn = self.commit.lock().await;
        let artifact = self.get(principal, id)?;
        require_owner(principal, &artifact)?;
        self.remove(&artifact).await?;
        Ok(artifact)
    }

    /// Applies `update` to an artifact the caller owns and stores it.
    async fn change(
        &self,
        principal: &Principal,
        id: &str,
        update: impl FnOnce(&mut Artifact) -> Result<(), ArtifactError>,
    ) -> Result<Artifact, ArtifactError> {
        let _turn = self.commit.lock().await;
        let mut artifact = self.get(principal, id)?;
        require_owner(principal, &artifact)?;
        update(&mut artifact)?;
        self.store_record(artifact).await
    }

    /// Writes a record (compare-and-swap against what the index read) and
    /// mirrors it. Call with the commit lock held.
    async fn store_record(&self, artifact: Artifact) -> Result<Artifact, ArtifactError> {
        let expect = match self.read_index().get(&artifact.id) {
            Some(indexed) => Expect::Version(indexed.stored_version),
            None => Expect::Absent,
        };
        let stored_version = self
            .meta
            .put_if(
                Collection::Artifacts,
                &artifact.id,
                &artifact,
                artifact.labels(),
                expect,
            )
            .await?;
        self.write_index().insert(
            artifact.id.clone(),
            Indexed {
                artifact: artifact.clone(),
                stored_version,
            },
        );
        self.changes.fetch_add(1, Ordering::AcqRel);
        Ok(artifact)
    }

    /// Deletes a record, then its objects. Call with the commit lock held.
    async fn remove(&self, artifact: &Artifact) -> Result<(), ArtifactError> {
        self.meta
            .delete(Collection::Artifacts, &artifact.id)
            .await?;
        self.write_index().remove(&artifact.id);
        self.changes.fetch_add(1, Ordering::AcqRel);
        for version in &artifact.versions {
            self.delete_object(&Path::from(version.object.as_str()))
                .await;
        }
        Ok(())
    }

    /// Deletes an object; a failure leaves an orphan that the next start
    /// removes, so it is logged, not returned.
    async fn delete_object(&self, path: &Path) {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(object = %path, error = %e, "could not delete an artifact object")
            }
        }
    }

    /// Bytes stored (all versions) per owning swarm; admins' artifacts
    /// under `None`.
    pub fn bytes_by_swarm(&self) -> BTreeMap<Option<String>, u64> {
        let mut bytes = BTreeMap::new();
        for indexed in self.read_index().values() {
            *bytes
                .entry(indexed.artifact.owner.swarm.clone())
                .or_insert(0) += indexed.artifact.stored_bytes();
        }
        bytes
    }

    /// Bytes stored by a scope's artifacts (all versions).
    fn used_bytes(&self, scope: &Scope) -> u64 {
        self.read_index()
            .values()
            .filter(|i| &i.artifact.scope() == scope)
            .map(|i| i.artifact.stored_bytes())
            .sum()
    }

    /// The expiry for a requested lifetime, or the default.
    fn expiry(&self, ttl_seconds: Option<u64>) -> Result<DateTime<Utc>, ArtifactError> {
        let ttl = ttl_seconds.map_or(self.settings.default_ttl, Duration::from_secs);
        if ttl.is_zero() || ttl > self.settings.max_ttl {
            return Err(ArtifactError::BadRequest(format!(
                "ttl_seconds must be between 1 and {} (artifacts.max_ttl)",
                self.settings.max_ttl.as_secs()
            )));
        }
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|e| ArtifactError::BadRequest(format!("ttl_seconds: {e}")))?;
        Ok(Utc::now() + ttl)
    }
}

/// Whether `principal` may read `artifact`: admins always; otherwise its
/// owner, or its swarm when shared with the swarm.
pub fn visible_to(principal: &Principal, artifact: &Artifact) -> bool {
    principal.is_admin()
        || artifact.owner.is(principal)
        || (artifact.visibility == Visibility::Swarm
            && principal.swarm.is_some()
            && artifact.owner.swarm == principal.swarm)
}

fn require_owner(principal: &Principal, artifact: &Artifact) -> Result<(), ArtifactError> {
    if principal.is_admin() || artifact.owner.is(principal) {
        Ok(())
    } else {
        Err(ArtifactError::NotOwner(artifact.name.clone()))
    }
}

/// Checks an artifact name before any work is done for it.
pub fn check_artifact_name(name: &str) -> Result<(), ArtifactError> {
    check_name(name).map(|_| ())
}

/// Checks an artifact name: an SQL identifier, lower case.
fn check_name(name: &str) -> Result<String, ArtifactError> {
    let lower = name.to_ascii_lowercase();
    let mut chars = lower.chars();
    let ok = lower.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !lower.starts_with(crate::table_name::RESERVED_PREFIX);
    if ok {
        Ok(lower)
    } else {
        Err(ArtifactError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests;

//! Grants kept durably (metadata collection `grants`) and in memory.
//!
//! Changes take effect on the next query: every change bumps a version that
//! the query engine's session cache is keyed by. In a cluster, changes made
//! on other nodes arrive through the store's feed ([`Cache`]). Grants from the config file
//! seed the store: each is stored at start unless a grant with its key
//! already exists, so changes made through actions survive restarts.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{Grant, PolicyError};
use crate::meta::{Cache, Collection, Meta, MetaError};

/// All grants as of one version.
#[derive(Debug, Clone)]
pub struct GrantSnapshot {
    /// Increases with every change.
    pub version: u64,
    /// Grants by key (`swarm` or `swarm/agent`).
    pub grants: Arc<BTreeMap<String, Grant>>,
}

/// The grant store.
#[derive(Debug)]
pub struct GrantStore {
    meta: Meta,
    current: RwLock<GrantSnapshot>,
    version: AtomicU64,
}

impl GrantStore {
    /// Loads stored grants and stores any seed whose key is new.
    pub async fn open(meta: Meta, seeds: Vec<Grant>) -> Result<Self, PolicyError> {
        let mut grants: BTreeMap<String, Grant> = meta
            .list::<Grant>(Collection::Grants)
            .await?
            .into_iter()
            .map(|g| (g.key(), g))
            .collect();
        for seed in seeds {
            let seed = seed.validate()?;
            let key = seed.key();
            if let Entry::Vacant(slot) = grants.entry(key.clone()) {
                meta.put(Collection::Grants, &key, &seed).await?;
                slot.insert(seed);
            }
        }
        Ok(Self {
            meta,
            current: RwLock::new(GrantSnapshot {
                version: 1,
                grants: Arc::new(grants),
            }),
            version: AtomicU64::new(1),
        })
    }

    /// The current grants.
    pub fn snapshot(&self) -> GrantSnapshot {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Validates and stores a grant, replacing the one with its key.
    pub async fn set(&self, grant: Grant) -> Result<Grant, PolicyError> {
        let grant = grant.validate()?;
        let key = grant.key();
        // Durable first, then visible.
        self.meta.put(Collection::Grants, &key, &grant).await?;
        self.update(|grants| {
            grants.insert(key, grant.clone());
        });
        Ok(grant)
    }

    /// One grant.
    pub fn get(&self, key: &str) -> Result<Grant, PolicyError> {
        self.snapshot()
            .grants
            .get(key)
            .cloned()
            .ok_or_else(|| PolicyError::NotFound(key.to_string()))
    }

    /// Deletes a grant.
    pub async fn delete(&self, key: &str) -> Result<(), PolicyError> {
        if !self.meta.delete(Collection::Grants, key).await? {
            return Err(PolicyError::NotFound(key.to_string()));
        }
        self.update(|grants| {
            grants.remove(key);
        });
        Ok(())
    }

    /// Replaces every grant with what the store holds now.
    async fn reload(&self) -> Result<(), MetaError> {
        let stored: Vec<Grant> = self.meta.list(Collection::Grants).await?;
        self.update(|grants| *grants = stored.into_iter().map(|g| (g.key(), g)).collect());
        Ok(())
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Grant>)) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut grants = BTreeMap::clone(&current.grants);
        change(&mut grants);
        *current = GrantSnapshot {
            version: self.version.fetch_add(1, Ordering::SeqCst) + 1,
            grants: Arc::new(grants),
        };
    }
}

// Other nodes change grants: any announced change reloads them all (there
// are few, and a grant's key is not always its document's whole story).
#[async_trait::async_trait]
impl Cache for GrantStore {
    fn name(&self) -> &'static str {
        "grants"
    }

    fn collections(&self) -> &'static [Collection] {
        &[Collection::Grants]
    }

    async fn refresh(&self, _: Collection, _: Option<&str>) -> Result<(), MetaError> {
        self.reload().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DuckDbMetaStore;

    fn grant(json: &str) -> Grant {
        serde_json::from_str(json).unwrap()
    }

    #[tokio::test]
    async fn changes_survive_restart_and_seeds_do_not_overwrite_them() {
        let dir = tempfile::tempdir().unwrap();
        let seed = grant(r#"{"swarm": "emea", "tables": {"sales.*": {}}}"#);
        {
            let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
            let store = GrantStore::open(meta, vec![seed.clone()]).await.unwrap();
            let before = store.snapshot().version;
            store
                .set(grant(r#"{"swarm": "emea", "tables": {"hr.*": {}}}"#))
                .await
                .unwrap();
            assert!(store.snapshot().version > before);
            store.set(grant(r#"{"swarm": "apac"}"#)).await.unwrap();
            store.delete("apac").await.unwrap();
            assert!(matches!(
                store.delete("apac").await,
                Err(PolicyError::NotFound(_))
            ));
        }
        let meta = Meta::new(Arc::new(DuckDbMetaStore::open(dir.path()).unwrap()));
        let store = GrantStore::open(meta, vec![seed]).await.unwrap();
        let emea = store.get("emea").unwrap();
        assert!(
            emea.tables.contains_key("hr.*"),
            "the seed overwrote a change"
        );
        assert!(store.get("apac").is_err());
    }
}

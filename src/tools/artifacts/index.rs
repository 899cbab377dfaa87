//! The index of artifact records every node keeps in memory, mirrored from
//! the metadata store and refreshed when another node announces a change.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{Artifact, ArtifactService};
use crate::meta::{Cache, Collection, Meta, MetaError};

/// An artifact with the metadata-store version it was read at.
#[derive(Debug, Clone)]
pub(super) struct Indexed {
    pub(super) artifact: Artifact,
    pub(super) stored_version: u64,
}

impl ArtifactService {
    /// Reads one record from the store into the index (or drops it).
    pub(super) async fn refresh_record(&self, id: &str) -> Result<(), MetaError> {
        let stored = self
            .meta
            .get_versioned::<Artifact>(Collection::Artifacts, id)
            .await?;
        match stored {
            Some(item) => self.write_index().insert(
                item.key,
                Indexed {
                    artifact: item.value,
                    stored_version: item.version,
                },
            ),
            None => self.write_index().remove(id),
        };
        self.changes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    pub(super) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Indexed>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Indexed>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every artifact record, with the version it was read at.
pub(super) async fn load_index(meta: &Meta) -> Result<BTreeMap<String, Indexed>, MetaError> {
    let page = meta
        .page::<Artifact>(Collection::Artifacts, &Default::default())
        .await?;
    Ok(page
        .items
        .into_iter()
        .map(|item| {
            let indexed = Indexed {
                artifact: item.value,
                stored_version: item.version,
            };
            (item.key, indexed)
        })
        .collect())
}

// Artifacts written on other nodes are announced; any node serves them
// from the shared object store.
#[async_trait::async_trait]
impl Cache for ArtifactService {
    fn name(&self) -> &'static str {
        "artifacts"
    }

    fn collections(&self) -> &'static [Collection] {
        &[Collection::Artifacts]
    }

    async fn refresh(&self, _: Collection, key: Option<&str>) -> Result<(), MetaError> {
        match key {
            Some(id) => self.refresh_record(id).await,
            None => {
                let index = load_index(&self.meta).await?;
                *self.write_index() = index;
                self.changes.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
        }
    }
}

//! Housekeeping of the artifact store: expired artifacts go (records, then
//! objects), and at start objects no record names — uploads a crash cut
//! off, whole or as a local store's `<object>#<n>` staging files — are
//! removed.

use std::collections::BTreeSet;

use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;

use super::record::Artifact;
use super::{ArtifactError, ArtifactService};

impl ArtifactService {
    /// Removes artifacts past their expiry; returns how many.
    pub async fn remove_expired(&self) -> Result<usize, ArtifactError> {
        let _turn = self.commit.lock().await;
        let now = Utc::now();
        let expired: Vec<Artifact> = self
            .read_index()
            .values()
            .filter(|i| i.artifact.expired(now))
            .map(|i| i.artifact.clone())
            .collect();
        for artifact in &expired {
            self.remove(artifact).await?;
        }
        Ok(expired.len())
    }

    /// Deletes objects no record names, and a local store's staging files
    /// (`<object>#<n>`, which object_store never lists).
    pub(super) async fn remove_orphans(&self) -> Result<(), ArtifactError> {
        let named: BTreeSet<String> = self
            .read_index()
            .values()
            .flat_map(|i| i.artifact.versions.iter().map(|v| v.object.clone()))
            .collect();
        let objects: Vec<Path> = self
            .store
            .list(None)
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for object in objects {
            if !named.contains(object.as_ref()) {
                tracing::info!(object = %object, "removing an artifact object no record names");
                self.delete_object(&object).await;
            }
        }
        if let Some(root) = &self.local_root {
            remove_staging_files(root);
        }
        Ok(())
    }
}

/// Removes `…#<digits>` files under a local store's root: multipart uploads
/// a crash cut off.
fn remove_staging_files(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_staging_files(&path);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(file = %path.display(), error = %e, "could not remove a staging file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_files_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("swarm/emea");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("x.parquet#3"), b"partial").unwrap();
        std::fs::write(sub.join("x.parquet"), b"whole").unwrap();
        std::fs::write(sub.join("y#z"), b"kept").unwrap();
        remove_staging_files(dir.path());
        assert!(!sub.join("x.parquet#3").exists());
        assert!(sub.join("x.parquet").exists() && sub.join("y#z").exists());
    }
}

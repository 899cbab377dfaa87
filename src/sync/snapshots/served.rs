//! Which epoch of each table this node's replica serves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::table_name::TableName;

/// The epochs this node's replica holds, by table, kept in a small file.
#[derive(Debug)]
pub(in crate::sync) struct Served {
    path: PathBuf,
    epochs: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Set once every table was restored at start.
    pub(super) restored: AtomicBool,
    /// Told each time an epoch is served (for waiters).
    pub(super) changed: tokio::sync::watch::Sender<()>,
    /// The replica version holding each served epoch, for those this
    /// process loaded or published (a delta may follow only that version).
    versions: std::sync::Mutex<BTreeMap<String, ReplicaVersion>>,
}

/// A version of a table in this node's replica: its DuckDB table and last
/// in-place merge.
pub(in crate::sync) type ReplicaVersion = (String, u64);

impl Served {
    pub(in crate::sync) fn open(data_dir: &std::path::Path) -> Self {
        let path = data_dir.join("snapshots.json");
        // Unreadable or missing: nothing is known to be served, and every
        // table is loaded again (correct, only slower).
        let epochs = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            path,
            epochs: std::sync::Mutex::new(epochs),
            restored: AtomicBool::new(false),
            changed: tokio::sync::watch::channel(()).0,
            versions: std::sync::Mutex::default(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::sync) fn epoch(&self, table: &TableName) -> Option<u64> {
        self.lock().get(&table.to_string()).copied()
    }

    /// The replica version holding the served epoch, if this process
    /// loaded or published it.
    pub(super) fn version(&self, table: &TableName) -> Option<ReplicaVersion> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.get(&table.to_string()).cloned()
    }

    /// Records that `epoch` (none: nothing) of `table` is served, by the
    /// replica's `version` of it.
    pub(super) fn serve(
        &self,
        table: &TableName,
        epoch: Option<u64>,
        version: Option<ReplicaVersion>,
    ) {
        {
            let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
            match version {
                Some(version) => versions.insert(table.to_string(), version),
                None => versions.remove(&table.to_string()),
            };
        }
        self.set(table, epoch);
    }

    fn set(&self, table: &TableName, epoch: Option<u64>) {
        let text = {
            let mut epochs = self.lock();
            match epoch {
                Some(epoch) => epochs.insert(table.to_string(), epoch),
                None => epochs.remove(&table.to_string()),
            };
            serde_json::to_vec(&*epochs).unwrap_or_default()
        };
        // Written whole, then renamed: never half a file.
        let temporary = self.path.with_extension("json.tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not record the epochs served");
        }
        self.changed.send_replace(());
    }

    /// The table is gone from this node's replica.
    pub(in crate::sync) fn forget(&self, table: &TableName) {
        if self.epoch(table).is_some() {
            self.serve(table, None, None);
        }
    }

    pub(in crate::sync) fn restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }
}

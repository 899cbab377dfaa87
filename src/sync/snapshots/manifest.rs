//! What a published table version is: a [`Manifest`] of base files and
//! the [`Delta`]s chained after them, stored as a document of the
//! `snapshots` collection (its version is the epoch).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::replica::Merge;
use crate::table_name::TableName;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Its path in the snapshot store.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

/// How a delta's rows combine with the version before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DeltaOp {
    /// Added to the rows before.
    Append,
    /// Replace the rows with the same key; among the delta's rows with one
    /// key, the one with the largest cursor wins.
    Upsert {
        /// Primary key columns.
        key: Vec<String>,
        /// Cursor column.
        cursor: String,
    },
}

impl DeltaOp {
    /// The op of a sync's merge; none for a replacement.
    pub(super) fn of(merge: &Merge) -> Option<Self> {
        match merge {
            Merge::Replace => None,
            Merge::Append => Some(Self::Append),
            Merge::Upsert { key, cursor } => Some(Self::Upsert {
                key: key.clone(),
                cursor: cursor.clone(),
            }),
        }
    }

    pub(super) fn merge(&self) -> Merge {
        match self {
            Self::Append => Merge::Append,
            Self::Upsert { key, cursor } => Merge::Upsert {
                key: key.clone(),
                cursor: cursor.clone(),
            },
        }
    }
}

/// The rows one append or incremental sync loaded, on the chain after a
/// manifest's base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The epoch it applies to: a node serving it applies this delta and
    /// those after.
    pub after: u64,
    /// How its rows combine with that version.
    #[serde(flatten)]
    pub op: DeltaOp,
    /// Its files.
    pub files: Vec<SnapshotFile>,
    /// The sync state (watermark) committed with it.
    pub state: Option<String>,
    /// The job that committed it.
    pub job_id: String,
}

/// A published table version: a base and the deltas after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The table.
    pub table: TableName,
    /// The base's files, in order.
    pub files: Vec<SnapshotFile>,
    /// Rows of the table at this epoch.
    pub rows: u64,
    /// The sync state (watermark) at this epoch.
    pub state: Option<String>,
    /// The sync state committed with the base (with no deltas: `state`).
    #[serde(default)]
    pub base_state: Option<String>,
    /// The deltas after the base, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
    /// The job that committed it.
    pub job_id: String,
    /// When it was published.
    pub published_at: DateTime<Utc>,
}

impl Manifest {
    /// A manifest of a base alone.
    pub(super) fn base(
        table: &TableName,
        files: Vec<SnapshotFile>,
        state: Option<String>,
        job_id: &str,
    ) -> Self {
        Self {
            table: table.clone(),
            rows: files.iter().map(|f| f.rows).sum(),
            files,
            base_state: state.clone(),
            state,
            deltas: Vec::new(),
            job_id: job_id.to_string(),
            published_at: Utc::now(),
        }
    }

    pub(super) fn base_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    pub(super) fn delta_rows(&self) -> u64 {
        self.deltas
            .iter()
            .flat_map(|d| &d.files)
            .map(|f| f.rows)
            .sum()
    }

    /// The epoch each step of the chain leaves a node at: the base's, then
    /// each delta's, the last being `epoch` (the manifest's own).
    pub(super) fn epoch_after(&self, step: usize, epoch: u64) -> u64 {
        self.deltas.get(step).map_or(epoch, |d| d.after)
    }

    /// The directories its files are in.
    pub(super) fn dirs(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .chain(self.deltas.iter().flat_map(|d| &d.files))
            .filter_map(|f| f.path.rsplit_once('/').map(|(dir, _)| dir.to_string()))
            .collect()
    }
}

/// What a sync that committed wrote for its snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// A new base or a delta.
    pub kind: PublishedKind,
    /// Rows written to the snapshot store.
    pub rows: u64,
    /// Bytes written to the snapshot store.
    pub bytes: u64,
}

/// What a sync published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishedKind {
    /// The whole table: a new base.
    Full,
    /// The rows the sync loaded, chained after the base.
    Delta,
}

impl Published {
    pub(super) fn of(kind: PublishedKind, files: &[SnapshotFile]) -> Self {
        Self {
            kind,
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
        }
    }
}

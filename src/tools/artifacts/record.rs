//! What the metadata store keeps of an artifact: one document per artifact
//! (a name within a swarm), holding its versions, who owns it and who may
//! read it. Objects in the store are immutable; a document names them only
//! once they are complete, which is what makes uploads atomic.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::meta::Labels;
use crate::principal::Principal;

/// Who may read an artifact besides its owner and admins.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Its owner only (default: nothing is shared unless asked).
    #[default]
    Private,
    /// Every principal of its swarm.
    Swarm,
}

impl Visibility {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Swarm => "swarm",
        }
    }
}

/// How an artifact's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// Arrow batches stored as Parquet; queryable as `artifacts.<name>`.
    Tabular,
    /// Any other file, stored as its bytes; travels as batches of one
    /// binary column `chunk`.
    Bytes,
}

pub use crate::principal::Owner;

/// One column of a tabular artifact, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Arrow type, as DataFusion prints it.
    pub data_type: String,
}

/// One complete upload of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactVersion {
    /// 1 for the first upload, then one more per upload.
    pub version: u32,
    /// Where the bytes are, relative to the artifact store's root.
    pub object: String,
    /// Tabular or bytes.
    pub kind: ArtifactKind,
    /// MIME type.
    pub content_type: String,
    /// Bytes of the stored object.
    pub size: u64,
    /// SHA-256 of the stored object, hex.
    pub sha256: String,
    /// Rows, for tabular artifacts.
    pub rows: Option<u64>,
    /// The Arrow schema as IPC bytes, base64, for tabular artifacts.
    pub schema_ipc: Option<String>,
    /// Columns, for tabular artifacts.
    pub columns: Vec<ColumnInfo>,
    /// When this version was completed.
    pub created_at: DateTime<Utc>,
}

/// An artifact: a name owned by a principal, with its versions (newest last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Stable id (the same for every version).
    pub id: String,
    /// SQL identifier, unique within the owner's swarm (or among admins).
    pub name: String,
    /// Who uploaded it.
    pub owner: Owner,
    /// Private or shared with the swarm.
    pub visibility: Visibility,
    /// Free-form labels to find it by.
    pub tags: Vec<String>,
    /// When the first version was uploaded.
    pub created_at: DateTime<Utc>,
    /// After this instant it cannot be read, and housekeeping removes it.
    pub expires_at: DateTime<Utc>,
    /// Every version, oldest first; never empty.
    pub versions: Vec<ArtifactVersion>,
}

impl Artifact {
    /// The namespace a name is unique in: the owner's swarm, or admins'.
    pub(super) fn scope(&self) -> Scope {
        Scope::of_owner(&self.owner)
    }

    /// The newest version.
    pub fn latest(&self) -> Option<&ArtifactVersion> {
        self.versions.last()
    }

    /// A version by number.
    pub fn version(&self, version: u32) -> Option<&ArtifactVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// Bytes stored for all versions (what counts against a quota).
    pub fn stored_bytes(&self) -> u64 {
        self.versions.iter().map(|v| v.size).sum()
    }

    /// Whether it is past its expiry at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    /// Labels the metadata store filters listings by.
    pub(super) fn labels(&self) -> Labels {
        Labels::from([
            ("scope", self.scope().0),
            ("name", self.name.clone()),
            ("visibility", self.visibility.as_str().to_string()),
        ])
    }
}

/// Where names are unique: `swarm:<name>` or `admins`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Scope(pub(super) String);

impl Scope {
    pub(super) fn of_owner(owner: &Owner) -> Self {
        match &owner.swarm {
            Some(swarm) => Scope(format!("swarm:{swarm}")),
            None => Scope("admins".to_string()),
        }
    }

    pub(super) fn of(principal: &Principal) -> Self {
        Self::of_owner(&Owner::of(principal))
    }

    /// The directory of the scope's objects in the store.
    pub(super) fn directory(&self) -> String {
        self.0.replace(':', "/")
    }
}

/// A download ticket: which artifact version to stream. Self-contained, so
/// any node can serve it, and checked against the caller again when it is
/// redeemed. On the wire it is a protobuf `Any` whose type names it, the
/// form Flight SQL servers route to their fallback handlers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactTicket {
    /// Format version of the ticket.
    pub v: u32,
    /// Artifact id.
    pub id: String,
    /// Version number.
    pub version: u32,
}

impl ArtifactTicket {
    /// The `Any` type URL of artifact tickets.
    pub const TYPE_URL: &'static str = "type.googleapis.com/airlock.ArtifactTicket";
    const FORMAT: u32 = 1;

    /// A ticket for a version.
    pub fn new(id: &str, version: u32) -> Self {
        Self {
            v: Self::FORMAT,
            id: id.to_string(),
            version,
        }
    }

    /// The ticket's bytes.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message;
        arrow_flight::sql::Any {
            type_url: Self::TYPE_URL.to_string(),
            value: serde_json::to_vec(self).unwrap_or_default().into(),
        }
        .encode_to_vec()
    }

    /// Reads a ticket from the value of its `Any`.
    pub fn decode(value: &[u8]) -> Result<Self, String> {
        let ticket: Self =
            serde_json::from_slice(value).map_err(|e| format!("malformed artifact ticket: {e}"))?;
        if ticket.v != Self::FORMAT {
            return Err(format!(
                "artifact ticket format {} is not {}: ask artifact.get for a new ticket",
                ticket.v,
                Self::FORMAT
            ));
        }
        Ok(ticket)
    }
}

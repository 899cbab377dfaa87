//! Artifact actions: `artifact.list`, `artifact.get`, `artifact.share`,
//! `artifact.delete` and `artifact.extend`.
//!
//! Who sees and changes which artifact is decided by `tools::artifacts`;
//! this file parses the bodies and shapes the answers. [`ArtifactView`] is
//! the one shape of an artifact on the wire.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Action, ActionError, Actions, parse};
use crate::principal::Principal;
use crate::tools::artifacts::{
    Artifact, ArtifactError, ArtifactKind, ArtifactTicket, ArtifactVersion, ColumnInfo, ListFilter,
    Visibility,
};

/// The body of `artifact.get`: an id (or a name in the caller's swarm),
/// and optionally an older version.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GetRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<u32>,
}

/// The body of `artifact.delete`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IdRequest {
    id: String,
}

/// The body of `artifact.share`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ShareRequest {
    id: String,
    visibility: Visibility,
}

/// The body of `artifact.extend`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtendRequest {
    id: String,
    ttl_seconds: u64,
}

/// One version of an artifact.
#[derive(Debug, Serialize)]
pub(super) struct VersionView {
    version: u32,
    kind: ArtifactKind,
    content_type: String,
    size: u64,
    sha256: String,
    rows: Option<u64>,
    columns: Vec<ColumnInfo>,
    created_at: DateTime<Utc>,
}

impl From<&ArtifactVersion> for VersionView {
    fn from(v: &ArtifactVersion) -> Self {
        Self {
            version: v.version,
            kind: v.kind,
            content_type: v.content_type.clone(),
            size: v.size,
            sha256: v.sha256.clone(),
            rows: v.rows,
            columns: v.columns.clone(),
            created_at: v.created_at,
        }
    }
}

/// An artifact as every action shows it: its newest (or chosen) version
/// flattened in, older versions listed.
#[derive(Debug, Serialize)]
pub(super) struct ArtifactView {
    id: String,
    name: String,
    owner: String,
    swarm: Option<String>,
    visibility: Visibility,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// Queryable as this table, for tabular artifacts.
    table: Option<String>,
    #[serde(flatten)]
    version: Option<VersionView>,
    versions: Vec<u32>,
    /// For `artifact.get`: base64 of the Flight ticket that downloads this
    /// version with DoGet.
    ticket: Option<String>,
}

impl ArtifactView {
    fn new(artifact: &Artifact, version: Option<&ArtifactVersion>, ticket: bool) -> Self {
        let version = version.or_else(|| artifact.latest());
        Self {
            id: artifact.id.clone(),
            name: artifact.name.clone(),
            owner: artifact.owner.label(),
            swarm: artifact.owner.swarm.clone(),
            visibility: artifact.visibility,
            tags: artifact.tags.clone(),
            created_at: artifact.created_at,
            expires_at: artifact.expires_at,
            table: version
                .filter(|v| v.kind == ArtifactKind::Tabular)
                .map(|_| format!("artifacts.{}", artifact.name)),
            version: version.map(VersionView::from),
            versions: artifact.versions.iter().map(|v| v.version).collect(),
            ticket: version.filter(|_| ticket).map(|v| {
                base64::engine::general_purpose::STANDARD
                    .encode(ArtifactTicket::new(&artifact.id, v.version).encode())
            }),
        }
    }
}

/// `artifact.list`: a page of artifacts.
#[derive(Debug, Serialize)]
pub(super) struct ArtifactListView {
    artifacts: Vec<ArtifactView>,
    next_page_token: Option<String>,
}

/// `artifact.delete`.
#[derive(Debug, Serialize)]
pub(super) struct DeletedView {
    id: String,
    name: String,
    deleted: bool,
    freed_bytes: u64,
}

impl Actions {
    pub(super) fn artifact_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ArtifactListView, ActionError> {
        let filter: ListFilter = parse(Action::ArtifactList, body)?;
        let page = self.artifacts.list(principal, &filter)?;
        Ok(ArtifactListView {
            artifacts: page
                .artifacts
                .iter()
                .map(|a| ArtifactView::new(a, None, false))
                .collect(),
            next_page_token: page.next_page_token,
        })
    }

    pub(super) fn artifact_get(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ArtifactView, ActionError> {
        let request: GetRequest = parse(Action::ArtifactGet, body)?;
        let key = match (request.id, request.name) {
            (Some(id), None) => id,
            (None, Some(name)) => name,
            _ => {
                return Err(ActionError::BadRequest {
                    action: Action::ArtifactGet.name(),
                    message: "give exactly one of \"id\" or \"name\"".into(),
                });
            }
        };
        let artifact = self.artifacts.get(principal, &key)?;
        let version = match request.version {
            Some(number) => Some(
                artifact
                    .version(number)
                    .ok_or_else(|| ArtifactError::NotFound(format!("{key} version {number}")))?,
            ),
            None => None,
        };
        Ok(ArtifactView::new(&artifact, version, true))
    }

    pub(super) async fn artifact_share(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ArtifactView, ActionError> {
        let ShareRequest { id, visibility } = parse(Action::ArtifactShare, body)?;
        let artifact = self.artifacts.share(principal, &id, visibility).await?;
        Ok(ArtifactView::new(&artifact, None, false))
    }

    pub(super) async fn artifact_delete(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<DeletedView, ActionError> {
        let IdRequest { id } = parse(Action::ArtifactDelete, body)?;
        let artifact = self.artifacts.delete(principal, &id).await?;
        Ok(DeletedView {
            id: artifact.id.clone(),
            name: artifact.name.clone(),
            deleted: true,
            freed_bytes: artifact.stored_bytes(),
        })
    }

    pub(super) async fn artifact_extend(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ArtifactView, ActionError> {
        let ExtendRequest { id, ttl_seconds } = parse(Action::ArtifactExtend, body)?;
        let artifact = self.artifacts.extend(principal, &id, ttl_seconds).await?;
        Ok(ArtifactView::new(&artifact, None, false))
    }
}

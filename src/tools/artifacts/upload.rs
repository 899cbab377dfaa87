//! Uploads: a stream of Arrow batches in, one immutable object and a new
//! version out — or, on any failure or limit, nothing at all.
//!
//! Bytes are counted and hashed as they leave for the store
//! ([`LimitedWriter`]), so a limit stops an upload while it streams and
//! nothing is buffered whole. The record naming the object is written last,
//! under the commit lock that also checks the name and the swarm's quota.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use datafusion::arrow::array::{Array, BinaryArray, LargeBinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::parquet::errors::ParquetError;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::parquet::ParquetEncoder;
use super::record::{
    Artifact, ArtifactKind, ArtifactVersion, ColumnInfo, Owner, Scope, Visibility,
};
use super::{ArtifactError, ArtifactService, check_name};
use crate::principal::Principal;

/// The column bytes artifacts travel in.
pub const CHUNK_COLUMN: &str = "chunk";

/// Options of an upload (JSON in the first batch's app_metadata).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadOptions {
    /// `private` (default) or `swarm`.
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Labels to find it by.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Lifetime in seconds (default `artifacts.default_ttl`).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// MIME type (default Parquet for tables, octet-stream for bytes).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Whether the name must be new, must exist, or either (set by the
    /// front end: ADBC ingest modes map to it; not a JSON option).
    #[serde(skip)]
    pub mode: UploadMode,
    /// Bytes written so far, for a job's progress (not a JSON option).
    #[serde(skip)]
    pub progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// What an upload expects of the name it writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UploadMode {
    /// A new artifact, or a new version of the caller's own.
    #[default]
    CreateOrReplace,
    /// Only a new artifact: an existing name is ALREADY_EXISTS.
    Create,
    /// Only a new version of an existing artifact: a new name is NOT_FOUND.
    Replace,
}

impl UploadOptions {
    fn check(&self) -> Result<(), ArtifactError> {
        if let Some(tags) = &self.tags {
            if tags.len() > 32 {
                return Err(ArtifactError::BadRequest("at most 32 tags".into()));
            }
            if let Some(bad) = tags
                .iter()
                .find(|t| t.is_empty() || t.len() > 64 || t.chars().any(char::is_control))
            {
                return Err(ArtifactError::BadRequest(format!(
                    "tag {bad:?} must be 1-64 printable characters"
                )));
            }
        }
        if let Some(content_type) = &self.content_type
            && (content_type.is_empty()
                || content_type.len() > 255
                || !content_type
                    .chars()
                    .all(|c| c.is_ascii_graphic() || c == ' '))
        {
            return Err(ArtifactError::BadRequest(
                "content_type must be 1-255 printable ASCII characters".into(),
            ));
        }
        Ok(())
    }
}

/// What an upload produced.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The artifact after the upload.
    pub artifact: Artifact,
    /// The version just written.
    pub version: ArtifactVersion,
}

impl Uploaded {
    /// What a front end answers an upload with: id, name, version, size,
    /// sha256 and rows (tables).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.artifact.id,
            "name": self.artifact.name,
            "version": self.version.version,
            "size": self.version.size,
            "sha256": self.version.sha256,
            "rows": self.version.rows,
        })
    }
}

/// Which limit an upload runs into first.
#[derive(Debug, Clone, Copy)]
enum Limit {
    MaxBytes(u64),
    Quota { quota: u64, used: u64 },
}

impl Limit {
    fn bytes(self) -> u64 {
        match self {
            Limit::MaxBytes(max) => max,
            Limit::Quota { quota, used } => quota.saturating_sub(used),
        }
    }

    fn error(self, name: &str, scope: &Scope) -> ArtifactError {
        match self {
            Limit::MaxBytes(limit) => ArtifactError::TooLarge {
                name: name.to_string(),
                limit,
            },
            Limit::Quota { quota, used } => ArtifactError::QuotaExceeded {
                scope: scope.0.clone(),
                quota,
                used,
            },
        }
    }
}

impl ArtifactService {
    /// Stores `bytes` as a new version of the file artifact `name`.
    pub async fn upload_bytes(
        &self,
        principal: &Principal,
        name: &str,
        options: UploadOptions,
        bytes: Vec<u8>,
    ) -> Result<Uploaded, ArtifactError> {
        let schema = super::chunk_schema();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(BinaryArray::from(vec![bytes.as_slice()]))],
        )
        .map_err(|e| ArtifactError::Input(format!("encoding {name}: {e}")))?;
        let batches = futures::stream::iter([Ok(batch)]);
        self.upload(principal, name, options, schema, batches).await
    }

    /// Stores a stream of batches as a new version of `name`, owned by
    /// `principal`. A single `binary` column named `chunk` is a file stored
    /// as its bytes; any other schema is a table stored as Parquet.
    pub async fn upload<S>(
        &self,
        principal: &Principal,
        name: &str,
        options: UploadOptions,
        schema: SchemaRef,
        batches: S,
    ) -> Result<Uploaded, ArtifactError>
    where
        S: Stream<Item = Result<RecordBatch, ArtifactError>> + Send + Unpin,
    {
        let name = check_name(name)?;
        options.check()?;
        let expires_at = self.expiry(options.ttl_seconds)?;
        let scope = Scope::of(principal);
        let existing = self.check_name_owner(principal, &scope, &name)?;
        check_mode(options.mode, &name, existing.as_ref())?;
        let limit = self.limit(&scope);
        if limit.bytes() == 0 {
            return Err(limit.error(&name, &scope));
        }
        let kind = kind_of(&schema);
        let extension = match kind {
            ArtifactKind::Tabular => "parquet",
            ArtifactKind::Bytes => "bin",
        };
        let object = Path::from(format!(
            "{}/{name}/{}.{extension}",
            scope.directory(),
            uuid::Uuid::new_v4()
        ));
        let mut writer = LimitedWriter::new(
            BufWriter::new(Arc::clone(&self.store), object.clone()),
            limit.bytes(),
        );
        writer.progress = options.progress.clone();
        let written = match kind {
            ArtifactKind::Tabular => write_parquet(writer, &schema, batches).await,
            ArtifactKind::Bytes => write_bytes(writer, batches).await,
        };
        let written = match written {
            Ok(written) => written,
            Err(Failed { exceeded, error }) => {
                // A failed write leaves nothing: the writer aborted, and a
                // completed-but-refused object is deleted here.
                self.delete_object(&object).await;
                return Err(if exceeded {
                    limit.error(&name, &scope)
                } else {
                    error
                });
            }
        };
        let version = ArtifactVersion {
            version: 0,
            object: object.to_string(),
            kind,
            content_type: options.content_type.clone().unwrap_or_else(|| {
                match kind {
                    ArtifactKind::Tabular => "application/vnd.apache.parquet",
                    ArtifactKind::Bytes => "application/octet-stream",
                }
                .to_string()
            }),
            size: written.bytes,
            sha256: written.sha256,
            rows: (kind == ArtifactKind::Tabular).then_some(written.rows),
            schema_ipc: match kind {
                ArtifactKind::Tabular => Some(schema_to_text(&schema)?),
                ArtifactKind::Bytes => None,
            },
            columns: match kind {
                ArtifactKind::Tabular => schema
                    .fields()
                    .iter()
                    .map(|f| ColumnInfo {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                    })
                    .collect(),
                ArtifactKind::Bytes => vec![],
            },
            created_at: Utc::now(),
        };
        let committed = self
            .commit_version(principal, &name, &options, expires_at, version)
            .await;
        if committed.is_err() {
            self.delete_object(&object).await;
        }
        committed
    }

    /// Makes a written object the newest version of `name`: checks the name
    /// and the quota again (other uploads may have finished meanwhile), then
    /// writes the record.
    async fn commit_version(
        &self,
        principal: &Principal,
        name: &str,
        options: &UploadOptions,
        expires_at: chrono::DateTime<Utc>,
        mut version: ArtifactVersion,
    ) -> Result<Uploaded, ArtifactError> {
        let _turn = self.commit.lock().await;
        let scope = Scope::of(principal);
        let existing = self.check_name_owner(principal, &scope, name)?;
        check_mode(options.mode, name, existing.as_ref())?;
        if let Limit::Quota { quota, used } = self.limit(&scope)
            && used + version.size > quota
        {
            return Err(ArtifactError::QuotaExceeded {
                scope: scope.0,
                quota,
                used,
            });
        }
        let mut artifact = existing.unwrap_or_else(|| Artifact {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            owner: Owner::of(principal),
            visibility: Visibility::default(),
            tags: vec![],
            created_at: Utc::now(),
            expires_at,
            versions: vec![],
        });
        version.version = artifact.latest().map_or(1, |v| v.version + 1);
        if let Some(visibility) = options.visibility {
            artifact.visibility = visibility;
        }
        if let Some(tags) = &options.tags {
            artifact.tags = tags.clone();
        }
        artifact.expires_at = expires_at;
        artifact.versions.push(version.clone());
        let artifact = self.store_record(artifact).await?;
        Ok(Uploaded { artifact, version })
    }

    /// The artifact named `name` in `scope`, if it exists; an error if
    /// someone other than `principal` owns it. An expired artifact keeps its
    /// name until housekeeping removes it; its owner's next upload revives
    /// it with a new version and a new expiry.
    fn check_name_owner(
        &self,
        principal: &Principal,
        scope: &Scope,
        name: &str,
    ) -> Result<Option<Artifact>, ArtifactError> {
        let index = self.read_index();
        let Some(existing) = index
            .values()
            .map(|i| &i.artifact)
            .find(|a| a.name == name && &a.scope() == scope)
        else {
            return Ok(None);
        };
        if !existing.owner.is(principal) {
            return Err(ArtifactError::NameTaken(name.to_string()));
        }
        Ok(Some(existing.clone()))
    }

    /// The tighter of the size limit and what is left of the quota.
    fn limit(&self, scope: &Scope) -> Limit {
        let max = Limit::MaxBytes(self.settings.max_bytes);
        if scope.0.starts_with("swarm:") {
            let quota = self.settings.swarm_quota.as_u64();
            let used = self.used_bytes(scope);
            let left = Limit::Quota { quota, used };
            if left.bytes() < max.bytes() {
                return left;
            }
        }
        max
    }
}

fn check_mode(
    mode: UploadMode,
    name: &str,
    existing: Option<&Artifact>,
) -> Result<(), ArtifactError> {
    match (mode, existing) {
        (UploadMode::Create, Some(_)) => Err(ArtifactError::Exists(name.to_string())),
        (UploadMode::Replace, None) => Err(ArtifactError::NotFound(name.to_string())),
        _ => Ok(()),
    }
}

/// A single binary column named `chunk` is a file; anything else a table.
fn kind_of(schema: &SchemaRef) -> ArtifactKind {
    match schema.fields().as_ref() {
        [field]
            if field.name() == CHUNK_COLUMN
                && matches!(field.data_type(), DataType::Binary | DataType::LargeBinary) =>
        {
            ArtifactKind::Bytes
        }
        _ => ArtifactKind::Tabular,
    }
}

/// A schema as text for the record: an empty Arrow IPC stream, base64.
fn schema_to_text(schema: &SchemaRef) -> Result<String, ArtifactError> {
    let mut buffer = Vec::new();
    let mut writer = StreamWriter::try_new(&mut buffer, schema)
        .map_err(|e| ArtifactError::Parquet(format!("encoding the schema: {e}")))?;
    writer
        .finish()
        .map_err(|e| ArtifactError::Parquet(format!("encoding the schema: {e}")))?;
    drop(writer);
    Ok(base64::engine::general_purpose::STANDARD.encode(buffer))
}

/// What a finished write produced.
struct Written {
    bytes: u64,
    sha256: String,
    rows: u64,
}

/// Why a write stopped: a limit (`exceeded`), or another error.
struct Failed {
    exceeded: bool,
    error: ArtifactError,
}

impl From<ArtifactError> for Failed {
    fn from(error: ArtifactError) -> Self {
        Self {
            exceeded: false,
            error,
        }
    }
}

async fn write_parquet<S>(
    mut writer: LimitedWriter,
    schema: &SchemaRef,
    mut batches: S,
) -> Result<Written, Failed>
where
    S: Stream<Item = Result<RecordBatch, ArtifactError>> + Send + Unpin,
{
    let parquet_error = |e: ParquetError| ArtifactError::Parquet(e.to_string());
    let mut rows = 0u64;
    let outcome: Result<(), ArtifactError> = async {
        let mut encoder = ParquetEncoder::try_new(schema).map_err(parquet_error)?;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            if batch.schema().fields() != schema.fields() {
                return Err(ArtifactError::Input(
                    "every batch must have the schema the upload started with".into(),
                ));
            }
            rows += batch.num_rows() as u64;
            let bytes = encoder.write(batch).await.map_err(parquet_error)?;
            if !bytes.is_empty() {
                writer.put(bytes).await?;
            }
        }
        writer
            .put(encoder.finish().await.map_err(parquet_error)?)
            .await?;
        writer.finish().await
    }
    .await;
    match outcome {
        Ok(()) => Ok(writer.written(rows)),
        Err(error) => Err(writer.abort(error).await),
    }
}

async fn write_bytes<S>(mut writer: LimitedWriter, mut batches: S) -> Result<Written, Failed>
where
    S: Stream<Item = Result<RecordBatch, ArtifactError>> + Send + Unpin,
{
    let outcome: Result<(), ArtifactError> = async {
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let column = batch.column(0);
            let values: Vec<Option<&[u8]>> =
                if let Some(binary) = column.as_any().downcast_ref::<BinaryArray>() {
                    binary.iter().collect()
                } else if let Some(binary) = column.as_any().downcast_ref::<LargeBinaryArray>() {
                    binary.iter().collect()
                } else {
                    return Err(ArtifactError::Input(
                        "every batch of a file upload must be one binary column 'chunk'".into(),
                    ));
                };
            for value in values.into_iter().flatten() {
                writer.put(Bytes::copy_from_slice(value)).await?;
            }
        }
        writer.finish().await
    }
    .await;
    match outcome {
        Ok(()) => Ok(writer.written(0)),
        Err(error) => Err(writer.abort(error).await),
    }
}

/// A store writer that counts and hashes what it writes and refuses to go
/// past a limit: the limit is checked before any byte of a write leaves.
struct LimitedWriter {
    inner: BufWriter,
    limit: u64,
    bytes: u64,
    hasher: Sha256,
    exceeded: bool,
    progress: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl LimitedWriter {
    fn new(inner: BufWriter, limit: u64) -> Self {
        Self {
            inner,
            limit,
            bytes: 0,
            hasher: Sha256::new(),
            exceeded: false,
            progress: None,
        }
    }

    async fn put(&mut self, bytes: Bytes) -> Result<(), ArtifactError> {
        let after = self.bytes + bytes.len() as u64;
        if after > self.limit {
            self.exceeded = true;
            return Err(ArtifactError::Input("over the limit".into()));
        }
        self.hasher.update(&bytes);
        self.bytes = after;
        if let Some(progress) = &self.progress {
            progress.store(after, std::sync::atomic::Ordering::Release);
        }
        self.inner.put(bytes).await?;
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), ArtifactError> {
        self.inner.shutdown().await.map_err(|e| {
            ArtifactError::Store(object_store::Error::Generic {
                store: "artifacts",
                source: Box::new(e),
            })
        })
    }

    fn written(self, rows: u64) -> Written {
        Written {
            bytes: self.bytes,
            sha256: format!("{:x}", self.hasher.finalize()),
            rows,
        }
    }

    async fn abort(mut self, error: ArtifactError) -> Failed {
        if let Err(e) = self.inner.abort().await {
            tracing::debug!(error = %e, "aborting an artifact upload");
        }
        Failed {
            exceeded: self.exceeded,
            error,
        }
    }
}

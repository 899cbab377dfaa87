//! Reading artifacts: downloads as Arrow streams (tables as their rows,
//! files as batches of one binary column `chunk`), and tabular artifacts as
//! the tables `artifacts.<name>` that queries plan over directly, each
//! principal seeing only those it may read.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use chrono::Utc;
use datafusion::arrow::array::{BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::record::{Artifact, ArtifactKind, ArtifactVersion, Scope};
use super::upload::CHUNK_COLUMN;
use super::{ARTIFACT_SCHEMA, ArtifactError, ArtifactService, STORE_URL, visible_to};
use crate::principal::Principal;
use crate::query::ExtraTables;
use crate::table_name::TableName;

/// Largest `chunk` value a file download sends.
const CHUNK_BYTES: usize = 1024 * 1024;

/// Rows per batch of a table download.
const BATCH_ROWS: usize = 8192;

/// An artifact version being read.
pub struct Download {
    /// The artifact.
    pub artifact: Artifact,
    /// The version read.
    pub version: ArtifactVersion,
    /// The schema of `batches`.
    pub schema: SchemaRef,
    /// Its rows (tables) or its bytes in `chunk` batches (files).
    pub batches: BoxStream<'static, Result<RecordBatch, ArtifactError>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("artifact", &self.artifact.id)
            .field("version", &self.version.version)
            .finish()
    }
}

impl ArtifactService {
    /// Opens a version of an artifact the caller may read (the newest when
    /// `version` is none).
    pub async fn download(
        &self,
        principal: &Principal,
        id: &str,
        version: Option<u32>,
    ) -> Result<Download, ArtifactError> {
        let artifact = self.get(principal, id)?;
        let chosen = match version {
            Some(v) => artifact.version(v),
            None => artifact.latest(),
        }
        .cloned()
        .ok_or_else(|| ArtifactError::NotFound(format!("{id} version {version:?}")))?;
        let path = Path::from(chosen.object.as_str());
        let (schema, batches) = match chosen.kind {
            ArtifactKind::Tabular => {
                let reader = ParquetObjectReader::new(Arc::clone(&self.store), path)
                    .with_file_size(chosen.size);
                let builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| ArtifactError::Parquet(e.to_string()))?
                    .with_batch_size(BATCH_ROWS);
                let schema = Arc::clone(builder.schema());
                let stream = builder
                    .build()
                    .map_err(|e| ArtifactError::Parquet(e.to_string()))?
                    .map_err(|e| ArtifactError::Parquet(e.to_string()));
                (schema, stream.boxed())
            }
            ArtifactKind::Bytes => {
                let schema = chunk_schema();
                let chunks = self.store.get(&path).await?.into_stream();
                let batch_schema = Arc::clone(&schema);
                let stream = chunks
                    .map_err(ArtifactError::from)
                    .map_ok(move |bytes| {
                        let pieces: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
                        RecordBatch::try_new(
                            Arc::clone(&batch_schema),
                            vec![Arc::new(BinaryArray::from(pieces))],
                        )
                        .map_err(|e| ArtifactError::Parquet(e.to_string()))
                    })
                    .map(|r| r.and_then(|inner| inner));
                (schema, stream.boxed())
            }
        };
        Ok(Download {
            artifact,
            version: chosen,
            schema,
            batches,
        })
    }
}

/// The schema file downloads (and uploads) travel in.
pub fn chunk_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        CHUNK_COLUMN,
        DataType::Binary,
        false,
    )]))
}

/// Tabular artifacts as tables of the `artifacts` schema, for queries.
#[derive(Debug)]
pub struct ArtifactTables(pub Arc<ArtifactService>);

impl ExtraTables for ArtifactTables {
    fn version(&self) -> u64 {
        self.0.changes.load(Ordering::Acquire)
    }

    fn tables_for(
        &self,
        principal: &Principal,
    ) -> Vec<(TableName, SchemaRef, Arc<dyn TableProvider>)> {
        // Names are unique per swarm; an admin sees several swarms, where
        // its own artifacts win a clash and others keep the first id.
        let own = Scope::of(principal);
        let now = Utc::now();
        let mut chosen: BTreeMap<String, (&Artifact, &ArtifactVersion)> = BTreeMap::new();
        let index = self.0.read_index();
        for artifact in index.values().map(|i| &i.artifact) {
            if artifact.expired(now) || !visible_to(principal, artifact) {
                continue;
            }
            let Some(latest) = artifact.latest() else {
                continue;
            };
            if latest.kind != ArtifactKind::Tabular {
                continue;
            }
            if artifact.scope() == own || !chosen.contains_key(&artifact.name) {
                chosen.insert(artifact.name.clone(), (artifact, latest));
            }
        }
        chosen
            .into_iter()
            .filter_map(|(name, (artifact, version))| {
                match table_of(version) {
                    Ok((schema, provider)) => {
                        let name = TableName::from_parts(ARTIFACT_SCHEMA, &name).ok()?;
                        Some((name, schema, provider))
                    }
                    Err(e) => {
                        tracing::warn!(artifact = %artifact.id, error = %e, "an artifact cannot be queried");
                        None
                    }
                }
            })
            .collect()
    }
}

/// A table over one stored Parquet object, with the schema recorded at
/// upload (so planning reads nothing from the store).
fn table_of(
    version: &ArtifactVersion,
) -> Result<(SchemaRef, Arc<dyn TableProvider>), ArtifactError> {
    let schema = schema_from_text(version.schema_ipc.as_deref().unwrap_or_default())?;
    let url = ListingTableUrl::parse(format!("{STORE_URL}{}", version.object))
        .map_err(|e| ArtifactError::Parquet(e.to_string()))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::clone(&schema));
    let table = ListingTable::try_new(config).map_err(|e| ArtifactError::Parquet(e.to_string()))?;
    Ok((schema, Arc::new(table)))
}

fn schema_from_text(text: &str) -> Result<SchemaRef, ArtifactError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ArtifactError::Parquet(format!("stored schema: {e}")))?;
    let reader = StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| ArtifactError::Parquet(format!("stored schema: {e}")))?;
    Ok(reader.schema())
}

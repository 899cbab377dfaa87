//! File sources: Parquet, CSV and newline-delimited JSON on any
//! `object_store` URL (local files, S3 and S3-compatible stores, GCS, Azure,
//! HTTP), one file or many (a directory prefix ending in `/`, or a glob such
//! as `…/*.parquet`).
//!
//! DuckDB's own readers are off (external access is disabled for the whole
//! replica), so sources are read in Rust: DataFusion's listing table does
//! the listing, schema inference and streaming decode, and batches flow to
//! the replica with bounded memory. This context is internal — agents never
//! reach it.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Column;
use datafusion::datasource::file_format::FileFormat as DfFileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{RowStream, Since, Source, SourceError, SourceSize};
use crate::object_stores::{StoreAccess, StoreUrlError};
use crate::redact;

/// File formats airlock reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma- (or otherwise) separated values.
    Csv,
    /// Newline-delimited JSON objects.
    Json,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        })
    }
}

/// CSV reading options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CsvOptions {
    /// First line holds column names.
    pub has_header: bool,
    /// Field separator (one ASCII character); `\t` for `.tsv` files.
    pub delimiter: Option<char>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            has_header: true,
            delimiter: None,
        }
    }
}

/// Files as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Object store URL or absolute path; may end in `/` or contain a glob.
    pub url: String,
    /// File format; inferred from the file extension when absent.
    pub format: Option<FileFormat>,
    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// The runtime object-store connection to read through
    /// (`sources.create`); none: the config's `[object_store]` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// A resolved, readable file source.
pub struct FileSource {
    spec: FileSpec,
    url: ListingTableUrl,
    format: FileFormat,
    extension: String,
    ctx: SessionContext,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("url", &self.spec.url)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl FileSource {
    /// Resolves a spec: parses the URL, builds its object store (with the
    /// credentials `access` allows) and settles the format.
    pub fn resolve(spec: &FileSpec, access: StoreAccess<'_>) -> Result<Self, SourceError> {
        if spec.csv.delimiter.is_some_and(|d| !d.is_ascii()) {
            return Err(SourceError::BadCsv(
                "delimiter must be one ASCII character".into(),
            ));
        }
        let (url, glob) = split_glob(&spec.url)?;
        let store = object_store_for(&url, access)?;
        let listing_url =
            ListingTableUrl::try_new(url.clone(), glob).map_err(|e| SourceError::BadUrl {
                url: redact::url(&spec.url),
                reason: e.to_string(),
            })?;
        let name = spec
            .url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (format, extension) = match spec.format {
            Some(format) => {
                let detected = detect(&name).ok().filter(|(f, _)| *f == format);
                let extension = detected.map_or_else(|| default_extension(format), |(_, e)| e);
                (format, extension)
            }
            None if spec.url.ends_with('/') => {
                return Err(SourceError::UnknownFormat(redact::url(&spec.url)));
            }
            None => detect(&name)?,
        };
        // One partition reads the files in path order, so the replica keeps
        // the source's row order: DuckDB's zone maps then prune well on
        // columns the source was sorted by (point lookups on keys).
        let config = SessionConfig::new()
            .with_batch_size(16 * 1024)
            .with_target_partitions(1);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_object_store(listing_url.object_store().as_ref(), store);
        Ok(Self {
            spec: spec.clone(),
            url: listing_url,
            format,
            extension,
            ctx,
        })
    }

    /// The format being read.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The local directory or file behind a `file://` source.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        let url = self.url.get_url();
        (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
    }

    fn read_error(&self, e: impl std::fmt::Display) -> SourceError {
        SourceError::Read {
            url: redact::url(&self.spec.url),
            message: e.to_string(),
        }
    }

    fn listing_options(&self) -> ListingOptions {
        let compression = compression_of(&self.extension);
        let format: Arc<dyn DfFileFormat> = match self.format {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => {
                let default_delimiter = if self.extension.starts_with(".tsv") {
                    '\t'
                } else {
                    ','
                };
                let delimiter = self.spec.csv.delimiter.unwrap_or(default_delimiter);
                Arc::new(
                    CsvFormat::default()
                        .with_has_header(self.spec.csv.has_header)
                        // ASCII, checked in resolve.
                        .with_delimiter(u8::try_from(delimiter).unwrap_or(b','))
                        .with_file_compression_type(compression),
                )
            }
            FileFormat::Json => {
                Arc::new(JsonFormat::default().with_file_compression_type(compression))
            }
        };
        ListingOptions::new(format)
            .with_file_extension(&self.extension)
            .with_session_config_options(self.ctx.state().config())
    }

    /// The files that make up the source, with their total size in bytes.
    pub async fn files(&self) -> Result<(usize, u64), SourceError> {
        let state = self.ctx.state();
        let store = self
            .ctx
            .runtime_env()
            .object_store(self.url.object_store())
            .map_err(|e| self.read_error(e))?;
        let files: Vec<_> = self
            .url
            .list_all_files(&state, store.as_ref(), &self.extension)
            .await
            .map_err(|e| self.read_error(e))?
            .try_collect()
            .await
            .map_err(|e| match e {
                DataFusionError::ObjectStore(ref inner)
                    if matches!(**inner, object_store::Error::NotFound { .. }) =>
                {
                    SourceError::NoFiles {
                        url: redact::url(&self.spec.url),
                        format: self.format,
                    }
                }
                other => self.read_error(other),
            })?;
        if files.is_empty() {
            return Err(SourceError::NoFiles {
                url: redact::url(&self.spec.url),
                format: self.format,
            });
        }
        Ok((files.len(), files.iter().map(|f| f.size).sum()))
    }
}

#[async_trait::async_trait]
impl Source for FileSource {
    fn name(&self) -> String {
        redact::url(&self.spec.url)
    }

    async fn schema(&self) -> Result<SchemaRef, SourceError> {
        self.files().await?;
        self.listing_options()
            .infer_schema(&self.ctx.state(), &self.url)
            .await
            .map_err(|e| self.read_error(e))
    }

    async fn size(&self) -> Result<SourceSize, SourceError> {
        let (files, bytes) = self.files().await?;
        Ok(SourceSize {
            files: Some(files as u64),
            rows: None,
            bytes: Some(bytes),
        })
    }

    async fn extract(
        &self,
        schema: SchemaRef,
        since: Option<&Since>,
    ) -> Result<RowStream, SourceError> {
        let config = ListingTableConfig::new(self.url.clone())
            .with_listing_options(self.listing_options())
            .with_schema(schema);
        let table = ListingTable::try_new(config).map_err(|e| self.read_error(e))?;
        let mut frame = self
            .ctx
            .read_table(Arc::new(table))
            .map_err(|e| self.read_error(e))?;
        if let Some(since) = since {
            // Parquet row groups whose statistics end below the bound are
            // skipped; the rest is filtered as it streams.
            let column = col(Column::new_unqualified(&since.column));
            let bound = lit(since.value.clone());
            let predicate = if since.inclusive {
                column.gt_eq(bound)
            } else {
                column.gt(bound)
            };
            frame = frame.filter(predicate).map_err(|e| self.read_error(e))?;
        }
        let stream = frame
            .execute_stream()
            .await
            .map_err(|e| self.read_error(e))?;
        let name = self.name();
        Ok(stream
            .map(move |batch| batch.map_err(|e| classify(&name, e)))
            .boxed())
    }
}

/// Object store trouble (network, throttling) is worth a retry; a file that
/// does not parse is not.
fn classify(name: &str, error: DataFusionError) -> SourceError {
    match error.find_root() {
        DataFusionError::ObjectStore(inner)
            if !matches!(
                **inner,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ) =>
        {
            SourceError::Unavailable {
                source_name: name.to_string(),
                message: inner.to_string(),
            }
        }
        other => SourceError::Read {
            url: name.to_string(),
            message: other.to_string(),
        },
    }
}

/// Splits `…/dir/*.parquet` into the URL of `…/dir/` and the glob `*.parquet`.
/// Absolute paths become `file://` URLs.
fn split_glob(source: &str) -> Result<(Url, Option<glob::Pattern>), SourceError> {
    let bad = |reason: String| SourceError::BadUrl {
        url: redact::url(source),
        reason,
    };
    let (text, is_path) = if source.starts_with('/') {
        (format!("file://{source}"), true)
    } else {
        (source.to_string(), false)
    };
    let path_start = match text.find("://") {
        Some(i) => text[i + 3..].find('/').map_or(text.len(), |j| i + 3 + j),
        None => return Err(bad("expected scheme://… or an absolute path".into())),
    };
    let glob_at = text[path_start..]
        .find(['*', '?', '['])
        .map(|i| path_start + i);
    let (base, glob) = match glob_at {
        Some(at) => {
            let cut = text[..at].rfind('/').map_or(at, |i| i + 1);
            let pattern = glob::Pattern::new(&text[cut..]).map_err(|e| bad(e.to_string()))?;
            (text[..cut].to_string(), Some(pattern))
        }
        None => (text, None),
    };
    let url = if is_path {
        Url::from_file_path(base.trim_start_matches("file://"))
            .map(|u| {
                // Url::from_file_path drops a trailing slash, which marks a directory.
                if base.ends_with('/') && !u.as_str().ends_with('/') {
                    Url::parse(&format!("{u}/")).unwrap_or(u)
                } else {
                    u
                }
            })
            .map_err(|()| bad("not an absolute path".into()))?
    } else {
        Url::parse(&base).map_err(|e| bad(e.to_string()))?
    };
    Ok((url, glob))
}

fn object_store_for(
    url: &Url,
    access: StoreAccess<'_>,
) -> Result<Arc<dyn ObjectStore>, SourceError> {
    match crate::object_stores::open_with(url, access) {
        Ok((store, _)) => Ok(store),
        Err(StoreUrlError::UnsupportedScheme(scheme)) => {
            Err(SourceError::UnsupportedScheme(scheme))
        }
        Err(StoreUrlError::Invalid { reason }) => Err(SourceError::BadUrl {
            url: url.to_string(),
            reason,
        }),
    }
}

/// Format and full extension (with compression suffix) from a file name.
fn detect(name: &str) -> Result<(FileFormat, String), SourceError> {
    let compressions = ["", ".gz", ".bz2", ".xz", ".zst"];
    let formats = [
        (".parquet", FileFormat::Parquet),
        (".parq", FileFormat::Parquet),
        (".csv", FileFormat::Csv),
        (".tsv", FileFormat::Csv),
        (".json", FileFormat::Json),
        (".jsonl", FileFormat::Json),
        (".ndjson", FileFormat::Json),
    ];
    for (ext, format) in formats {
        for compression in compressions {
            if format == FileFormat::Parquet && !compression.is_empty() {
                continue;
            }
            let full = format!("{ext}{compression}");
            if name.ends_with(&full) {
                return Ok((format, full));
            }
        }
    }
    let extension = name.rsplit_once('.').map_or(name, |(_, e)| e);
    Err(SourceError::UnsupportedFormat(extension.to_string()))
}

fn default_extension(format: FileFormat) -> String {
    match format {
        FileFormat::Parquet => ".parquet",
        FileFormat::Csv => ".csv",
        FileFormat::Json => ".json",
    }
    .to_string()
}

fn compression_of(extension: &str) -> FileCompressionType {
    match extension.rsplit('.').next() {
        Some("gz") => FileCompressionType::GZIP,
        Some("bz2") => FileCompressionType::BZIP2,
        Some("xz") => FileCompressionType::XZ,
        Some("zst") => FileCompressionType::ZSTD,
        _ => FileCompressionType::UNCOMPRESSED,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            detect("x.parquet").unwrap(),
            (FileFormat::Parquet, ".parquet".into())
        );
        assert_eq!(
            detect("*.csv.gz").unwrap(),
            (FileFormat::Csv, ".csv.gz".into())
        );
        assert_eq!(
            detect("a.ndjson").unwrap(),
            (FileFormat::Json, ".ndjson".into())
        );
        let err = detect("book.xlsx").unwrap_err();
        assert!(err.to_string().contains("'xlsx'"), "{err}");
    }

    #[test]
    fn globs_split_at_the_directory() {
        let (url, glob) = split_glob("file:///data/lineitem/*.parquet").unwrap();
        assert_eq!(url.as_str(), "file:///data/lineitem/");
        assert_eq!(glob.unwrap().as_str(), "*.parquet");
        let (url, glob) = split_glob("/data/x.csv").unwrap();
        assert_eq!(url.as_str(), "file:///data/x.csv");
        assert!(glob.is_none());
        let (url, _) = split_glob("/data/dir/").unwrap();
        assert_eq!(url.as_str(), "file:///data/dir/");
        let (url, glob) = split_glob("s3://bucket/a/part-?.parquet").unwrap();
        assert_eq!(url.as_str(), "s3://bucket/a/");
        assert_eq!(glob.unwrap().as_str(), "part-?.parquet");
        assert!(matches!(
            split_glob("relative/x.csv"),
            Err(SourceError::BadUrl { .. })
        ));
    }

    #[test]
    fn credentials_never_show_in_messages() {
        let spec = FileSpec {
            url: "https://user:hunter2@host/x.xlsx".into(),
            format: None,
            csv: CsvOptions::default(),
            connection: None,
        };
        let err = FileSource::resolve(&spec, StoreAccess::Server(&BTreeMap::new())).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn unknown_schemes_are_named() {
        let spec = FileSpec {
            url: "ftp://host/x.csv".into(),
            format: None,
            csv: CsvOptions::default(),
            connection: None,
        };
        let err = FileSource::resolve(&spec, StoreAccess::Server(&BTreeMap::new())).unwrap_err();
        assert!(
            matches!(err, SourceError::UnsupportedScheme(ref s) if s == "ftp"),
            "{err}"
        );
    }
}

//! Replication: table registrations and the sync jobs that load them.
//!
//! `table.register` records where a table's data lives (after checking that
//! the source has files and a readable schema). `sync.start` creates a
//! durable [`SyncJob`] and runs it in the background: the source streams
//! into a staging table that is swapped in atomically on success, so a
//! failed or interrupted sync leaves the previous replica whole. At most
//! one job per table runs at a time; `sync.parallelism` jobs run at once.

pub mod snowflake;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

pub use source::{CsvOptions, FileFormat, FileSource, SourceError, SourceSpec, redact};

use crate::meta::{Collection, Meta, MetaError};
use crate::replica::{Replica, ReplicaError, StagingTable};
use crate::table_name::{TableName, TableNameError};

/// Sync and registration failures.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad table name.
    #[error(transparent)]
    Name(#[from] TableNameError),
    /// The source is unusable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Registering a name that is taken.
    #[error("table '{0}' is already registered; remove it first or choose another name")]
    AlreadyRegistered(TableName),
    /// Registering a name in a schema airlock keeps for itself.
    #[error(
        "schema '{0}' is reserved for airlock's own tables (the audit trail); choose another schema"
    )]
    ReservedSchema(String),
    /// Unknown table.
    #[error("table '{0}' is not registered; see table.list")]
    NotRegistered(TableName),
    /// Unknown job.
    #[error("no sync job with id '{0}'")]
    NoSuchJob(String),
    /// A table cannot be removed while it syncs.
    #[error("table '{table}' is being synced by job {job_id}; wait for it to finish")]
    Busy {
        /// Table.
        table: TableName,
        /// Running job.
        job_id: String,
    },
    /// A primary key column is not in the source.
    #[error("primary key column '{0}' is not a column of the source")]
    BadPrimaryKey(String),
    /// The replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A background task died.
    #[error("sync task failed: {0}")]
    Task(String),
}

/// A registered table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRegistration {
    /// Replica name.
    pub name: TableName,
    /// Where its data comes from.
    pub source: SourceSpec,
    /// Primary key columns, if declared.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The latest job started for it.
    pub last_job_id: Option<String>,
}

/// What `table.register` asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// `schema.table`.
    pub name: String,
    /// Source URL or absolute path.
    pub source: String,
    /// Format, when the extension does not tell.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Primary key columns.
    #[serde(default)]
    pub primary_key: Vec<String>,
}

/// States of a sync job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a free slot.
    Queued,
    /// Loading.
    Running,
    /// Swapped in.
    Succeeded,
    /// Failed; the previous replica is intact.
    Failed,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// A durable sync job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncJob {
    /// Job id.
    pub job_id: String,
    /// Table.
    pub table: TableName,
    /// Strategy (`full`).
    pub strategy: String,
    /// State.
    pub state: JobState,
    /// Rows loaded so far.
    pub rows: u64,
    /// Arrow bytes loaded so far.
    pub bytes: u64,
    /// Source files.
    pub files: u64,
    /// Source size on storage.
    pub source_bytes: u64,
    /// Failure message.
    pub error: Option<String>,
    /// Attempt number (1 for the first run).
    pub attempt: u32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Start of loading.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Live counters of a running job.
#[derive(Debug, Default)]
struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Registrations and sync jobs.
#[derive(Debug)]
pub struct SyncService {
    meta: Meta,
    /// airlock's data directory: no source may read from inside it (but
    /// for the generated demo files).
    data_dir: PathBuf,
    replica: Arc<Replica>,
    object_store_options: BTreeMap<String, String>,
    permits: Arc<Semaphore>,
    // Jobs not yet terminal, by table: enforces one job per table and
    // serves live progress.
    active: Mutex<HashMap<TableName, ActiveJob>>,
    // Registering, removing and starting change registrations and the
    // active set together; one at a time, so a start can never slip in
    // between a removal's check and its drop.
    changes: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct ActiveJob {
    job: SyncJob,
    progress: Arc<Progress>,
}

impl ActiveJob {
    fn snapshot(&self) -> SyncJob {
        SyncJob {
            rows: self.progress.rows.load(Ordering::Relaxed),
            bytes: self.progress.bytes.load(Ordering::Relaxed),
            ..self.job.clone()
        }
    }
}

impl SyncService {
    /// A service; marks jobs left running by a previous process as failed.
    pub async fn open(
        meta: Meta,
        data_dir: PathBuf,
        replica: Arc<Replica>,
        object_store_options: BTreeMap<String, String>,
        parallelism: usize,
    ) -> Result<Arc<Self>, SyncError> {
        let service = Arc::new(Self {
            meta,
            data_dir,
            replica,
            object_store_options,
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
            active: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        });
        for mut job in service.meta.list::<SyncJob>(Collection::Jobs).await? {
            if !job.state.is_terminal() {
                job.state = JobState::Failed;
                job.error = Some("interrupted: the server stopped while this job was running; the previous replica is intact".into());
                job.finished_at = Some(Utc::now());
                service
                    .meta
                    .put(Collection::Jobs, &job.job_id, &job)
                    .await?;
            }
        }
        Ok(service)
    }

    /// Registers a table after checking its source.
    pub async fn register(
        &self,
        caller: &str,
        request: RegisterRequest,
    ) -> Result<TableRegistration, SyncError> {
        let _changes = self.changes.lock().await;
        let name = TableName::parse(&request.name)?;
        if name
            .schema()
            .eq_ignore_ascii_case(crate::audit::AUDIT_SCHEMA)
        {
            return Err(SyncError::ReservedSchema(name.schema().to_string()));
        }
        if self.registration(&name).await.is_ok() {
            return Err(SyncError::AlreadyRegistered(name));
        }
        let spec = SourceSpec {
            url: request.source,
            format: request.format,
            csv: request.csv,
        };
        let source = FileSource::resolve(&spec, &self.object_store_options)?;
        if let Some(path) = source.local_path() {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            if path.starts_with(&self.data_dir) && !path.starts_with(self.data_dir.join("demo")) {
                return Err(SourceError::Protected(redact(&spec.url)).into());
            }
        }
        source.files().await?;
        let schema = source.schema().await?;
        for column in &request.primary_key {
            if schema.field_with_name(column).is_err() {
                return Err(SyncError::BadPrimaryKey(column.clone()));
            }
        }
        for field in schema.fields() {
            crate::replica::duckdb_type(field.name(), field.data_type())?;
        }
        let registration = TableRegistration {
            name: name.clone(),
            source: SourceSpec {
                format: Some(source.format()),
                ..spec
            },
            primary_key: request.primary_key,
            created_by: caller.to_string(),
            created_at: Utc::now(),
            last_job_id: None,
        };
        self.meta
            .put(Collection::Tables, &name.to_string(), &registration)
            .await?;
        Ok(registration)
    }

    /// A registration.
    pub async fn registration(&self, name: &TableName) -> Result<TableRegistration, SyncError> {
        self.meta
            .get(Collection::Tables, &name.to_string())
            .await?
            .ok_or_else(|| SyncError::NotRegistered(name.clone()))
    }

    /// All registrations, by name.
    pub async fn registrations(&self) -> Result<Vec<TableRegistration>, SyncError> {
        Ok(self.meta.list(Collection::Tables).await?)
    }

    /// Unregisters a table and drops its replica.
    pub async fn remove(&self, name: &TableName) -> Result<bool, SyncError> {
        let _changes = self.changes.lock().await;
        self.registration(name).await?;
        if let Some(active) = self.lock_active().get(name) {
            return Err(SyncError::Busy {
                table: name.clone(),
                job_id: active.job.job_id.clone(),
            });
        }
        let replica = Arc::clone(&self.replica);
        let target = name.clone();
        let dropped = tokio::task::spawn_blocking(move || replica.drop_table(&target))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??;
        self.meta
            .delete(Collection::Tables, &name.to_string())
            .await?;
        Ok(dropped)
    }

    /// Starts a full sync of a table, or returns the job already running
    /// for it (`false` in the second element).
    pub async fn start(self: &Arc<Self>, name: &TableName) -> Result<(SyncJob, bool), SyncError> {
        let _changes = self.changes.lock().await;
        let mut registration = self.registration(name).await?;
        let progress = Arc::new(Progress::default());
        let job = SyncJob {
            job_id: uuid::Uuid::new_v4().to_string(),
            table: name.clone(),
            strategy: "full".into(),
            state: JobState::Queued,
            rows: 0,
            bytes: 0,
            files: 0,
            source_bytes: 0,
            error: None,
            attempt: 1,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
        };
        {
            let mut active = self.lock_active();
            if let Some(running) = active.get(name) {
                return Ok((running.snapshot(), false));
            }
            active.insert(
                name.clone(),
                ActiveJob {
                    job: job.clone(),
                    progress: Arc::clone(&progress),
                },
            );
        }
        let stored = async {
            self.meta.put(Collection::Jobs, &job.job_id, &job).await?;
            registration.last_job_id = Some(job.job_id.clone());
            self.meta
                .put(Collection::Tables, &name.to_string(), &registration)
                .await
        }
        .await;
        if let Err(e) = stored {
            self.lock_active().remove(name);
            return Err(e.into());
        }
        let service = Arc::clone(self);
        let spawned = job.clone();
        tokio::spawn(async move { service.run(spawned, registration, progress).await });
        Ok((job, true))
    }

    /// A job with live counters if it is running.
    pub async fn status(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        let mut job: SyncJob = self
            .meta
            .get(Collection::Jobs, job_id)
            .await?
            .ok_or_else(|| SyncError::NoSuchJob(job_id.to_string()))?;
        if !job.state.is_terminal()
            && let Some(active) = self.lock_active().get(&job.table)
            && active.job.job_id == job_id
        {
            job.rows = active.progress.rows.load(Ordering::Relaxed);
            job.bytes = active.progress.bytes.load(Ordering::Relaxed);
        }
        Ok(job)
    }

    /// Waits until a job is terminal (used by `--demo` and tests).
    pub async fn wait(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        loop {
            let job = self.status(job_id).await?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn run(
        self: Arc<Self>,
        mut job: SyncJob,
        registration: TableRegistration,
        progress: Arc<Progress>,
    ) {
        // Whatever happens below, even a panic, the table is free again after.
        let _active = ActiveEntry {
            service: Arc::clone(&self),
            table: job.table.clone(),
        };
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        job.state = JobState::Running;
        job.started_at = Some(Utc::now());
        if let Err(e) = self.meta.put(Collection::Jobs, &job.job_id, &job).await {
            tracing::warn!(job_id = %job.job_id, error = %e, "could not record job start");
        }
        let started = Instant::now();
        let result = match permit {
            Ok(_permit) => self.load_full(&mut job, &registration, &progress).await,
            Err(e) => Err(SyncError::Task(e.to_string())),
        };
        job.rows = progress.rows.load(Ordering::Relaxed);
        job.bytes = progress.bytes.load(Ordering::Relaxed);
        job.finished_at = Some(Utc::now());
        match result {
            Ok(rows) => {
                job.state = JobState::Succeeded;
                job.rows = rows;
                tracing::info!(job_id = %job.job_id, table = %job.table, rows, elapsed_ms = started.elapsed().as_millis() as u64, "sync succeeded");
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
                tracing::warn!(job_id = %job.job_id, table = %job.table, error = %e, "sync failed");
            }
        }
        if let Err(e) = self.meta.put(Collection::Jobs, &job.job_id, &job).await {
            tracing::error!(job_id = %job.job_id, error = %e, "could not record job end");
        }
    }

    /// Streams the source into a staging table and swaps it in.
    async fn load_full(
        &self,
        job: &mut SyncJob,
        registration: &TableRegistration,
        progress: &Arc<Progress>,
    ) -> Result<u64, SyncError> {
        let source = FileSource::resolve(&registration.source, &self.object_store_options)?;
        let (files, source_bytes) = source.files().await?;
        job.files = files as u64;
        job.source_bytes = source_bytes;
        let schema = source.schema().await?;
        let mut stream = source.stream(Arc::clone(&schema)).await?;

        // The writer runs on the blocking pool; a small channel keeps at
        // most a few batches in flight, so memory stays bounded.
        let (tx, mut rx) = mpsc::channel::<Load>(4);
        let replica = Arc::clone(&self.replica);
        let table = registration.name.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, SyncError> {
            let mut staging = StagingTable::create(&replica, &table, &schema)?;
            while let Some(message) = rx.blocking_recv() {
                match message {
                    Load::Batch(batch) => staging.append(&batch)?,
                    Load::Finish => return Ok(staging.commit()?),
                }
            }
            // The reader stopped without Finish: abandon (Drop removes staging).
            Err(SyncError::Task("load aborted".into()))
        });

        let mut read_error = None;
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(batch) => {
                    let rows = batch.num_rows() as u64;
                    let bytes = batch.get_array_memory_size() as u64;
                    if tx.send(Load::Batch(batch)).await.is_err() {
                        break; // The writer failed; its error is reported below.
                    }
                    progress.rows.fetch_add(rows, Ordering::Relaxed);
                    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Err(e) => {
                    read_error = Some(SourceError::Read {
                        url: source::redact(&registration.source.url),
                        message: e.to_string(),
                    });
                    break;
                }
            }
        }
        if read_error.is_none() {
            // Ignored if the writer already failed; its error wins below.
            let _ = tx.send(Load::Finish).await;
        }
        drop(tx);
        let written = writer.await.map_err(|e| SyncError::Task(e.to_string()))?;
        match (read_error, written) {
            (Some(e), _) => Err(e.into()),
            (None, result) => result,
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, ActiveJob>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Frees a table's job slot when its job ends, however it ends.
struct ActiveEntry {
    service: Arc<SyncService>,
    table: TableName,
}

impl Drop for ActiveEntry {
    fn drop(&mut self) {
        self.service.lock_active().remove(&self.table);
    }
}

enum Load {
    Batch(RecordBatch),
    Finish,
}

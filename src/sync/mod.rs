//! Replication: table registrations and the sync jobs that load them.
//!
//! `table.register` records a source (files or a Snowflake table), a
//! strategy and an optional schedule, after checking the source. A sync
//! is a durable [`SyncJob`]: the source streams into a new version of the
//! table which is committed atomically (with its watermark) or dropped, so
//! a failed, cancelled or killed sync leaves the previous replica whole and
//! queries keep reading it meanwhile. At most one job per table runs at a
//! time; `sync.parallelism` run at once; transient source errors are
//! retried with backoff. A scheduler starts due syncs and purges old jobs.

mod job;
mod registration;
mod schedule;
pub mod snowflake;
mod source;
mod watermark;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use job::{JobQuery, JobState, SyncJob, Trigger};
pub use registration::{
    ColumnRecord, OnSchemaChange, RegisterRequest, Strategy, TableRegistration,
};
pub use schedule::Schedule;
pub use snowflake::{SnowflakeConfig, SnowflakeConnections};
pub use source::{
    CsvOptions, FileFormat, FileSource, FileSpec, Since, Source, SourceError, SourceSize,
    SourceSpec, Sources, redact,
};

use self::registration::{Drift, check_strategy, columns_of, overlap_text, schedule_of};
use self::watermark::SyncState;
use crate::meta::{Collection, Meta, MetaError};
use crate::replica::{BatchSource, Merge, Pull, Replica, ReplicaError, StagingTable};
use crate::table_name::{TableName, TableNameError};

/// How often the scheduler looks for due tables.
const TICK: Duration = Duration::from_secs(1);
/// How often old job records are purged.
const HOUSEKEEPING: Duration = Duration::from_secs(3600);

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
    #[error(
        "table '{table}' is being synced by job {job_id}; wait for it or cancel it with sync.cancel"
    )]
    Busy {
        /// Table.
        table: TableName,
        /// Running job.
        job_id: String,
    },
    /// Strategy, schedule or key settings that do not fit the source.
    #[error("{0}")]
    BadSettings(String),
    /// Source columns were removed or retyped.
    #[error(
        "the source of '{table}' changed: {detail}; the replica is unchanged. Register the table \
         again with \"on_schema_change\": \"full_refresh\" to reload it with the new columns"
    )]
    SchemaChanged {
        /// Table.
        table: TableName,
        /// What changed.
        detail: String,
    },
    /// The job was cancelled.
    #[error("cancelled by sync.cancel; the previous replica is intact")]
    Cancelled,
    /// Cancelling a job that is over.
    #[error("job '{job_id}' already {state:?}; only queued or running jobs can be cancelled")]
    NotRunning {
        /// The job.
        job_id: String,
        /// Its final state.
        state: JobState,
    },
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

impl SyncError {
    /// Worth another attempt later.
    fn is_transient(&self) -> bool {
        matches!(self, SyncError::Source(e) if e.is_transient())
    }
}

/// Retry and housekeeping settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Jobs running at once.
    pub parallelism: usize,
    /// Further attempts after a transient failure.
    pub retries: u32,
    /// Wait before the first retry; doubles per attempt.
    pub retry_backoff: Duration,
    /// Longest wait between attempts.
    pub retry_backoff_max: Duration,
    /// Finished jobs older than this are purged (a table's latest are kept).
    pub job_retention: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            parallelism: 2,
            retries: 3,
            retry_backoff: Duration::from_secs(5),
            retry_backoff_max: Duration::from_secs(300),
            job_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Live counters of a running job.
#[derive(Debug, Default)]
struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Debug, Clone)]
struct ActiveJob {
    job_id: String,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

/// A page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<SyncJob>,
    /// Token for the next page.
    pub next_page_token: Option<String>,
}

/// What `table.status` reports.
#[derive(Debug, Clone)]
pub struct TableStatus {
    /// The registration.
    pub registration: TableRegistration,
    /// Rows in the replica now (None before the first sync).
    pub rows: Option<u64>,
    /// Bytes of the replica in the database file (once checkpointed).
    pub bytes: Option<u64>,
    /// The latest job.
    pub last_job: Option<SyncJob>,
    /// The latest successful job.
    pub last_success: Option<SyncJob>,
    /// Committed watermark.
    pub watermark: Option<String>,
    /// Next scheduled run.
    pub next_run: Option<DateTime<Utc>>,
}

/// Registrations, sync jobs and the scheduler.
#[derive(Debug)]
pub struct SyncService {
    meta: Meta,
    /// airlock's data directory: no source may read from inside it (but
    /// for the generated demo files).
    data_dir: PathBuf,
    replica: Arc<Replica>,
    sources: Sources,
    settings: SyncSettings,
    permits: Arc<Semaphore>,
    // Jobs not yet terminal, by table: enforces one job per table, serves
    // live progress and cancellation.
    active: Mutex<HashMap<TableName, ActiveJob>>,
    // Next due time of each scheduled table.
    due: Mutex<BTreeMap<TableName, DateTime<Utc>>>,
    // Registering, removing, starting and recording a job's end change
    // registrations and the active set together; one at a time.
    changes: tokio::sync::Mutex<()>,
}

impl SyncService {
    /// A service; marks jobs left unfinished by a previous process as
    /// failed (interrupted), due at once when their table is scheduled,
    /// and starts the scheduler.
    pub async fn open(
        meta: Meta,
        data_dir: PathBuf,
        replica: Arc<Replica>,
        sources: Sources,
        settings: SyncSettings,
    ) -> Result<Arc<Self>, SyncError> {
        let service = Arc::new(Self {
            meta,
            data_dir,
            replica,
            sources,
            permits: Arc::new(Semaphore::new(settings.parallelism.max(1))),
            settings,
            active: Mutex::new(HashMap::new()),
            due: Mutex::new(BTreeMap::new()),
            changes: tokio::sync::Mutex::new(()),
        });
        let mut interrupted = HashMap::new();
        for mut job in service.meta.list::<SyncJob>(Collection::Jobs).await? {
            if !job.state.is_terminal() {
                job.state = JobState::Failed;
                job.error = Some(
                    "interrupted: the server stopped while this job was running; the previous \
                     replica is intact"
                        .into(),
                );
                job.finished_at = Some(Utc::now());
                job.retry_at = None;
                service
                    .meta
                    .put(Collection::Jobs, &job.job_id, &job)
                    .await?;
                interrupted.insert(job.table.clone(), job.attempt);
            }
        }
        let now = Utc::now();
        for registration in service.registrations().await? {
            let Some(schedule) = &registration.schedule else {
                continue;
            };
            let next = if interrupted.contains_key(&registration.name) {
                Some(now)
            } else {
                let last = service.last_start(&registration).await;
                schedule.next_after(last)
            };
            if let Some(next) = next {
                service.lock_due().insert(registration.name.clone(), next);
            }
        }
        tokio::spawn(scheduler(Arc::downgrade(&service), interrupted));
        Ok(service)
    }

    /// When the table's latest job started (or the table was registered).
    async fn last_start(&self, registration: &TableRegistration) -> DateTime<Utc> {
        let last = match &registration.last_job_id {
            Some(id) => self
                .meta
                .get::<SyncJob>(Collection::Jobs, id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        last.and_then(|j| j.started_at.or(Some(j.created_at)))
            .unwrap_or(registration.created_at)
    }

    /// The sources this service reads.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Registers a table after checking its source, strategy and schedule.
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
        let schedule = schedule_of(request.every, request.cron).map_err(SyncError::BadSettings)?;
        let overlap = overlap_text(request.overlap).map_err(SyncError::BadSettings)?;
        let mut spec = self
            .sources
            .parse(&request.source, request.format, request.csv)?;
        if let SourceSpec::Files(files) = &mut spec {
            let source = FileSource::resolve(files, self.sources.object_store_options())?;
            if let Some(path) = source.local_path() {
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                if path.starts_with(&self.data_dir) && !path.starts_with(self.data_dir.join("demo"))
                {
                    return Err(SourceError::Protected(redact(&files.url)).into());
                }
            }
            // Settled once, so later syncs read the files the same way.
            files.format = Some(source.format());
        }
        let source = self.sources.open(&spec)?;
        let schema = source.schema().await?;
        check_strategy(
            request.strategy,
            request.cursor.as_deref(),
            overlap.as_deref(),
            &request.primary_key,
            &schema,
        )
        .map_err(SyncError::BadSettings)?;
        let columns = columns_of(&schema)?;
        let registration = TableRegistration {
            name: name.clone(),
            source: spec,
            primary_key: request.primary_key,
            strategy: request.strategy,
            cursor: request.cursor,
            overlap,
            on_schema_change: request.on_schema_change,
            schedule,
            columns,
            created_by: caller.to_string(),
            created_at: Utc::now(),
            last_job_id: None,
            last_success_job_id: None,
        };
        self.meta
            .put(Collection::Tables, &name.to_string(), &registration)
            .await?;
        self.reschedule(&registration, registration.created_at);
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
                job_id: active.job_id.clone(),
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
        self.lock_due().remove(name);
        Ok(dropped)
    }

    /// Sets or clears a table's schedule.
    pub async fn set_schedule(
        &self,
        name: &TableName,
        schedule: Option<Schedule>,
    ) -> Result<(TableRegistration, Option<DateTime<Utc>>), SyncError> {
        if let Some(schedule) = &schedule {
            schedule.validate().map_err(SyncError::BadSettings)?;
        }
        let _changes = self.changes.lock().await;
        let mut registration = self.registration(name).await?;
        registration.schedule = schedule;
        self.meta
            .put(Collection::Tables, &name.to_string(), &registration)
            .await?;
        let next = self.reschedule(&registration, Utc::now());
        Ok((registration, next))
    }

    fn reschedule(
        &self,
        registration: &TableRegistration,
        from: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let next = registration
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(from));
        let mut due = self.lock_due();
        match next {
            Some(next) => due.insert(registration.name.clone(), next),
            None => due.remove(&registration.name),
        };
        next
    }

    /// Starts a sync of a table, or returns the job already queued or
    /// running for it (`false` in the second element).
    pub async fn start(self: &Arc<Self>, name: &TableName) -> Result<(SyncJob, bool), SyncError> {
        self.start_with(name, Trigger::Manual, 1).await
    }

    async fn start_with(
        self: &Arc<Self>,
        name: &TableName,
        trigger: Trigger,
        attempt: u32,
    ) -> Result<(SyncJob, bool), SyncError> {
        let _changes = self.changes.lock().await;
        let mut registration = self.registration(name).await?;
        let job = SyncJob::new(name.clone(), registration.strategy, trigger, attempt);
        let progress = Arc::new(Progress::default());
        let cancel = CancellationToken::new();
        let running = {
            let mut active = self.lock_active();
            match active.get(name) {
                Some(running) => Some(running.job_id.clone()),
                None => {
                    active.insert(
                        name.clone(),
                        ActiveJob {
                            job_id: job.job_id.clone(),
                            progress: Arc::clone(&progress),
                            cancel: cancel.clone(),
                        },
                    );
                    None
                }
            }
        };
        if let Some(job_id) = running {
            return Ok((self.status(&job_id).await?, false));
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
        let span = tracing::info_span!("sync", job_id = %job.job_id, table = %job.table);
        tokio::spawn(service.run(job.clone(), progress, cancel).instrument(span));
        Ok((job, true))
    }

    /// Cancels a queued or running job. Returns it as it is now; it ends
    /// `cancelled` shortly after, unless it was already committing.
    pub async fn cancel(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        let job = self.status(job_id).await?;
        let active = self.lock_active().get(&job.table).cloned();
        match active {
            Some(active) if active.job_id == job_id => {
                active.cancel.cancel();
                Ok(job)
            }
            _ => Err(SyncError::NotRunning {
                job_id: job_id.to_string(),
                state: job.state,
            }),
        }
    }

    /// A job with live counters if it is running.
    pub async fn status(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        let mut job: SyncJob = self
            .meta
            .get(Collection::Jobs, job_id)
            .await?
            .ok_or_else(|| SyncError::NoSuchJob(job_id.to_string()))?;
        self.add_live_counters(&mut job);
        Ok(job)
    }

    /// Rows and bytes so far, for a job that is still going.
    fn add_live_counters(&self, job: &mut SyncJob) {
        if !job.state.is_terminal()
            && let Some(active) = self.lock_active().get(&job.table)
            && active.job_id == job.job_id
        {
            job.rows = active.progress.rows.load(Ordering::Relaxed);
            job.bytes = active.progress.bytes.load(Ordering::Relaxed);
        }
    }

    /// Jobs, newest first, filtered and paginated.
    pub async fn jobs(&self, query: JobQuery) -> Result<JobPage, SyncError> {
        let table = query.table.as_deref().map(TableName::parse).transpose()?;
        let state = match query.state.as_deref() {
            None => None,
            Some(text) => Some(JobState::parse(text).ok_or_else(|| {
                SyncError::BadSettings(format!(
                    "unknown job state '{text}'; use queued, running, succeeded, failed or cancelled"
                ))
            })?),
        };
        let limit = query.limit.unwrap_or(job::DEFAULT_PAGE);
        if limit == 0 || limit > job::MAX_PAGE {
            return Err(SyncError::BadSettings(format!(
                "limit must be between 1 and {}",
                job::MAX_PAGE
            )));
        }
        let offset = match query.page_token.as_deref() {
            None => 0,
            Some(token) => token.parse::<usize>().map_err(|_| {
                SyncError::BadSettings(format!(
                    "page_token '{token}' is not one this server gave; start without it"
                ))
            })?,
        };
        let mut jobs: Vec<SyncJob> = self
            .meta
            .list::<SyncJob>(Collection::Jobs)
            .await?
            .into_iter()
            .filter(|j| table.as_ref().is_none_or(|t| &j.table == t))
            .filter(|j| state.is_none_or(|s| j.state == s))
            .collect();
        jobs.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.job_id.cmp(&a.job_id))
        });
        let total = jobs.len();
        let mut page: Vec<SyncJob> = jobs.into_iter().skip(offset).take(limit).collect();
        for job in &mut page {
            self.add_live_counters(job);
        }
        let next = offset + page.len();
        Ok(JobPage {
            jobs: page,
            next_page_token: (next < total).then(|| next.to_string()),
        })
    }

    /// Freshness and size of a table.
    pub async fn table_status(&self, name: &TableName) -> Result<TableStatus, SyncError> {
        let registration = self.registration(name).await?;
        let job = |id: &Option<String>| {
            let id = id.clone();
            async move {
                match id {
                    Some(id) => self.status(&id).await.ok(),
                    None => None,
                }
            }
        };
        let last_job = job(&registration.last_job_id).await;
        let last_success = job(&registration.last_success_job_id).await;
        let replica = Arc::clone(&self.replica);
        let target = name.clone();
        let (rows, bytes, state) = tokio::task::spawn_blocking(move || {
            let info = replica.tables().get(&target).cloned();
            let bytes = info
                .as_ref()
                .and_then(|i| replica.table_bytes(&i.physical).ok());
            let state = replica.sync_state(&target).ok().flatten();
            (info.map(|i| i.rows), bytes, state)
        })
        .await
        .map_err(|e| SyncError::Task(e.to_string()))?;
        let watermark = state
            .and_then(|s| serde_json::from_str::<SyncState>(&s).ok())
            .map(|s| s.watermark);
        let next_run = self.lock_due().get(name).copied();
        Ok(TableStatus {
            registration,
            rows,
            bytes,
            last_job,
            last_success,
            watermark,
            next_run,
        })
    }

    /// The tables of a Snowflake schema (`sources.list_tables`).
    pub async fn list_source_tables(
        &self,
        connection: &str,
        database: &str,
        schema: &str,
    ) -> Result<Vec<snowflake::SourceTable>, SyncError> {
        Ok(self
            .sources
            .snowflake()
            .list_tables(connection, database, schema)
            .await?)
    }

    /// Waits until a job is terminal (used by `--demo` and tests).
    pub async fn wait(&self, job_id: &str) -> Result<SyncJob, SyncError> {
        loop {
            let job = self.status(job_id).await?;
            if job.state.is_terminal() {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn record(&self, job: &SyncJob) {
        if let Err(e) = self.meta.put(Collection::Jobs, &job.job_id, job).await {
            tracing::error!(job_id = %job.job_id, error = %e, "could not record the job");
        }
    }

    async fn run(
        self: Arc<Self>,
        mut job: SyncJob,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) {
        // Whatever happens below, even a panic, the table is free again after.
        let _active = ActiveEntry {
            service: Arc::clone(&self),
            table: job.table.clone(),
        };
        let started = Instant::now();
        let result = loop {
            // Waiting for a slot is cancellable; loading checks the token itself.
            let permit = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(SyncError::Cancelled),
                permit = Arc::clone(&self.permits).acquire_owned() => permit,
            };
            let Ok(_permit) = permit else {
                break Err(SyncError::Task("the sync service is shutting down".into()));
            };
            job.state = JobState::Running;
            job.retry_at = None;
            job.started_at.get_or_insert_with(Utc::now);
            self.record(&job).await;
            let result = self.sync_once(&mut job, &progress, &cancel).await;
            match result {
                Err(e) if e.is_transient() && job.attempt <= self.settings.retries => {
                    let wait = job::backoff(
                        self.settings.retry_backoff,
                        self.settings.retry_backoff_max,
                        job.attempt,
                    );
                    tracing::warn!(error = %e, attempt = job.attempt, wait_ms = wait.as_millis() as u64, "transient sync failure; retrying");
                    job.attempt += 1;
                    job.state = JobState::Queued;
                    job.error = Some(e.to_string());
                    job.retry_at = chrono::Duration::from_std(wait)
                        .ok()
                        .map(|w| Utc::now() + w);
                    progress.rows.store(0, Ordering::Relaxed);
                    progress.bytes.store(0, Ordering::Relaxed);
                    self.record(&job).await;
                    tokio::select! {
                        () = cancel.cancelled() => break Err(SyncError::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                other => break other,
            }
        };
        job.finished_at = Some(Utc::now());
        job.retry_at = None;
        match result {
            Ok(()) => {
                job.state = JobState::Succeeded;
                job.error = None;
                tracing::info!(
                    rows = job.rows,
                    table_rows = job.table_rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sync succeeded"
                );
            }
            Err(SyncError::Cancelled) => {
                job.state = JobState::Cancelled;
                job.error = Some(SyncError::Cancelled.to_string());
                tracing::info!("sync cancelled");
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(e.to_string());
                tracing::warn!(error = %e, "sync failed");
            }
        }
        if job.state != JobState::Succeeded {
            job.rows = progress.rows.load(Ordering::Relaxed);
            job.bytes = progress.bytes.load(Ordering::Relaxed);
        }
        self.record(&job).await;
    }

    /// One attempt: read the source, load a new version, commit it with
    /// its watermark, record the columns.
    async fn sync_once(
        &self,
        job: &mut SyncJob,
        progress: &Arc<Progress>,
        cancel: &CancellationToken,
    ) -> Result<(), SyncError> {
        let registration = self.registration(&job.table).await?;
        let source = self.sources.open(&registration.source)?;
        let schema = source.schema().await?;
        if let Ok(size) = source.size().await {
            job.files = size.files.unwrap_or(0);
            job.source_bytes = size.bytes.unwrap_or(0);
            job.source_rows = size.rows;
        }
        let columns = columns_of(&schema)?;
        let drift = if registration.columns.is_empty() {
            Drift::default()
        } else {
            Drift::between(&registration.columns, &columns)
        };
        let mut strategy = registration.strategy;
        if drift.is_breaking() {
            match registration.on_schema_change {
                OnSchemaChange::Fail => {
                    return Err(SyncError::SchemaChanged {
                        table: job.table.clone(),
                        detail: drift.describe(),
                    });
                }
                OnSchemaChange::FullRefresh => {
                    tracing::info!(change = %drift.describe(), "source columns changed; reloading the whole table");
                    strategy = Strategy::Full;
                }
            }
        }
        job.strategy = strategy;
        job.added_columns = drift.added.clone();

        // The committed watermark, if it belongs to this table's cursor.
        let cursor = registration.cursor.clone();
        let cursor_type = cursor
            .as_deref()
            .and_then(|c| schema.field_with_name(c).ok())
            .map(|f| f.data_type().clone());
        let replica = Arc::clone(&self.replica);
        let table = job.table.clone();
        let stored = tokio::task::spawn_blocking(move || replica.sync_state(&table))
            .await
            .map_err(|e| SyncError::Task(e.to_string()))??
            .and_then(|s| serde_json::from_str::<SyncState>(&s).ok())
            .filter(|s| Some(&s.cursor) == cursor.as_ref());
        let has_replica = self.replica.tables().contains_key(&job.table);
        let before = match (&stored, &cursor_type) {
            (Some(state), Some(data_type)) if has_replica => Some(
                watermark::from_text(&state.watermark, data_type)
                    .map_err(SyncError::BadSettings)?,
            ),
            _ => None,
        };
        job.watermark_before = stored.map(|s| s.watermark);
        let since = match (&before, &cursor, strategy) {
            (Some(value), Some(column), Strategy::Incremental | Strategy::Append) => Some(Since {
                column: column.clone(),
                value: match (&registration.overlap, strategy) {
                    (Some(overlap), Strategy::Incremental) => {
                        watermark::lower_bound(value, overlap).map_err(SyncError::BadSettings)?
                    }
                    _ => value.clone(),
                },
                inclusive: strategy == Strategy::Incremental,
            }),
            _ => None,
        };
        let plan = CommitPlan {
            merge: match (&since, strategy) {
                (Some(_), Strategy::Incremental) => Merge::Upsert {
                    key: registration.primary_key.clone(),
                    cursor: cursor.clone().unwrap_or_default(),
                },
                (Some(_), Strategy::Append) => Merge::Append,
                _ => Merge::Replace,
            },
            cursor,
            before: if since.is_some() { before } else { None },
            columns_added: !drift.added.is_empty(),
        };
        let mut stream = source.extract(Arc::clone(&schema), since.as_ref()).await?;

        // The writer runs on the blocking pool, where DuckDB pulls batches
        // from a small channel: a few batches in flight, so memory stays
        // bounded.
        let (tx, rx) = mpsc::channel::<Load>(4);
        let replica = Arc::clone(&self.replica);
        let table = job.table.clone();
        let received = Received {
            rx,
            finished: Arc::new(AtomicBool::new(false)),
        };
        let writer = tokio::task::spawn_blocking(move || -> Result<Committed, SyncError> {
            let mut staging = StagingTable::create(&replica, &table, &schema)?;
            let finished = Arc::clone(&received.finished);
            staging.load(received)?;
            if !finished.load(Ordering::Acquire) {
                // The reader stopped without Finish: abandon (Drop removes
                // staging).
                return Err(SyncError::Cancelled);
            }
            plan.commit(staging)
        });

        let mut read_error = None;
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    read_error = Some(SyncError::Cancelled);
                    break;
                }
                next = stream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(batch)) => {
                    let rows = batch.num_rows() as u64;
                    let bytes = batch.get_array_memory_size() as u64;
                    if tx.send(Load::Batch(batch)).await.is_err() {
                        break; // The writer failed; its error is reported below.
                    }
                    progress.rows.fetch_add(rows, Ordering::Relaxed);
                    progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                    // File sources decode inside this task, and DuckDB now
                    // takes batches as fast as they come: let the runtime's
                    // other tasks (requests, a cancel) in between batches.
                    tokio::task::yield_now().await;
                }
                Some(Err(e)) => {
                    read_error = Some(e.into());
                    break;
                }
            }
        }
        if read_error.is_none() {
            // Ignored if the writer already failed; its error wins below.
            let _ = tx.send(Load::Finish).await;
        }
        drop(tx);
        drop(stream);
        let written = writer.await.map_err(|e| SyncError::Task(e.to_string()))?;
        let committed = match (read_error, written) {
            (Some(e), _) => return Err(e),
            (None, result) => result?,
        };
        job.rows = progress.rows.load(Ordering::Relaxed);
        job.bytes = progress.bytes.load(Ordering::Relaxed);
        job.table_rows = Some(committed.table_rows);
        job.watermark_after = committed.watermark.or(job.watermark_before.clone());

        // Remember the columns the replica now has.
        let _changes = self.changes.lock().await;
        let mut registration = self.registration(&job.table).await?;
        registration.columns = columns;
        registration.last_success_job_id = Some(job.job_id.clone());
        self.meta
            .put(Collection::Tables, &job.table.to_string(), &registration)
            .await?;
        Ok(())
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, ActiveJob>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_due(&self) -> std::sync::MutexGuard<'_, BTreeMap<TableName, DateTime<Utc>>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the syncs that are due; returns how many started.
    async fn run_due(self: &Arc<Self>, interrupted: &mut HashMap<TableName, u32>) -> usize {
        let now = Utc::now();
        let due: Vec<TableName> = self
            .lock_due()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut started = 0;
        for name in due {
            let (trigger, attempt) = match interrupted.remove(&name) {
                Some(attempt) => (Trigger::Recovery, attempt + 1),
                None => (Trigger::Schedule, 1),
            };
            match self.start_with(&name, trigger, attempt).await {
                Ok((_, true)) => started += 1,
                Ok((_, false)) => {} // Still running from before: skip this turn.
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "scheduled sync could not start")
                }
            }
            if let Ok(registration) = self.registration(&name).await {
                self.reschedule(&registration, now);
            } else {
                self.lock_due().remove(&name);
            }
        }
        started
    }

    /// Deletes finished jobs past the retention, keeping each table's
    /// latest and latest successful job.
    async fn purge_jobs(&self) -> Result<usize, SyncError> {
        let Ok(retention) = chrono::Duration::from_std(self.settings.job_retention) else {
            return Ok(0);
        };
        let cutoff = Utc::now() - retention;
        let keep: Vec<String> = self
            .registrations()
            .await?
            .into_iter()
            .flat_map(|r| [r.last_job_id, r.last_success_job_id])
            .flatten()
            .collect();
        let mut purged = 0;
        for job in self.meta.list::<SyncJob>(Collection::Jobs).await? {
            let finished = job.finished_at.unwrap_or(job.created_at);
            if job.state.is_terminal() && finished < cutoff && !keep.contains(&job.job_id) {
                self.meta.delete(Collection::Jobs, &job.job_id).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Runs due syncs every tick and housekeeping hourly, until the service goes.
async fn scheduler(service: Weak<SyncService>, mut interrupted: HashMap<TableName, u32>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_housekeeping: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        service.run_due(&mut interrupted).await;
        if last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING) {
            last_housekeeping = Some(Instant::now());
            match service.purge_jobs().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged old sync jobs"),
                Err(e) => tracing::warn!(error = %e, "could not purge old sync jobs"),
            }
        }
    }
}

/// How the writer commits, decided before reading.
struct CommitPlan {
    merge: Merge,
    cursor: Option<String>,
    before: Option<ScalarValue>,
    columns_added: bool,
}

struct Committed {
    table_rows: u64,
    watermark: Option<String>,
}

impl CommitPlan {
    /// Commits the load with its watermark: the larger of the previous one
    /// and the largest cursor loaded. A merge that loaded nothing (and
    /// adds no column) changes nothing and commits nothing.
    fn commit(self, staging: StagingTable) -> Result<Committed, SyncError> {
        let merging = self.merge != Merge::Replace;
        if merging && staging.rows() == 0 && !self.columns_added {
            return Ok(Committed {
                table_rows: staging.base_rows(),
                watermark: self.before.as_ref().and_then(watermark::to_text),
            });
        }
        let watermark = match &self.cursor {
            Some(cursor) => {
                let loaded = staging.max_of(cursor)?;
                let largest = match (self.before, loaded) {
                    (Some(a), Some(b)) => Some(if b > a { b } else { a }),
                    (a, b) => a.or(b),
                };
                largest.as_ref().and_then(watermark::to_text)
            }
            None => None,
        };
        let state = match (&self.cursor, &watermark) {
            (Some(cursor), Some(watermark)) => Some(
                serde_json::to_string(&SyncState {
                    cursor: cursor.clone(),
                    watermark: watermark.clone(),
                })
                .map_err(|e| SyncError::Task(e.to_string()))?,
            ),
            _ => None,
        };
        let table_rows = staging.commit_merge(&self.merge, state.as_deref())?;
        Ok(Committed {
            table_rows,
            watermark,
        })
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

/// The writer's end of the load channel, as DuckDB pulls from it.
struct Received {
    rx: mpsc::Receiver<Load>,
    // Set on Finish: every batch arrived.
    finished: Arc<AtomicBool>,
}

/// How often a wait with a deadline looks at the channel.
const POLL: Duration = Duration::from_millis(1);

impl BatchSource for Received {
    fn next_batch(&mut self, patience: Option<Duration>) -> Pull {
        let message = match patience {
            // Only `StagingTable::load` waits without a deadline, on the
            // blocking pool, where blocking is allowed.
            None => self.rx.blocking_recv(),
            // DuckDB's threads wait here, inside a C callback: polling,
            // rather than a runtime timer, keeps this free of panics (a
            // runtime shutting down panics its timers; a panic here would
            // abort the process).
            Some(patience) => {
                let deadline = Instant::now() + patience;
                loop {
                    match self.rx.try_recv() {
                        Ok(message) => break Some(message),
                        Err(mpsc::error::TryRecvError::Disconnected) => break None,
                        Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                            return Pull::Waiting;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(POLL),
                    }
                }
            }
        };
        match message {
            Some(Load::Batch(batch)) => Pull::Batch(batch),
            Some(Load::Finish) => {
                self.finished.store(true, Ordering::Release);
                Pull::Done
            }
            None => Pull::Done,
        }
    }
}

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
//!
//! Where things live: [`SyncService`] and [`SyncError`] here; `settings`
//! (the `[sync]` section), `registry` (registering, removing and
//! scheduling tables, `table.status`), `connections` (Snowflake accounts
//! and object stores of the config file and of `sources.create`, secrets
//! sealed), `jobs` (starting, cancelling and
//! listing jobs, live counters), `runner` (one job's attempts, retries and
//! a single sync), `pipeline` (the writer side of a load and its commit)
//! and `scheduler` (due syncs and purging old jobs).

pub mod connections;
mod job;
mod jobs;
mod pipeline;
mod registration;
mod registry;
mod runner;
mod schedule;
mod scheduler;
mod settings;
mod snapshots;
pub mod snowflake;
mod source;
mod watermark;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

pub use connections::{
    ConnectionError, ConnectionKind, ConnectionRequest, ConnectionView, Connections, TestOutcome,
};
pub use job::{JobQuery, JobState, SyncJob, Trigger};
pub use jobs::JobPage;
pub use registration::{
    ColumnRecord, OnSchemaChange, RegisterRequest, Strategy, TableRegistration,
};
pub use registry::TableStatus;
pub use schedule::Schedule;
pub use settings::SyncSettings;
pub use snapshots::{
    Delta, DeltaOp, Manifest, Published, PublishedKind, SnapshotFile, SnapshotStore,
};
pub use snowflake::{SnowflakeConfig, SnowflakeConnections};
pub use source::{
    CsvOptions, FileFormat, FileSource, FileSpec, Since, Source, SourceError, SourceSize,
    SourceSpec, Sources,
};

use self::jobs::ActiveJob;
use crate::meta::{Collection, Meta, MetaError};
use crate::replica::{Replica, ReplicaError};
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
    /// Managing connections.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A background task died.
    #[error("sync task failed: {0}")]
    Task(String),
    /// This node did not load the asked epoch in time.
    #[error(
        "this node serves epoch {served} of '{table}', not yet {epoch} (waited {waited_ms} ms); \
         wait longer, or ask the writer"
    )]
    EpochNotServed {
        /// Table.
        table: TableName,
        /// The epoch asked for.
        epoch: u64,
        /// The epoch served (0: none yet).
        served: u64,
        /// How long the node waited.
        waited_ms: u64,
    },
    /// A ticket was planned against a newer epoch than this node serves.
    #[error(
        "this node serves epoch {served} of '{table}', older than epoch {planned} the query was \
         planned at (waited {waited_ms} ms); retry: another node, or this one shortly, serves it"
    )]
    EpochBehind {
        /// Table.
        table: TableName,
        /// The epoch the ticket was planned at.
        planned: u64,
        /// The epoch served (0: none).
        served: u64,
        /// How long the node waited.
        waited_ms: u64,
    },
}

impl SyncError {
    /// Worth another attempt later.
    fn is_transient(&self) -> bool {
        matches!(self, SyncError::Source(e) if e.is_transient())
    }
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
    // The scheduler's task, set once it is started.
    scheduler: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    /// This node's name, recorded in the jobs it runs.
    node: String,
    /// Whether this node is the writer (the term) or not (none).
    role: tokio::sync::watch::Receiver<Option<u64>>,
    /// While this node is the writer: the metadata, fenced by its term.
    /// Jobs run and are recorded only through it.
    writer: Mutex<Option<(u64, Meta)>>,
    /// Scheduled tables whose job a previous writer left unfinished, with
    /// that job's attempt: due at once, as a recovery.
    interrupted: Mutex<HashMap<TableName, u32>>,
    /// Where committed versions are published for the other nodes (none
    /// on a single node).
    snapshots: Option<SnapshotStore>,
    /// The epochs this node's replica serves.
    served: snapshots::Served,
    /// Tables to bring up to date (none: all), for the loader task.
    loads: tokio::sync::mpsc::UnboundedSender<Option<TableName>>,
}

impl SyncService {
    /// A service, and its scheduler. Syncs run only while this node is the
    /// writer (`role`, from [`Meta::campaign`]; a single node is always the
    /// writer): on taking over, jobs a previous writer left unfinished are
    /// marked failed (interrupted), and their tables are due at once when
    /// scheduled.
    pub async fn open(
        meta: Meta,
        data_dir: PathBuf,
        replica: Arc<Replica>,
        sources: Sources,
        settings: SyncSettings,
        node: String,
        snapshots: Option<SnapshotStore>,
    ) -> Result<Arc<Self>, SyncError> {
        let role = meta.campaign(&node);
        let (loads, to_load) = tokio::sync::mpsc::unbounded_channel();
        let served = snapshots::Served::open(&data_dir);
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
            scheduler: std::sync::OnceLock::new(),
            node,
            role,
            writer: Mutex::new(None),
            interrupted: Mutex::new(HashMap::new()),
            snapshots,
            served,
            loads,
        });
        // Restore every published table, then follow new epochs.
        tokio::spawn(snapshots::loader(Arc::downgrade(&service), to_load));
        let _ = service.loads.send(None);
        // A single node is the writer from the start: take over before
        // serving, so the first sync.start runs at once.
        let term = *service.role.borrow();
        if let Some(term) = term {
            service.catch_up_all().await?;
            service.take_over(term).await?;
        }
        let scheduler = tokio::spawn(scheduler::scheduler(Arc::downgrade(&service)));
        // Set only here, once: it cannot be set already.
        let _ = service.scheduler.set(scheduler);
        Ok(service)
    }

    /// Whether the scheduler still runs (it ends only if it panicked).
    pub fn scheduler_running(&self) -> bool {
        self.scheduler.get().is_some_and(|task| !task.is_finished())
    }

    /// Whether the metadata store answers a read.
    pub async fn check_metadata(&self) -> Result<(), SyncError> {
        self.meta
            .get::<serde_json::Value>(Collection::Jobs, "readiness-probe")
            .await?;
        Ok(())
    }

    /// The sources this service reads.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

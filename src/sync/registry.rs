//! Table registrations: registering (after checking the source, strategy
//! and schedule), removing, setting a schedule, `table.status` and listing
//! a Snowflake schema's tables.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::registration::{check_strategy, columns_of, overlap_text, schedule_of};
use super::watermark::SyncState;
use super::{
    RegisterRequest, Schedule, SourceError, SourceSpec, SyncError, SyncJob, SyncService,
    TableRegistration, snowflake,
};
use crate::meta::Collection;
use crate::table_name::{TableName, is_reserved_schema};

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
    /// The epoch this node serves (cluster).
    pub epoch: Option<u64>,
}

impl SyncService {
    /// Registers a table after checking its source, strategy and schedule.
    pub async fn register(
        &self,
        caller: &str,
        request: RegisterRequest,
    ) -> Result<TableRegistration, SyncError> {
        let _changes = self.changes.lock().await;
        let name = TableName::parse(&request.name)?;
        if is_reserved_schema(name.schema()) {
            return Err(SyncError::ReservedSchema(name.schema().to_string()));
        }
        if self.registration(&name).await.is_ok() {
            return Err(SyncError::AlreadyRegistered(name));
        }
        let schedule = schedule_of(request.every, request.cron).map_err(SyncError::BadSettings)?;
        let overlap = overlap_text(request.overlap).map_err(SyncError::BadSettings)?;
        let mut spec = self.sources.parse(
            &request.source,
            request.format,
            request.csv,
            request.connection,
        )?;
        if let SourceSpec::Files(files) = &mut spec {
            let source = self.sources.files(files)?;
            if let Some(path) = source.local_path() {
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                if path.starts_with(&self.data_dir) && !path.starts_with(self.data_dir.join("demo"))
                {
                    return Err(SourceError::Protected(crate::redact::url(&files.url)).into());
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
        // A job queued or running on another node of a cluster.
        if let Some(job) = self.unfinished_job(name).await? {
            return Err(SyncError::Busy {
                table: name.clone(),
                job_id: job.job_id,
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
        // The other nodes of a cluster drop their copy when the published
        // version goes.
        self.meta
            .delete(Collection::Snapshots, &name.to_string())
            .await?;
        self.served.forget(name);
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

    pub(super) fn reschedule(
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

    /// When each registered table's last successful sync finished (none
    /// for a table never synced).
    pub async fn last_synced(&self) -> Result<Vec<(TableName, Option<DateTime<Utc>>)>, SyncError> {
        let mut tables = Vec::new();
        for registration in self.registrations().await? {
            let finished = match &registration.last_success_job_id {
                Some(id) => self.status(id).await.ok().and_then(|job| job.finished_at),
                None => None,
            };
            tables.push((registration.name, finished));
        }
        Ok(tables)
    }

    /// Sync jobs queued or running now.
    pub fn active_jobs(&self) -> usize {
        self.lock_active().len()
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
            epoch: self.served_epoch(name),
        })
    }

    /// The tables of a Snowflake schema (`sources.list_tables`).
    pub async fn list_source_tables(
        &self,
        connection: &str,
        database: &str,
        schema: &str,
    ) -> Result<Vec<snowflake::SourceTable>, SyncError> {
        let client = self.sources.connections().snowflake(connection)?;
        Ok(snowflake::list_tables(&client, connection, database, schema).await?)
    }

    /// Removes a runtime connection no registered table reads through.
    pub async fn delete_connection(&self, name: &str) -> Result<(), SyncError> {
        // Holding the registration lock: no table can start using the
        // connection between the check and the removal.
        let _changes = self.changes.lock().await;
        let users: Vec<String> = self
            .registrations()
            .await?
            .into_iter()
            .filter(|r| r.source.connection() == Some(name))
            .map(|r| r.name.to_string())
            .collect();
        Ok(self.sources.connections().delete(name, &users).await?)
    }
}

//! Table actions: `table.register`, `table.list`, `table.remove`,
//! `table.status`, and the primary keys metadata
//! answers report.
//!
//! Registrations and replicas belong to `sync`, what a principal may see to
//! `query`; this file parses the bodies and shapes the answers. Admins see
//! registrations ([`RegistrationView`]), everyone else only the tables they
//! may query, so neither answer confirms a table the caller cannot see.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sync::JobView;
use super::{Action, ActionError, Actions, Empty, parse};
use crate::principal::Principal;
use crate::sync::{
    ColumnRecord, CsvOptions, FileFormat, OnSchemaChange, RegisterRequest, Schedule, SourceSpec,
    Strategy, SyncError, SyncJob, TableRegistration, TableStatus,
};
use crate::table_name::{AIRLOCK_SCHEMA, TableName};

/// The body of `table.remove` and `table.status`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NameRequest {
    name: String,
}

/// A registration as `table.register` and `table.list` show it.
#[derive(Debug, Serialize)]
pub(super) struct RegistrationView {
    name: TableName,
    /// The source with credentials removed.
    source: String,
    primary_key: Vec<String>,
    strategy: Strategy,
    cursor: Option<String>,
    overlap: Option<String>,
    on_schema_change: OnSchemaChange,
    schedule: Option<Schedule>,
    columns: Vec<ColumnRecord>,
    created_by: String,
    created_at: DateTime<Utc>,
    /// The latest job (always null in `table.register`'s answer).
    last_sync: Option<JobView>,
    /// `format` and `csv`, present for file sources only.
    #[serde(flatten)]
    file_options: Option<FileOptionsView>,
}

/// How a file source is read.
#[derive(Debug, Serialize)]
struct FileOptionsView {
    format: Option<FileFormat>,
    csv: CsvOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
}

impl RegistrationView {
    fn new(registration: TableRegistration, last_job: Option<SyncJob>) -> Self {
        let source = registration.source.display();
        let file_options = match registration.source {
            SourceSpec::Files(files) => Some(FileOptionsView {
                format: files.format,
                csv: files.csv,
                connection: files.connection,
            }),
            SourceSpec::Snowflake(_) => None,
        };
        Self {
            name: registration.name,
            source,
            primary_key: registration.primary_key,
            strategy: registration.strategy,
            cursor: registration.cursor,
            overlap: registration.overlap,
            on_schema_change: registration.on_schema_change,
            schedule: registration.schedule,
            columns: registration.columns,
            created_by: registration.created_by,
            created_at: registration.created_at,
            last_sync: last_job.map(JobView::from),
            file_options,
        }
    }
}

/// `table.list`: registrations for admins, queryable tables for others.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum TableListView {
    /// What an admin sees.
    Registered { tables: Vec<RegisteredTableView> },
    /// What anyone else sees.
    Queryable { tables: Vec<QueryableTableView> },
}

/// A registration in an admin's `table.list`.
#[derive(Debug, Serialize)]
pub(super) struct RegisteredTableView {
    #[serde(flatten)]
    registration: RegistrationView,
    /// Whether the replica holds the table now.
    replicated: bool,
}

/// A table a non-admin may query, in `table.list`.
#[derive(Debug, Serialize)]
pub(super) struct QueryableTableView {
    /// `schema.table`.
    name: String,
    /// What the table holds, when an admin described it.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// The columns the caller sees.
    columns: Vec<String>,
    /// When its last successful sync finished (its data is as of then);
    /// absent for tables that were never synced (the demo, artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    synced_at: Option<DateTime<Utc>>,
}

/// `table.remove`.
#[derive(Debug, Serialize)]
pub(super) struct RemovedView {
    name: TableName,
    /// Always true: the registration is gone.
    removed: bool,
    /// Whether there was a replica to drop.
    replica_dropped: bool,
}

/// `table.status`: freshness and size of a table.
#[derive(Debug, Serialize)]
pub(super) struct TableStatusView {
    name: TableName,
    source: String,
    strategy: Strategy,
    schedule: Option<Schedule>,
    next_run: Option<DateTime<Utc>>,
    rows: Option<u64>,
    bytes_on_disk: Option<u64>,
    watermark: Option<String>,
    /// Seconds since the last successful sync finished.
    freshness_s: Option<i64>,
    last_success_at: Option<DateTime<Utc>>,
    last_sync: Option<JobView>,
    /// The latest successful job.
    last_success: Option<JobView>,
    /// The epoch of the table this node serves (cluster; see
    /// `sync.wait_epoch`).
    epoch: Option<u64>,
}

impl From<TableStatus> for TableStatusView {
    fn from(status: TableStatus) -> Self {
        let last_success_at = status.last_success.as_ref().and_then(|job| job.finished_at);
        Self {
            name: status.registration.name,
            source: status.registration.source.display(),
            strategy: status.registration.strategy,
            schedule: status.registration.schedule,
            next_run: status.next_run,
            rows: status.rows,
            bytes_on_disk: status.bytes,
            watermark: status.watermark,
            freshness_s: last_success_at.map(|at| (Utc::now() - at).num_seconds()),
            last_success_at,
            last_sync: status.last_job.map(JobView::from),
            last_success: status.last_success.map(JobView::from),
            epoch: status.epoch,
        }
    }
}

impl Actions {
    /// The declared primary key of a table the principal can see (empty
    /// for tables it cannot see, so metadata never confirms they exist).
    pub async fn primary_key(&self, principal: &Principal, name: &TableName) -> Vec<String> {
        if self.query.visible_tables(principal).get(name).is_none() {
            return vec![];
        }
        self.sync
            .registration(name)
            .await
            .map(|r| r.primary_key)
            .unwrap_or_default()
    }

    /// `table.register`: registers a table, checking its source's columns.
    pub(super) async fn table_register(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<RegistrationView, ActionError> {
        let request: RegisterRequest = parse(Action::TableRegister, body)?;
        let registration = self.sync.register(&principal.label(), request).await?;
        Ok(RegistrationView::new(registration, None))
    }

    /// `table.list`: what the caller may know about tables.
    pub(super) async fn table_list(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<TableListView, ActionError> {
        let Empty {} = parse(Action::TableList, body)?;
        let visible = self.query.visible_tables(principal);
        if !principal.is_admin() {
            // airlock's own tables are the same for everyone and documented
            // apart; the list is of the data.
            let mut descriptions = self.context.table_descriptions(principal);
            let synced: std::collections::BTreeMap<_, _> =
                self.sync.last_synced().await?.into_iter().collect();
            let tables = visible
                .tables()
                .filter(|(schema, _, _)| *schema != AIRLOCK_SCHEMA)
                .map(|(schema, table, arrow)| {
                    let name = TableName::from_parts(schema, table).ok();
                    QueryableTableView {
                        name: format!("{schema}.{table}"),
                        synced_at: name.as_ref().and_then(|n| synced.get(n).copied().flatten()),
                        description: name.and_then(|n| descriptions.remove(&n)),
                        columns: arrow.fields().iter().map(|f| f.name().clone()).collect(),
                    }
                })
                .collect();
            return Ok(TableListView::Queryable { tables });
        }
        let mut tables = Vec::new();
        for registration in self.sync.registrations().await? {
            // A missing job record (purged, say) must not hide the table.
            let last_job = match &registration.last_job_id {
                Some(id) => self.sync.status(id).await.ok(),
                None => None,
            };
            let replicated = visible.get(&registration.name).is_some();
            tables.push(RegisteredTableView {
                registration: RegistrationView::new(registration, last_job),
                replicated,
            });
        }
        Ok(TableListView::Registered { tables })
    }

    /// `table.remove`: unregisters a table and drops its replica.
    pub(super) async fn table_remove(&self, body: &[u8]) -> Result<RemovedView, ActionError> {
        let NameRequest { name } = parse(Action::TableRemove, body)?;
        let name = TableName::parse(&name).map_err(SyncError::from)?;
        let replica_dropped = self.sync.remove(&name).await?;
        Ok(RemovedView {
            name,
            removed: true,
            replica_dropped,
        })
    }

    /// `table.status`: freshness and size of a table.
    pub(super) async fn table_status(&self, body: &[u8]) -> Result<TableStatusView, ActionError> {
        let NameRequest { name } = parse(Action::TableStatus, body)?;
        let name = TableName::parse(&name).map_err(SyncError::from)?;
        Ok(self.sync.table_status(&name).await?.into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::FileSpec;
    use crate::sync::snowflake::SnowflakeSpec;

    fn registration(source: SourceSpec) -> TableRegistration {
        TableRegistration {
            name: TableName::parse("sales.orders").unwrap(),
            source,
            primary_key: vec!["id".into()],
            strategy: Strategy::Incremental,
            cursor: Some("updated_at".into()),
            overlap: None,
            on_schema_change: OnSchemaChange::Fail,
            schedule: None,
            columns: vec![],
            created_by: "admin:admin".into(),
            created_at: Utc::now(),
            last_job_id: None,
            last_success_job_id: None,
        }
    }

    fn files() -> SourceSpec {
        SourceSpec::Files(FileSpec {
            url: "file:///data/orders.csv".into(),
            format: None,
            csv: CsvOptions::default(),
            connection: None,
        })
    }

    #[test]
    fn file_registrations_show_format_and_csv() {
        let registration = registration(files());
        let created_at = registration.created_at;
        let view = serde_json::to_value(RegistrationView::new(registration, None)).unwrap();
        assert_eq!(
            view,
            json!({
                "name": "sales.orders",
                "source": "file:///data/orders.csv",
                "primary_key": ["id"],
                "strategy": "incremental",
                "cursor": "updated_at",
                "overlap": null,
                "on_schema_change": "fail",
                "schedule": null,
                "columns": [],
                "created_by": "admin:admin",
                "created_at": created_at,
                "last_sync": null,
                "format": null,
                "csv": {"has_header": true, "delimiter": null},
            })
        );
    }

    #[test]
    fn snowflake_registrations_have_no_file_options() {
        let source = SourceSpec::Snowflake(SnowflakeSpec {
            connection: "prod".into(),
            table: "DB.PUBLIC.ORDERS".into(),
        });
        let view = RegisteredTableView {
            registration: RegistrationView::new(registration(source), None),
            replicated: false,
        };
        let view = serde_json::to_value(view).unwrap();
        let keys: Vec<&str> = view
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            !keys.contains(&"format") && !keys.contains(&"csv"),
            "{keys:?}"
        );
        assert_eq!(view["replicated"], false);
        assert_eq!(view["source"], "snowflake://prod/DB.PUBLIC.ORDERS");
        assert_eq!(keys.len(), 13, "{keys:?}");
    }
}

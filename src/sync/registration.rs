//! Table registrations: a source, a strategy, an optional schedule, and
//! the columns as of the last sync (to tell schema drift).

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::Schema;
use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use super::source::{CsvOptions, FileFormat, SourceSpec};
use super::watermark;
use crate::replica::{ReplicaError, duckdb_type};
use crate::table_name::TableName;

/// How a sync brings the replica up to date.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Read everything; swap in the new table atomically.
    #[default]
    Full,
    /// Read rows whose cursor is at or past the watermark (minus the
    /// overlap) and upsert them by primary key.
    Incremental,
    /// Read rows whose cursor is past the watermark and insert them.
    Append,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Full => "full",
            Strategy::Incremental => "incremental",
            Strategy::Append => "append",
        })
    }
}

/// What a sync does when source columns were removed or changed type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnSchemaChange {
    /// Fail the job and name the columns.
    #[default]
    Fail,
    /// Reload the whole table with the new columns.
    FullRefresh,
}

/// A replica column: name and DuckDB type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRecord {
    /// Name.
    pub name: String,
    /// DuckDB type, e.g. `DECIMAL(12,2)`.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The replica columns of a source schema.
pub(super) fn columns_of(schema: &Schema) -> Result<Vec<ColumnRecord>, ReplicaError> {
    schema
        .fields()
        .iter()
        .map(|f| {
            Ok(ColumnRecord {
                name: f.name().clone(),
                data_type: duckdb_type(f.name(), f.data_type())?,
            })
        })
        .collect()
}

/// How the source's columns differ from the replica's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Drift {
    /// New at the source.
    pub added: Vec<String>,
    /// Gone from the source.
    pub removed: Vec<String>,
    /// Changed type: name, old type, new type.
    pub retyped: Vec<(String, String, String)>,
}

impl Drift {
    /// Compares the columns of the last sync with the source's now.
    pub(super) fn between(old: &[ColumnRecord], new: &[ColumnRecord]) -> Self {
        let mut drift = Drift::default();
        for column in new {
            match old.iter().find(|c| c.name == column.name) {
                None => drift.added.push(column.name.clone()),
                Some(before) if before.data_type != column.data_type => drift.retyped.push((
                    column.name.clone(),
                    before.data_type.clone(),
                    column.data_type.clone(),
                )),
                Some(_) => {}
            }
        }
        for column in old {
            if !new.iter().any(|c| c.name == column.name) {
                drift.removed.push(column.name.clone());
            }
        }
        drift
    }

    /// Whether existing columns changed (added ones are always fine).
    pub(super) fn is_breaking(&self) -> bool {
        !self.removed.is_empty() || !self.retyped.is_empty()
    }

    /// The breaking part, for messages.
    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        for (name, old, new) in &self.retyped {
            parts.push(format!("{name} changed from {old} to {new}"));
        }
        parts.join("; ")
    }
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
    /// How syncs bring it up to date.
    #[serde(default)]
    pub strategy: Strategy,
    /// Cursor column (incremental, append).
    #[serde(default)]
    pub cursor: Option<String>,
    /// How far before the watermark an incremental sync re-reads.
    #[serde(default)]
    pub overlap: Option<String>,
    /// What to do when source columns are removed or retyped.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
    /// When it syncs by itself.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Columns as of the last successful sync (or registration).
    #[serde(default)]
    pub columns: Vec<ColumnRecord>,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The latest job started for it.
    pub last_job_id: Option<String>,
    /// The latest job that succeeded.
    #[serde(default)]
    pub last_success_job_id: Option<String>,
}

/// What `table.register` asks for.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// `schema.table`.
    pub name: String,
    /// Source: a file URL or absolute path, or `snowflake://CONNECTION/DB.SCHEMA.TABLE`.
    pub source: String,
    /// Format, when the extension does not tell.
    #[serde(default)]
    pub format: Option<FileFormat>,
    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Primary key columns.
    /// For file sources: the runtime object-store connection to read
    /// them through (`sources.create`).
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// `full` (default), `incremental` or `append`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Cursor column for incremental and append.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Re-read window for incremental: a duration for date/timestamp
    /// cursors, a number for numeric ones.
    #[serde(default)]
    pub overlap: Option<serde_json::Value>,
    /// `fail` (default) or `full_refresh`.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
    /// Sync at this interval, e.g. `"15m"`.
    #[serde(default)]
    pub every: Option<String>,
    /// Sync at the times of this cron expression (UTC).
    #[serde(default)]
    pub cron: Option<String>,
}

impl RegisterRequest {
    /// A full-strategy registration of `source` as `name`, no schedule.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            format: None,
            csv: CsvOptions::default(),
            connection: None,
            primary_key: Vec::new(),
            strategy: Strategy::Full,
            cursor: None,
            overlap: None,
            on_schema_change: OnSchemaChange::Fail,
            every: None,
            cron: None,
        }
    }
}

/// Reads `every`/`cron` into a schedule (at most one of them).
pub(super) fn schedule_of(
    every: Option<String>,
    cron: Option<String>,
) -> Result<Option<Schedule>, String> {
    let schedule = match (every, cron) {
        (Some(_), Some(_)) => return Err("give either every or cron, not both".into()),
        (Some(every), None) => Some(Schedule::Every { every }),
        (None, Some(cron)) => Some(Schedule::Cron { cron }),
        (None, None) => None,
    };
    if let Some(schedule) = &schedule {
        schedule.validate()?;
    }
    Ok(schedule)
}

/// The overlap as text: numbers and duration strings both accepted.
pub(super) fn overlap_text(overlap: Option<serde_json::Value>) -> Result<Option<String>, String> {
    match overlap {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "overlap must be a duration string or a number, not {other}"
        )),
    }
}

/// Checks strategy settings against the source schema.
pub(super) fn check_strategy(
    strategy: Strategy,
    cursor: Option<&str>,
    overlap: Option<&str>,
    primary_key: &[String],
    schema: &Schema,
) -> Result<(), String> {
    for column in primary_key {
        if schema.field_with_name(column).is_err() {
            return Err(format!(
                "primary key column '{column}' is not a column of the source"
            ));
        }
    }
    match (strategy, cursor) {
        (Strategy::Full, Some(_)) => {
            return Err(
                "a cursor applies to the incremental and append strategies, not full".into(),
            );
        }
        (Strategy::Full, None) => {}
        (Strategy::Incremental | Strategy::Append, None) => {
            return Err(format!(
                "the {strategy} strategy needs a cursor column (e.g. \"cursor\": \"updated_at\")"
            ));
        }
        (Strategy::Incremental | Strategy::Append, Some(cursor)) => {
            let field = schema
                .field_with_name(cursor)
                .map_err(|_| format!("cursor column '{cursor}' is not a column of the source"))?;
            if !watermark::is_cursor_type(field.data_type()) {
                return Err(format!(
                    "cursor column '{cursor}' has type {}; a cursor must be a number, date, timestamp or text",
                    field.data_type()
                ));
            }
            if let Some(overlap) = overlap {
                if strategy == Strategy::Append {
                    return Err(
                        "overlap applies to the incremental strategy; append reads strictly past the watermark"
                            .into(),
                    );
                }
                watermark::check_overlap(overlap, field.data_type())?;
            }
        }
    }
    if strategy == Strategy::Incremental && primary_key.is_empty() {
        return Err(
            "the incremental strategy needs a primary_key to upsert by (append needs none)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

    use super::*;

    fn record(name: &str, data_type: &str) -> ColumnRecord {
        ColumnRecord {
            name: name.into(),
            data_type: data_type.into(),
        }
    }

    #[test]
    fn drift_tells_added_removed_and_retyped_columns() {
        let old = [
            record("id", "BIGINT"),
            record("a", "VARCHAR"),
            record("b", "DOUBLE"),
        ];
        let new = [
            record("id", "BIGINT"),
            record("b", "DECIMAL(10,2)"),
            record("c", "DATE"),
        ];
        let drift = Drift::between(&old, &new);
        assert_eq!(drift.added, ["c"]);
        assert_eq!(drift.removed, ["a"]);
        assert_eq!(
            drift.retyped,
            [("b".into(), "DOUBLE".into(), "DECIMAL(10,2)".into())]
        );
        assert!(drift.is_breaking());
        assert_eq!(
            drift.describe(),
            "removed a; b changed from DOUBLE to DECIMAL(10,2)"
        );
        let added_only = Drift::between(&old[..2], &old);
        assert!(!added_only.is_breaking());
        assert_eq!(added_only.added, ["b"]);
    }

    #[test]
    fn strategies_need_the_right_columns() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "updated_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Field::new_list_field(DataType::Int32, true).into()),
                true,
            ),
        ]);
        let pk = ["id".to_string()];
        let ok = |s, c, o, k: &[String]| check_strategy(s, c, o, k, &schema);
        ok(Strategy::Full, None, None, &[]).unwrap();
        ok(Strategy::Incremental, Some("updated_at"), Some("10m"), &pk).unwrap();
        ok(Strategy::Append, Some("id"), None, &[]).unwrap();
        for (strategy, cursor, overlap, key, expected) in [
            (Strategy::Full, Some("id"), None, &pk[..], "not full"),
            (Strategy::Incremental, None, None, &pk[..], "needs a cursor"),
            (
                Strategy::Incremental,
                Some("nope"),
                None,
                &pk[..],
                "'nope' is not a column",
            ),
            (
                Strategy::Incremental,
                Some("tags"),
                None,
                &pk[..],
                "must be a number",
            ),
            (
                Strategy::Incremental,
                Some("updated_at"),
                None,
                &[][..],
                "needs a primary_key",
            ),
            (
                Strategy::Incremental,
                Some("updated_at"),
                Some("3"),
                &pk[..],
                "duration",
            ),
            (
                Strategy::Append,
                Some("id"),
                Some("3"),
                &[][..],
                "append reads strictly",
            ),
        ] {
            let err = ok(strategy, cursor, overlap, key).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}

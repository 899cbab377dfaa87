//! `context.scan`: what each table's columns hold — null fraction,
//! distinct estimate, categories of low-cardinality columns (up to 100
//! values), a few example values — and guesses at primary and foreign keys.
//!
//! A scan is a `job.*` job an admin starts; it reads the replica only
//! through the profiling engine (`table.profile`, whose cache it shares)
//! and a few key checks, all planned and run as the admin. What principals
//! see of it is computed for them: categories and examples come from their
//! own profile of the table (cached per compiled policy), so a filtered
//! agent never sees a value that occurs only in rows it cannot read, and a
//! masked column shows masked values. Stored scans say which table version
//! they describe; `stale` marks one a sync has since replaced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ContextError, ContextService};
use crate::jobs::{JobKind, Running, ToolJob};
use crate::meta::{Collection, Expect, Labels};
use crate::principal::{Principal, TokenKind};
use crate::query::{ColumnProfile, ProfileRequest, TableProfile};
use crate::table_name::{TableName, quote_ident};

/// Values kept as categories of a low-cardinality column.
pub(super) const MAX_CATEGORIES: usize = 100;
/// Example values kept per column.
const EXAMPLES: usize = 3;

/// `context.scan`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// Tables to scan (default: every table).
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Answer when done rather than at once.
    #[serde(default)]
    pub wait: bool,
}

/// One column of a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnScan {
    /// Name.
    pub name: String,
    /// Arrow type.
    pub data_type: String,
    /// Share of NULLs.
    pub null_fraction: f64,
    /// Distinct values, estimated.
    pub approx_distinct: Option<u64>,
    /// Every value of a column with at most 100, most frequent first.
    #[serde(default)]
    pub categories: Option<Vec<String>>,
    /// A few values.
    #[serde(default)]
    pub examples: Vec<String>,
}

/// A guessed foreign key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The referencing column.
    pub column: String,
    /// `schema.table`.
    pub references_table: String,
    /// The referenced column (that table's primary-key guess).
    pub references_column: String,
}

/// The scan of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableScan {
    /// `schema.table`.
    pub table: String,
    /// The replica version it describes.
    pub version: String,
    /// When it ran.
    pub scanned_at: DateTime<Utc>,
    /// Rows then.
    pub rows: u64,
    /// Per column.
    pub columns: Vec<ColumnScan>,
    /// A column whose values are unique and never NULL, named like a key.
    pub primary_key: Option<String>,
    /// Columns whose values all occur in another table's key.
    pub foreign_keys: Vec<ForeignKey>,
}

impl ColumnScan {
    pub(super) fn from_profile(profile: &ColumnProfile) -> Self {
        let values: Vec<String> = profile
            .top_values
            .iter()
            .flatten()
            .filter_map(|v| v.value.clone())
            .collect();
        let examples = if values.is_empty() {
            profile
                .min
                .iter()
                .chain(profile.max.iter())
                .map(|s| s.text())
                .collect()
        } else {
            values.iter().take(EXAMPLES).cloned().collect()
        };
        Self {
            name: profile.column.clone(),
            data_type: profile.data_type.clone(),
            null_fraction: profile.null_fraction,
            approx_distinct: profile.approx_distinct,
            categories: profile.top_values.as_ref().map(|_| values),
            examples,
        }
    }
}

/// The profile request scans make, and principals' views repeat (so the
/// profile cache serves both).
pub(super) fn profile_request(table: &TableName) -> ProfileRequest {
    ProfileRequest {
        table: table.to_string(),
        top_k: Some(MAX_CATEGORIES),
        ..ProfileRequest::default()
    }
}

/// Whether a column's name says it is a key (`id`, `customer_id`,
/// `c_custkey`).
fn key_like(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "id" || name.ends_with("_id") || name.ends_with("key") || name.ends_with("id")
}

/// The part of a key's name after its table prefix: `c_custkey` → `custkey`.
fn key_stem(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.split_once('_') {
        Some((prefix, rest)) if prefix.len() <= 2 => rest.to_string(),
        _ => name,
    }
}

impl ContextService {
    /// Scans again, every `every` (`context.rescan_interval`), the tables
    /// a sync has replaced since their last scan, as scan jobs of the
    /// `scheduler` admin. Ends when the service is dropped.
    pub fn rescan_stale(
        self: &Arc<Self>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(service) = service.upgrade() else {
                    return;
                };
                let stale = service.stale_scans();
                if stale.is_empty() {
                    continue;
                }
                let scheduler = Principal::described(
                    TokenKind::Admin,
                    None,
                    "scheduler".into(),
                    Default::default(),
                );
                let request = ScanRequest {
                    tables: Some(stale),
                    wait: true,
                };
                if let Err(e) = service.scan(&scheduler, request).await {
                    tracing::warn!(error = %e, "rescanning tables a sync changed");
                }
            }
        })
    }

    /// Tables whose stored scan describes a version a sync has replaced.
    fn stale_scans(&self) -> Vec<String> {
        self.read()
            .scans
            .values()
            .filter(|scan| {
                TableName::parse(&scan.table)
                    .ok()
                    .and_then(|t| self.query.table_version(&t))
                    .is_some_and(|now| now != scan.version)
            })
            .map(|scan| scan.table.clone())
            .collect()
    }

    /// Starts a scan of some or all tables (admin) as a job.
    pub async fn scan(
        self: &Arc<Self>,
        principal: &Principal,
        request: ScanRequest,
    ) -> Result<ToolJob, ContextError> {
        let tables = match &request.tables {
            Some(names) => self.existing_tables(principal, names)?,
            None => self.visible(principal).into_keys().collect(),
        };
        let recorded = serde_json::json!({
            "tables": tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        let service = Arc::clone(self);
        let owner = principal.clone();
        let work = move |running: Running| async move {
            service
                .run_scan(&owner, &tables, &running)
                .await
                .map_err(|e| e.to_string())
        };
        Ok(self
            .jobs
            .run(principal, JobKind::Scan, recorded, request.wait, work)
            .await?)
    }

    async fn run_scan(
        &self,
        principal: &Principal,
        tables: &[TableName],
        running: &Running,
    ) -> Result<serde_json::Value, ContextError> {
        let mut scans: BTreeMap<TableName, TableScan> = BTreeMap::new();
        for table in tables {
            if running.cancel.is_cancelled() {
                return Err(ContextError::Internal("the scan was cancelled".into()));
            }
            let profile = self
                .query
                .profile(principal, &profile_request(table))
                .await?;
            let primary_key = self.primary_key(principal, table, &profile).await?;
            scans.insert(
                table.clone(),
                TableScan {
                    table: table.to_string(),
                    version: self.query.table_version(table).unwrap_or_default(),
                    scanned_at: Utc::now(),
                    rows: profile.rows,
                    columns: profile
                        .columns
                        .iter()
                        .map(ColumnScan::from_profile)
                        .collect(),
                    primary_key,
                    foreign_keys: Vec::new(),
                },
            );
            running.progress.rows.fetch_add(1, Ordering::AcqRel);
        }
        // Keys of every scanned table, old scans included.
        let mut keys: BTreeMap<TableName, (String, String)> = BTreeMap::new();
        for scan in self.read().scans.values().chain(scans.values()) {
            if let (Ok(name), Some(pk)) = (TableName::parse(&scan.table), &scan.primary_key) {
                let data_type = scan
                    .columns
                    .iter()
                    .find(|c| &c.name == pk)
                    .map(|c| c.data_type.clone())
                    .unwrap_or_default();
                keys.insert(name, (pk.clone(), data_type));
            }
        }
        for (table, scan) in &mut scans {
            scan.foreign_keys = self.foreign_keys(principal, table, scan, &keys).await?;
        }
        let _writing = self.writing.lock().await;
        for (table, scan) in &scans {
            self.meta
                .put_if(
                    Collection::ContextScans,
                    &table.to_string(),
                    scan,
                    Labels::new(),
                    Expect::Any,
                )
                .await?;
        }
        let count = scans.len();
        self.changed(|state| {
            for (table, scan) in scans {
                state.scans.insert(table.to_string(), scan);
            }
        });
        Ok(serde_json::json!({ "tables": count }))
    }

    /// The first key-like column whose values are unique and never NULL.
    async fn primary_key(
        &self,
        principal: &Principal,
        table: &TableName,
        profile: &TableProfile,
    ) -> Result<Option<String>, ContextError> {
        for column in &profile.columns {
            let candidate = key_like(&column.column)
                && column.null_count == 0
                && column
                    .approx_distinct
                    .is_some_and(|d| d as f64 >= 0.9 * profile.rows as f64);
            if !candidate || profile.rows == 0 {
                continue;
            }
            let c = quote_ident(&column.column);
            let sql = format!(
                "SELECT count(DISTINCT {c}) = count(*) AS is_key FROM {}",
                quoted_table(table)
            );
            if self.query.check(principal, &sql).await? {
                return Ok(Some(column.column.clone()));
            }
        }
        Ok(None)
    }

    /// Key-like columns whose every value occurs in another table's key
    /// of the same type and a matching name.
    async fn foreign_keys(
        &self,
        principal: &Principal,
        table: &TableName,
        scan: &TableScan,
        keys: &BTreeMap<TableName, (String, String)>,
    ) -> Result<Vec<ForeignKey>, ContextError> {
        let mut found = Vec::new();
        for column in &scan.columns {
            if Some(&column.name) == scan.primary_key.as_ref() || !key_like(&column.name) {
                continue;
            }
            for (other, (pk, data_type)) in keys {
                if other == table
                    || *data_type != column.data_type
                    || key_stem(pk) != key_stem(&column.name)
                {
                    continue;
                }
                let sql = format!(
                    "SELECT count(*) = 0 AS contained FROM \
                     (SELECT DISTINCT {c} AS v FROM {t} WHERE {c} IS NOT NULL) AS a \
                     WHERE NOT EXISTS (SELECT 1 FROM {o} WHERE {o}.{p} = a.v)",
                    c = quote_ident(&column.name),
                    t = quoted_table(table),
                    o = quoted_table(other),
                    p = quote_ident(pk),
                );
                if self.query.check(principal, &sql).await? {
                    found.push(ForeignKey {
                        column: column.name.clone(),
                        references_table: other.to_string(),
                        references_column: pk.clone(),
                    });
                }
            }
        }
        Ok(found)
    }
}

fn quoted_table(table: &TableName) -> String {
    format!(
        "{}.{}",
        quote_ident(table.schema()),
        quote_ident(table.table())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        for key in ["id", "customer_id", "c_custkey", "orderid"] {
            assert!(key_like(key), "{key}");
        }
        for other in ["region", "amount", "name"] {
            assert!(!key_like(other), "{other}");
        }
        assert_eq!(key_stem("c_custkey"), "custkey");
        assert_eq!(key_stem("o_custkey"), "custkey");
        assert_eq!(key_stem("customer_id"), "customer_id");
    }
}

//! Table profiles: per visible column, its type, counts, nulls, distinct
//! estimate, range, mean, spread, quartiles, string lengths, the most
//! frequent values of low-cardinality columns and a histogram of numeric
//! ones.
//!
//! A profile is computed by queries airlock writes over the caller's own
//! catalog, planned and run exactly like the caller's queries: the row
//! filter applies and masked columns are profiled as their masked values,
//! so a profile never shows what the caller could not select. Profiles are
//! cached per table, compiled policy (the filter and masks after
//! substitution, so two agents with different filters never share one) and
//! replica snapshot (any sync starts afresh).

use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use futures::TryStreamExt;

use super::QueryEngine;
use super::error::QueryError;
use crate::principal::Principal;
use crate::table_name::{TableName, quote_ident};

mod model;

pub use model::{Bucket, ColumnProfile, ProfileRequest, Stat, TableProfile, TopValue};

/// Columns with at most this many distinct values get their top values.
const LOW_CARDINALITY: u64 = 100;
/// Top values reported per column, unless the request asks for more (up
/// to [`LOW_CARDINALITY`], which is every value of such a column).
const TOP_K: usize = 10;
/// Buckets of a numeric histogram.
const BUCKETS: u32 = 10;
/// Profiles kept.
const CACHED: usize = 64;

/// Whether a profile counts against the caller's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// It is the caller's request (table.profile, airlock.profile()).
    Yes,
    /// It is part of another request.
    No,
}

/// How a column is profiled.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number,
    Time,
    Text,
    Orderable,
    Other,
}

fn kind_of(data_type: &DataType) -> Kind {
    match data_type {
        t if t.is_numeric() => Kind::Number,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => Kind::Time,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
        DataType::Boolean | DataType::Time32(_) | DataType::Time64(_) => Kind::Orderable,
        _ => Kind::Other,
    }
}

/// Cached profiles, newest first.
#[derive(Debug, Default)]
pub(super) struct ProfileCache {
    entries: Mutex<Vec<CachedProfile>>,
}

#[derive(Debug)]
struct CachedProfile {
    request: ProfileRequest,
    policy: Arc<str>,
    // Weak: a cached profile must not keep an old replica version alive;
    // the allocation it points to is not reused while it is held.
    snapshot: Weak<std::collections::BTreeMap<TableName, crate::replica::TableInfo>>,
    extra_version: u64,
    profile: TableProfile,
}

impl QueryEngine {
    /// Profiles a table as `principal` sees it (cached; see the module
    /// doc), on the query executor. Counts as one query against the
    /// caller's limits.
    pub async fn profile(
        self: &Arc<Self>,
        principal: &Principal,
        request: &ProfileRequest,
    ) -> Result<TableProfile, QueryError> {
        self.profile_on_executor(principal, request, Admit::Yes)
            .await
    }

    /// [`QueryEngine::profile`] as part of a request that is not itself a
    /// query (a context search reading categories): not counted against
    /// the caller's limits, since the request that asked is the caller's.
    pub async fn profile_within(
        self: &Arc<Self>,
        principal: &Principal,
        request: &ProfileRequest,
    ) -> Result<TableProfile, QueryError> {
        self.profile_on_executor(principal, request, Admit::No)
            .await
    }

    async fn profile_on_executor(
        self: &Arc<Self>,
        principal: &Principal,
        request: &ProfileRequest,
        admit: Admit,
    ) -> Result<TableProfile, QueryError> {
        let engine = Arc::clone(self);
        let principal = principal.clone();
        let request = request.clone();
        self.executor
            .run(async move { engine.profile_here(&principal, &request, admit).await })
            .await
            .map_err(|e| QueryError::Internal(format!("profiling task failed: {e}")))?
    }

    /// [`QueryEngine::profile`], on the calling task.
    pub(super) async fn profile_here(
        &self,
        principal: &Principal,
        request: &ProfileRequest,
        admit: Admit,
    ) -> Result<TableProfile, QueryError> {
        let name = TableName::parse(&request.table)
            .map_err(|_| QueryError::UnknownTable(request.table.clone()))?;
        let top_k = request.top_k.unwrap_or(TOP_K);
        if top_k == 0 || top_k as u64 > LOW_CARDINALITY {
            return Err(QueryError::Plan(datafusion::error::DataFusionError::Plan(
                format!("top_k must be between 1 and {LOW_CARDINALITY}"),
            )));
        }
        let visible = self.visible_tables(principal);
        let (Some(schema), Some(policy)) = (visible.get(&name), visible.policy(&name)) else {
            return Err(QueryError::UnknownTable(request.table.clone()));
        };
        // A profile is one request against the caller's limits, cached or
        // not, however many queries it runs: they go without admission of
        // their own.
        let _permit = match admit {
            Admit::Yes => {
                self.admit(principal, self.session(principal).limits.as_ref())
                    .await?
            }
            Admit::No => None,
        };
        let snapshot = self.replica.tables();
        let (_, extra_version) = self.extra_tables();
        if let Some(hit) = self
            .profiles
            .lookup(request, policy, &snapshot, extra_version)
        {
            return Ok(hit);
        }
        let mut columns = Vec::new();
        for field in schema.fields() {
            let wanted = request
                .columns
                .as_ref()
                .is_none_or(|only| only.iter().any(|c| c == field.name()));
            if wanted {
                columns.push((field.name().clone(), field.data_type().clone()));
            }
        }
        if let Some(only) = &request.columns
            && let Some(missing) = only.iter().find(|c| !columns.iter().any(|(n, _)| n == *c))
        {
            return Err(QueryError::Plan(datafusion::error::DataFusionError::Plan(
                format!(
                    "table '{}' has no column '{missing}' you may see",
                    request.table
                ),
            )));
        }
        let mut source = format!(
            "{}.{}",
            quote_ident(name.schema()),
            quote_ident(name.table())
        );
        if let Some(rows) = request.sample {
            source = format!("{source} TABLESAMPLE ({rows} ROWS) REPEATABLE (0)");
        }
        let profile = self
            .compute_profile(
                principal,
                &name,
                &source,
                &columns,
                request.sample.is_some(),
                top_k,
            )
            .await?;
        self.profiles.store(CachedProfile {
            request: request.clone(),
            policy: Arc::clone(policy),
            snapshot: Arc::downgrade(&snapshot),
            extra_version,
            profile: profile.clone(),
        });
        Ok(profile)
    }

    async fn compute_profile(
        &self,
        principal: &Principal,
        name: &TableName,
        source: &str,
        columns: &[(String, DataType)],
        sampled: bool,
        top_k: usize,
    ) -> Result<TableProfile, QueryError> {
        let mut select = vec!["count(*) AS total".to_string()];
        for (i, (column, data_type)) in columns.iter().enumerate() {
            select.extend(aggregates(i, &quote_ident(column), kind_of(data_type)));
        }
        let sql = format!("SELECT {} FROM {source}", select.join(", "));
        let batch = self.single_row(principal, &sql).await?;
        let total = int(&batch, "total").unwrap_or(0);
        let mut profiles = Vec::new();
        for (i, (column, data_type)) in columns.iter().enumerate() {
            let kind = kind_of(data_type);
            let count = int(&batch, &format!("n{i}")).unwrap_or(0);
            let null_count = total.saturating_sub(count);
            let is_date = matches!(data_type, DataType::Date32 | DataType::Date64);
            let time = |key: &str| {
                float(&batch, key).map(|nanos| {
                    let rendered = render_time(nanos);
                    // Dates stay dates: the day the instant falls on.
                    Stat::Text(if is_date {
                        rendered.chars().take(10).collect()
                    } else {
                        rendered
                    })
                })
            };
            let number = |key: &str| float(&batch, key).map(Stat::Number);
            let (mean, p25, p50, p75) = match kind {
                Kind::Number => (
                    number(&format!("mean{i}")),
                    number(&format!("q25_{i}")),
                    number(&format!("q50_{i}")),
                    number(&format!("q75_{i}")),
                ),
                Kind::Time => (
                    time(&format!("mean{i}")),
                    time(&format!("q25_{i}")),
                    time(&format!("q50_{i}")),
                    time(&format!("q75_{i}")),
                ),
                _ => (None, None, None, None),
            };
            let stddev = match kind {
                Kind::Number => float(&batch, &format!("sd{i}")),
                Kind::Time => float(&batch, &format!("sd{i}")).map(|nanos| nanos / 1e9),
                _ => None,
            };
            let min = text(&batch, &format!("min{i}"));
            let max = text(&batch, &format!("max{i}"));
            let as_stat = |value: Option<String>| {
                value.map(|v| match kind {
                    Kind::Number => v.parse().map(Stat::Number).unwrap_or(Stat::Text(v)),
                    _ => Stat::Text(v),
                })
            };
            let approx_distinct = int(&batch, &format!("d{i}"));
            let quoted = quote_ident(column);
            let top_values = match approx_distinct {
                Some(d) if d <= LOW_CARDINALITY && kind != Kind::Other => {
                    Some(self.top_values(principal, source, &quoted, top_k).await?)
                }
                _ => None,
            };
            // The range comes from min and max as text: aggregating both
            // `min(c)` and `min(CAST(c AS DOUBLE))` gives DataFusion two
            // fields of one name.
            let bound = |v: &Option<String>| v.as_deref().and_then(|t| t.parse::<f64>().ok());
            let histogram = match (kind, bound(&min), bound(&max)) {
                (Kind::Number, Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => {
                    Some(self.histogram(principal, source, &quoted, lo, hi).await?)
                }
                _ => None,
            };
            profiles.push(ColumnProfile {
                column: column.clone(),
                data_type: data_type.to_string(),
                count,
                null_count,
                null_fraction: if total == 0 {
                    0.0
                } else {
                    null_count as f64 / total as f64
                },
                approx_distinct,
                min: as_stat(min),
                max: as_stat(max),
                mean,
                stddev,
                p25,
                p50,
                p75,
                min_length: int(&batch, &format!("lmin{i}")),
                max_length: int(&batch, &format!("lmax{i}")),
                avg_length: float(&batch, &format!("lavg{i}")),
                top_values,
                histogram,
            });
        }
        Ok(TableProfile {
            table: name.to_string(),
            rows: total,
            sampled,
            columns: profiles,
        })
    }

    async fn top_values(
        &self,
        principal: &Principal,
        source: &str,
        column: &str,
        top_k: usize,
    ) -> Result<Vec<TopValue>, QueryError> {
        let sql = format!(
            "SELECT CAST({column} AS VARCHAR) AS v, count(*) AS n FROM {source} \
             GROUP BY {column} ORDER BY n DESC, v NULLS FIRST LIMIT {top_k}"
        );
        let batches = self.collect(principal, &sql).await?;
        let mut values = Vec::new();
        for batch in &batches {
            let v = cast(batch.column(0), &DataType::Utf8).map_err(arrow_error)?;
            let v = v.as_string::<i32>();
            let n = cast(batch.column(1), &DataType::Int64).map_err(arrow_error)?;
            let n = n.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                values.push(TopValue {
                    value: v.is_valid(row).then(|| v.value(row).to_string()),
                    count: u64::try_from(n.value(row)).unwrap_or(0),
                });
            }
        }
        Ok(values)
    }

    async fn histogram(
        &self,
        principal: &Principal,
        source: &str,
        column: &str,
        lo: f64,
        hi: f64,
    ) -> Result<Vec<Bucket>, QueryError> {
        let width = if hi > lo {
            (hi - lo) / f64::from(BUCKETS)
        } else {
            1.0
        };
        let last = BUCKETS - 1;
        let sql = format!(
            "SELECT least(CAST(floor((CAST({column} AS DOUBLE) - ({lo:e})) / ({width:e})) AS BIGINT), {last}) AS b, \
             count(*) AS n FROM {source} WHERE {column} IS NOT NULL GROUP BY 1 ORDER BY 1"
        );
        let batches = self.collect(principal, &sql).await?;
        let mut counts = vec![0u64; BUCKETS as usize];
        for batch in &batches {
            let b = cast(batch.column(0), &DataType::Int64).map_err(arrow_error)?;
            let n = cast(batch.column(1), &DataType::Int64).map_err(arrow_error)?;
            let (b, n) = (b.as_primitive::<Int64Type>(), n.as_primitive::<Int64Type>());
            for row in 0..batch.num_rows() {
                if let Some(slot) = usize::try_from(b.value(row))
                    .ok()
                    .and_then(|i| counts.get_mut(i))
                {
                    *slot += u64::try_from(n.value(row)).unwrap_or(0);
                }
            }
        }
        let buckets = if hi > lo { BUCKETS } else { 1 };
        Ok((0..buckets)
            .map(|i| Bucket {
                lower: lo + width * f64::from(i),
                upper: if i == buckets - 1 {
                    hi
                } else {
                    lo + width * f64::from(i + 1)
                },
                count: counts[i as usize],
            })
            .collect())
    }

    /// Plans and runs `sql` as `principal` within the profile's admission,
    /// collecting the result.
    async fn collect(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        let planned = Box::pin(self.plan_here(principal, sql)).await?;
        let query_id = uuid::Uuid::new_v4().to_string();
        let stream = self.start(planned, &query_id, principal, None).await?;
        stream.try_collect().await
    }

    async fn single_row(
        &self,
        principal: &Principal,
        sql: &str,
    ) -> Result<RecordBatch, QueryError> {
        let batches = self.collect(principal, sql).await?;
        batches
            .into_iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| QueryError::Internal(format!("profile query returned no row: {sql}")))
    }
}

impl ProfileCache {
    fn lookup(
        &self,
        request: &ProfileRequest,
        policy: &Arc<str>,
        snapshot: &crate::replica::TableSnapshot,
        extra_version: u64,
    ) -> Option<TableProfile> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|e| {
                &e.request == request
                    && &e.policy == policy
                    && e.extra_version == extra_version
                    && Weak::ptr_eq(&e.snapshot, &Arc::downgrade(snapshot))
            })
            .map(|e| e.profile.clone())
    }

    fn store(&self, entry: CachedProfile) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.snapshot.strong_count() > 0);
        entries.insert(0, entry);
        entries.truncate(CACHED);
    }
}

/// The aggregates of one column, named `<stat><i>`.
fn aggregates(i: usize, column: &str, kind: Kind) -> Vec<String> {
    let mut out = vec![format!("count({column}) AS n{i}")];
    match kind {
        Kind::Text => out.push(format!("approx_distinct({column}) AS d{i}")),
        // approx_distinct does not take every type (decimals, booleans):
        // distinct values have distinct texts.
        Kind::Number | Kind::Time | Kind::Orderable => out.push(format!(
            "approx_distinct(CAST({column} AS VARCHAR)) AS d{i}"
        )),
        Kind::Other => {}
    }
    if kind != Kind::Other {
        out.push(format!("CAST(min({column}) AS VARCHAR) AS min{i}"));
        out.push(format!("CAST(max({column}) AS VARCHAR) AS max{i}"));
    }
    let numeric = match kind {
        Kind::Number => Some(format!("CAST({column} AS DOUBLE)")),
        // Times as nanoseconds since the epoch, rendered back afterwards.
        Kind::Time => Some(format!(
            "CAST(CAST(CAST({column} AS TIMESTAMP) AS BIGINT) AS DOUBLE)"
        )),
        _ => None,
    };
    if let Some(value) = numeric {
        out.push(format!("avg({value}) AS mean{i}"));
        out.push(format!("stddev({value}) AS sd{i}"));
        for (q, name) in [(0.25, "q25_"), (0.5, "q50_"), (0.75, "q75_")] {
            out.push(format!(
                "approx_percentile_cont({q}) WITHIN GROUP (ORDER BY {value}) AS {name}{i}"
            ));
        }
    }
    if kind == Kind::Text {
        out.push(format!("min(character_length({column})) AS lmin{i}"));
        out.push(format!("max(character_length({column})) AS lmax{i}"));
        out.push(format!(
            "avg(CAST(character_length({column}) AS DOUBLE)) AS lavg{i}"
        ));
    }
    out
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a Arc<dyn Array>> {
    batch.schema().index_of(name).ok().map(|i| batch.column(i))
}

fn int(batch: &RecordBatch, name: &str) -> Option<u64> {
    let array = cast(column(batch, name)?, &DataType::Int64).ok()?;
    let array = array.as_primitive::<Int64Type>();
    array
        .is_valid(0)
        .then(|| u64::try_from(array.value(0)).unwrap_or(0))
}

fn float(batch: &RecordBatch, name: &str) -> Option<f64> {
    let array = cast(column(batch, name)?, &DataType::Float64).ok()?;
    let array = array.as_primitive::<Float64Type>();
    array.is_valid(0).then(|| array.value(0))
}

fn text(batch: &RecordBatch, name: &str) -> Option<String> {
    let array = cast(column(batch, name)?, &DataType::Utf8).ok()?;
    let array = array.as_string::<i32>();
    array.is_valid(0).then(|| array.value(0).to_string())
}

/// Nanoseconds since the epoch as an ISO 8601 timestamp.
fn render_time(nanos: f64) -> String {
    let nanos = nanos.round() as i64;
    let array = datafusion::arrow::array::TimestampNanosecondArray::from(vec![nanos]);
    cast(&array, &DataType::Utf8)
        .ok()
        .and_then(|a| {
            let a = a.as_string::<i32>();
            a.is_valid(0).then(|| a.value(0).to_string())
        })
        .unwrap_or_else(|| nanos.to_string())
}

fn arrow_error(e: datafusion::arrow::error::ArrowError) -> QueryError {
    QueryError::Internal(format!("reading a profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_pick_the_statistics() {
        assert_eq!(kind_of(&DataType::Int64), Kind::Number);
        assert_eq!(kind_of(&DataType::Decimal128(12, 2)), Kind::Number);
        use datafusion::arrow::datatypes::TimeUnit;
        assert_eq!(
            kind_of(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            )),
            Kind::Time
        );
        assert_eq!(kind_of(&DataType::Utf8), Kind::Text);
        let names: Vec<String> = aggregates(3, "\"x\"", Kind::Text);
        assert!(names.iter().any(|a| a.ends_with("AS lmax3")), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|a| a.contains("avg(CAST(\"x\" AS DOUBLE))"))
        );
    }

    #[test]
    fn times_render_as_iso_timestamps() {
        assert_eq!(render_time(0.0), "1970-01-01T00:00:00");
        assert_eq!(render_time(1_500_000_000.0), "1970-01-01T00:00:01.500");
    }
}

//! `GET /admin/audit`: the audit trail, newest first, filtered by
//! principal, swarm, outcome, time range and text, paged on the server.
//! It reads `airlock.audit` with the same SQL an admin would send over
//! Flight (the filters bound as parameters, never spliced into the text),
//! so a million records cost one page's worth: pages follow a keyset
//! (`time <= t`, skipping the rows of that microsecond already shown).

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use futures::TryStreamExt;
use serde::Deserialize;
use tonic::Status;

use super::session::Admin;
use super::{Chrome, Dashboard, View};
use crate::status;

/// Records per page.
const PAGE: usize = 50;

/// Columns shown, in order.
const COLUMNS: &str = "time, request, principal_kind, principal, swarm, token_id, remote_addr, \
                       statement, tables, columns, policy, outcome, status, reason, rows, bytes, \
                       duration_ms, truncated";

/// The page's query string.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    principal: String,
    #[serde(default)]
    swarm: String,
    #[serde(default)]
    outcome: String,
    /// `YYYY-MM-DDTHH:MM` (UTC), as a `datetime-local` input sends it.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    text: String,
    /// Where the previous page ended: `<microseconds>.<rows of that
    /// microsecond shown>`.
    #[serde(default)]
    before: String,
}

#[derive(Template)]
#[template(path = "dashboard/audit.html")]
struct AuditPage {
    chrome: Chrome,
    filter: Filter,
    outcomes: [&'static str; 3],
    records: Vec<Record>,
    older: Option<String>,
}

/// One record, every field as text.
struct Record {
    time: String,
    request: String,
    principal: String,
    outcome: String,
    status: String,
    statement: String,
    duration: String,
    /// Every column, for the expanded view.
    fields: Vec<(&'static str, String)>,
}

pub(super) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    admin: Admin,
    view: View,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Response {
    let Query(filter) = match filter {
        Ok(filter) => filter,
        Err(rejected) => return view.reject(&admin, rejected.body_text()),
    };
    let made = build(&dashboard, &admin, &view, filter).await;
    view.render(&admin, made)
}

/// A `datetime-local` value as microseconds since the epoch.
fn micros(what: &str, text: &str) -> Result<i64, Status> {
    let parsed = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| {
            status::bad_request(format!(
                "{what} must be a time like 2026-11-30T14:05, not '{text}'"
            ))
        })?;
    Ok(parsed.and_utc().timestamp_micros())
}

fn timestamp(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("UTC".into()))
}

/// The SQL and its parameters for `filter`'s page.
fn query(filter: &Filter) -> Result<(String, Vec<ScalarValue>, u64), Status> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut bind = |condition: &str, value: ScalarValue| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("${}", values.len())));
    };
    let text = |s: &str| ScalarValue::Utf8(Some(s.trim().to_string()));
    let like = |s: &str| ScalarValue::Utf8(Some(format!("%{}%", s.trim())));
    if !filter.principal.trim().is_empty() {
        bind("principal ILIKE ?", like(&filter.principal));
    }
    if !filter.swarm.trim().is_empty() {
        bind("swarm = ?", text(&filter.swarm));
    }
    if !filter.outcome.trim().is_empty() {
        bind("outcome = ?", text(&filter.outcome));
    }
    if !filter.from.is_empty() {
        bind("time >= ?", timestamp(micros("from", &filter.from)?));
    }
    if !filter.to.is_empty() {
        bind("time < ?", timestamp(micros("to", &filter.to)?));
    }
    if !filter.text.trim().is_empty() {
        bind(
            "(statement ILIKE ? OR request ILIKE ? OR reason ILIKE ? OR tables ILIKE ?)",
            like(&filter.text),
        );
    }
    let mut skip = 0;
    if !filter.before.is_empty() {
        let (us, shown) = filter
            .before
            .split_once('.')
            .and_then(|(us, n)| Some((us.parse::<i64>().ok()?, n.parse::<u64>().ok()?)))
            .ok_or_else(|| {
                status::bad_request("'before' is not a page marker: follow the Older link")
            })?;
        bind("time <= ?", timestamp(us));
        skip = shown;
    }
    let mut sql = format!("SELECT {COLUMNS} FROM airlock.audit");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    // One row past the page says whether there is an older one; ties on
    // `time` are ordered the same way on every page.
    sql.push_str(&format!(
        " ORDER BY time DESC, request, statement, token_id LIMIT {} OFFSET {skip}",
        PAGE + 1
    ));
    Ok((sql, values, skip))
}

async fn build(
    dashboard: &Dashboard,
    admin: &Admin,
    view: &View,
    filter: Filter,
) -> Result<AuditPage, Status> {
    let (sql, values, skip) = query(&filter)?;
    let gateway = &dashboard.services.gateway;
    let planned = gateway.plan(&admin.principal, &sql, values, None).await?;
    let query_id = uuid::Uuid::new_v4().to_string();
    let stream = gateway
        .execute(&admin.principal, planned, &query_id, None)
        .await?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(crate::status::query)?;
    let (mut records, times) = records(&batches)?;
    let older = (records.len() > PAGE).then(|| {
        records.truncate(PAGE);
        let last = times[PAGE - 1];
        // Rows of the last microsecond shown so far, this page and before.
        let same = times[..PAGE].iter().filter(|&&t| t == last).count() as u64;
        let carried = if filter.before.starts_with(&format!("{last}.")) {
            skip
        } else {
            0
        };
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("principal", &filter.principal),
            ("swarm", &filter.swarm),
            ("outcome", &filter.outcome),
            ("from", &filter.from),
            ("to", &filter.to),
            ("text", &filter.text),
        ] {
            if !value.is_empty() {
                link.append_pair(key, value);
            }
        }
        link.append_pair("before", &format!("{last}.{}", same + carried));
        format!("/admin/audit?{}", link.finish())
    });
    Ok(AuditPage {
        chrome: view.chrome("audit", admin),
        filter,
        outcomes: ["ok", "denied", "error"],
        records,
        older,
    })
}

/// The rows as records, and each one's time in microseconds.
fn records(batches: &[RecordBatch]) -> Result<(Vec<Record>, Vec<i64>), Status> {
    let names: Vec<&'static str> = COLUMNS.split(", ").map(str::trim).collect();
    let mut records = Vec::new();
    let mut times = Vec::new();
    for batch in batches {
        let text: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8))
            .collect::<Result<_, _>>()
            .map_err(|e| status::internal(format!("reading the audit trail: {e}")))?;
        let time = batch
            .column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| status::internal("airlock.audit.time is not a microsecond timestamp"))?;
        for row in 0..batch.num_rows() {
            let field = |i: usize| {
                let column = text[i].as_string::<i32>();
                if column.is_null(row) {
                    String::new()
                } else {
                    column.value(row).to_string()
                }
            };
            let us = time.value(row);
            times.push(us);
            let shown_time = DateTime::<Utc>::from_timestamp_micros(us)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            let principal = match (field(2), field(3)) {
                (kind, name) if name.is_empty() => kind,
                (kind, name) => format!("{kind}:{name}"),
            };
            records.push(Record {
                time: shown_time,
                request: field(1),
                principal,
                outcome: field(11),
                status: field(12),
                statement: field(7),
                duration: format!("{:.1} ms", field(16).parse::<f64>().unwrap_or_default()),
                fields: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (*name, field(i)))
                    .collect(),
            });
        }
    }
    Ok((records, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parameters_never_sql_text() {
        let filter = Filter {
            principal: "a'; DROP TABLE x; --".into(),
            outcome: "denied".into(),
            from: "2026-11-30T12:00".into(),
            text: "orders".into(),
            before: "1800000000000000.3".into(),
            ..Filter::default()
        };
        let (sql, values, skip) = query(&filter).unwrap();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(
            sql.contains("principal ILIKE $1 AND outcome = $2 AND time >= $3"),
            "{sql}"
        );
        assert!(
            sql.contains("statement ILIKE $4 OR request ILIKE $4"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT 51 OFFSET 3"), "{sql}");
        assert_eq!(values.len(), 5);
        assert_eq!(skip, 3);
        let bad = query(&Filter {
            from: "yesterday".into(),
            ..Filter::default()
        })
        .unwrap_err();
        assert!(bad.message().contains("from must be a time"), "{bad:?}");
        let bad = query(&Filter {
            before: "x".into(),
            ..Filter::default()
        })
        .unwrap_err();
        assert!(bad.message().contains("page marker"), "{bad:?}");
    }
}

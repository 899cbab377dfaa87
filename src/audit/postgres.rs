//! The audit trail of a cluster: every node's records in one Postgres
//! table, partitioned by day (retention drops whole partitions), and read
//! by admins as `airlock.audit` on any node through [`AuditTable`].

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;

use super::AuditRecord;

/// The partitioned table; partitions are made as days come.
const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS airlock;
CREATE TABLE IF NOT EXISTS airlock.audit (
    time timestamptz NOT NULL,
    request text NOT NULL,
    principal_kind text,
    principal text,
    swarm text,
    token_id text,
    remote_addr text,
    statement text,
    tables text,
    columns text,
    policy text,
    outcome text NOT NULL,
    status text NOT NULL,
    reason text,
    rows bigint,
    bytes bigint NOT NULL,
    duration_ms double precision NOT NULL,
    truncated boolean NOT NULL,
    node text NOT NULL
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS audit_by_time ON airlock.audit (time DESC);
";

/// Serializes creating and dropping partitions across nodes.
const PARTITION_LOCK: i64 = 0x6169_726c_6f63_6b03;

/// Why writing to the shared trail failed.
pub(super) type PgResult<T> = Result<T, String>;

fn text(error: impl std::error::Error) -> String {
    crate::meta::with_causes(&error)
}

/// Takes the partition lock for the transaction (nodes create and drop
/// partitions in turn), without the "already exists" notices.
async fn lock_partitions(tx: &deadpool_postgres::Transaction<'_>) -> PgResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .map_err(text)?;
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(text)
}

/// Creates the table if it is missing.
pub(super) async fn create(pool: &Pool) -> PgResult<()> {
    let mut client = pool.get().await.map_err(text)?;
    let tx = client.transaction().await.map_err(text)?;
    lock_partitions(&tx).await?;
    tx.batch_execute(SCHEMA).await.map_err(text)?;
    tx.commit().await.map_err(text)
}

fn partition_name(day: NaiveDate) -> String {
    format!("airlock.audit_{}", day.format("%Y%m%d"))
}

/// Makes sure each day of `days` has its partition (`known` remembers the
/// ones this node made or saw).
async fn ensure_partitions(
    pool: &Pool,
    days: &BTreeSet<NaiveDate>,
    known: &mut BTreeSet<NaiveDate>,
) -> PgResult<()> {
    let missing: Vec<NaiveDate> = days.difference(known).copied().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut client = pool.get().await.map_err(text)?;
    let tx = client.transaction().await.map_err(text)?;
    lock_partitions(&tx).await?;
    for day in &missing {
        let next = day.succ_opt().unwrap_or(*day);
        // Dates formatted by chrono, never text from a request.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF airlock.audit \
             FOR VALUES FROM ('{day}') TO ('{next}')",
            partition_name(*day)
        ))
        .await
        .map_err(text)?;
    }
    tx.commit().await.map_err(text)?;
    known.extend(missing);
    Ok(())
}

/// Writes records in one statement (arrays unnested into rows).
pub(super) async fn insert(
    pool: &Pool,
    node: &str,
    records: &[AuditRecord],
    known: &mut BTreeSet<NaiveDate>,
) -> PgResult<()> {
    let days: BTreeSet<NaiveDate> = records.iter().map(|r| r.time.date_naive()).collect();
    ensure_partitions(pool, &days, known).await?;
    let column = |f: fn(&AuditRecord) -> Option<String>| -> Vec<Option<String>> {
        records.iter().map(f).collect()
    };
    let time: Vec<DateTime<Utc>> = records.iter().map(|r| r.time).collect();
    let request = column(|r| Some(r.request.clone()));
    let principal_kind = column(|r| r.principal_kind.clone());
    let principal = column(|r| r.principal.clone());
    let swarm = column(|r| r.swarm.clone());
    let token_id = column(|r| r.token_id.clone());
    let remote_addr = column(|r| r.remote_addr.clone());
    let statement = column(|r| r.statement.clone());
    let tables = column(|r| r.tables.clone());
    let columns = column(|r| r.columns.clone());
    let policy = column(|r| r.policy.clone());
    let outcome = column(|r| Some(r.outcome.as_str().to_string()));
    let status = column(|r| Some(r.status.clone()));
    let reason = column(|r| r.reason.clone());
    let rows: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.rows.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
        .collect();
    let bytes: Vec<i64> = records
        .iter()
        .map(|r| i64::try_from(r.bytes).unwrap_or(i64::MAX))
        .collect();
    let duration_ms: Vec<f64> = records
        .iter()
        .map(|r| r.duration.as_secs_f64() * 1000.0)
        .collect();
    let truncated: Vec<bool> = records.iter().map(|r| r.truncated).collect();
    let client = pool.get().await.map_err(text)?;
    client
        .execute(
            "INSERT INTO airlock.audit SELECT t.*, $19 FROM unnest($1::timestamptz[], \
             $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
             $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
             $15::bigint[], $16::bigint[], $17::float8[], $18::bool[]) AS t",
            &[
                &time,
                &request,
                &principal_kind,
                &principal,
                &swarm,
                &token_id,
                &remote_addr,
                &statement,
                &tables,
                &columns,
                &policy,
                &outcome,
                &status,
                &reason,
                &rows,
                &bytes,
                &duration_ms,
                &truncated,
                &node,
            ],
        )
        .await
        .map_err(text)?;
    Ok(())
}

/// Drops the partitions wholly older than `retention`.
pub(super) async fn purge(pool: &Pool, retention: Duration) -> PgResult<usize> {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        return Ok(0);
    };
    let cutoff = (Utc::now() - retention).date_naive();
    let mut client = pool.get().await.map_err(text)?;
    let tx = client.transaction().await.map_err(text)?;
    lock_partitions(&tx).await?;
    let partitions = tx
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'airlock.audit'::regclass",
            &[],
        )
        .await
        .map_err(text)?;
    let mut dropped = 0;
    for row in partitions {
        let name: String = row.get(0);
        let Some(day) = name
            .strip_prefix("audit_")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
        else {
            continue;
        };
        // The partition's last instant is before the cutoff day.
        if day < cutoff {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", partition_name(day)))
                .await
                .map_err(text)?;
            dropped += 1;
        }
    }
    tx.commit().await.map_err(text)?;
    Ok(dropped)
}

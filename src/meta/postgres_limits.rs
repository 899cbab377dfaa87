//! [`SharedLimits`] in Postgres: running-query slots as leases, and query
//! starts from a token bucket per agent. Each check takes a transaction-
//! scoped advisory lock on the agent, so concurrent nodes count in turn.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::postgres_store::pg;
use super::{MetaError, SharedLimits};

/// The tables, created with the rest of the schema.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS airlock.agent_slots (
    lease text PRIMARY KEY,
    principal text NOT NULL,
    node text NOT NULL,
    expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS agent_slots_by_principal ON airlock.agent_slots (principal, expires_at);
CREATE TABLE IF NOT EXISTS airlock.agent_budget (
    principal text PRIMARY KEY,
    tokens double precision NOT NULL,
    refilled timestamptz NOT NULL);
"#;

/// Limits over the store's pool.
#[derive(Debug, Clone)]
pub(super) struct PgLimits {
    pub(super) pool: Pool,
}

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

#[async_trait]
impl SharedLimits for PgLimits {
    async fn acquire_slot(
        &self,
        principal: &str,
        max: u32,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<String>, MetaError> {
        let lease = uuid::Uuid::new_v4().to_string();
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        // The count and the insert must not interleave with another node's.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('airlock.slots:' || $1, 0))",
            &[&principal],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM airlock.agent_slots WHERE principal = $1 AND expires_at < now()",
            &[&principal],
        )
        .await
        .map_err(pg)?;
        let max = i64::from(max);
        let taken = tx
            .query_opt(
                "INSERT INTO airlock.agent_slots (lease, principal, node, expires_at) \
                 SELECT $1, $2, $3, now() + make_interval(secs => $5::float8) \
                 WHERE (SELECT count(*) FROM airlock.agent_slots WHERE principal = $2) < $4 \
                 RETURNING lease",
                &[&lease, &principal, &node, &max, &seconds(ttl)],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(taken.map(|_| lease))
    }

    async fn release_slot(&self, lease: &str) -> Result<(), MetaError> {
        let client = self.pool.get().await.map_err(pg)?;
        client
            .execute(
                "DELETE FROM airlock.agent_slots WHERE lease = $1",
                &[&lease],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn renew_slots(&self, leases: &[String], ttl: Duration) -> Result<(), MetaError> {
        if leases.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await.map_err(pg)?;
        client
            .execute(
                "UPDATE airlock.agent_slots SET expires_at = now() + make_interval(secs => $2::float8) \
                 WHERE lease = ANY($1)",
                &[&leases, &seconds(ttl)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn take_budget(
        &self,
        principal: &str,
        per_minute: u32,
        want: u32,
    ) -> Result<u32, MetaError> {
        let mut client = self.pool.get().await.map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('airlock.budget:' || $1, 0))",
            &[&principal],
        )
        .await
        .map_err(pg)?;
        let cap = f64::from(per_minute);
        // The bucket as of now: refilled at per_minute / 60 a second, full
        // for an agent never seen.
        let available: f64 = tx
            .query_opt(
                "SELECT least($2::float8, tokens + extract(epoch FROM now() - refilled)::float8 \
                 * $2::float8 / 60) FROM airlock.agent_budget WHERE principal = $1",
                &[&principal, &cap],
            )
            .await
            .map_err(pg)?
            .map_or(cap, |row| row.get(0));
        let granted = available.floor().clamp(0.0, f64::from(want));
        tx.execute(
            "INSERT INTO airlock.agent_budget (principal, tokens, refilled) VALUES ($1, $2, now()) \
             ON CONFLICT (principal) DO UPDATE SET tokens = EXCLUDED.tokens, refilled = now()",
            &[&principal, &(available - granted)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        // At most `want`, itself a u32.
        Ok(granted as u32)
    }
}

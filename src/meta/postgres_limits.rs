//! [`SharedLimits`] in Postgres: running-query slots as leases, and query
//! starts from a token bucket per agent. Each check is one call of a
//! function that takes a transaction-scoped advisory lock on the agent, so
//! concurrent nodes count in turn.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::postgres_store::pg;
use super::{MetaError, SharedLimits};

/// The tables, created with the rest of the schema. Unlogged: a check
/// commits without waiting for the WAL to reach disk (it is on every
/// limited query's path), and what a crash of Postgres loses is harmless:
/// leases that would have expired anyway, and budgets that start full.
pub(super) const SCHEMA: &str = r#"
CREATE UNLOGGED TABLE IF NOT EXISTS airlock.agent_slots (
    lease text PRIMARY KEY,
    principal text NOT NULL,
    node text NOT NULL,
    expires_at timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS agent_slots_by_principal ON airlock.agent_slots (principal, expires_at);
CREATE UNLOGGED TABLE IF NOT EXISTS airlock.agent_budget (
    principal text PRIMARY KEY,
    tokens double precision NOT NULL,
    refilled timestamptz NOT NULL);

-- One round trip per query start: the lock, the sweep of expired leases and
-- the conditional insert run inside the server. The advisory lock is held to
-- the end of the caller's transaction, so nodes count one at a time.
CREATE OR REPLACE FUNCTION airlock.acquire_slot(
    p_lease text, p_principal text, p_max bigint, p_node text, p_ttl float8)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('airlock.slots:' || p_principal, 0));
    DELETE FROM airlock.agent_slots WHERE principal = p_principal AND expires_at < now();
    INSERT INTO airlock.agent_slots (lease, principal, node, expires_at)
        SELECT p_lease, p_principal, p_node, now() + make_interval(secs => p_ttl)
        WHERE (SELECT count(*) FROM airlock.agent_slots WHERE principal = p_principal) < p_max;
    RETURN FOUND;
END $$;

-- A token bucket refilled at p_per_minute / 60 a second, full for an agent
-- never seen; takes up to p_want tokens and returns how many it took.
CREATE OR REPLACE FUNCTION airlock.take_budget(
    p_principal text, p_per_minute float8, p_want float8)
RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    available float8;
    granted float8;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('airlock.budget:' || p_principal, 0));
    SELECT least(p_per_minute, tokens + extract(epoch FROM now() - refilled)::float8 * p_per_minute / 60)
        INTO available FROM airlock.agent_budget WHERE principal = p_principal;
    IF NOT FOUND THEN
        available := p_per_minute;
    END IF;
    granted := greatest(0, least(floor(available), p_want));
    INSERT INTO airlock.agent_budget (principal, tokens, refilled)
        VALUES (p_principal, available - granted, now())
        ON CONFLICT (principal) DO UPDATE SET tokens = EXCLUDED.tokens, refilled = now();
    RETURN granted;
END $$;
"#;

/// Limits over the store's pool.
#[derive(Debug, Clone)]
pub(super) struct PgLimits {
    pub(super) pool: Pool,
}

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

impl PgLimits {
    /// One call of one of the functions above: a statement prepared once
    /// per connection, so each check is a single round trip.
    async fn call<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<T, MetaError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let client = self.pool.get().await.map_err(pg)?;
        let statement = client.prepare_cached(sql).await.map_err(pg)?;
        let row = client.query_one(&statement, params).await.map_err(pg)?;
        row.try_get(0).map_err(pg)
    }
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
        let taken: bool = self
            .call(
                "SELECT airlock.acquire_slot($1, $2, $3, $4, $5)",
                &[&lease, &principal, &i64::from(max), &node, &seconds(ttl)],
            )
            .await?;
        Ok(taken.then_some(lease))
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
        let granted: f64 = self
            .call(
                "SELECT airlock.take_budget($1, $2, $3)",
                &[&principal, &f64::from(per_minute), &f64::from(want)],
            )
            .await?;
        // Between 0 and `want`, itself a u32.
        Ok(granted as u32)
    }
}

//! Per-agent limits that hold across the nodes of a cluster.
//!
//! On one node, admission counts in memory. Nodes sharing a metadata store
//! also count there: a running query holds a *slot* (a lease that the node
//! renews while the query runs and that expires when its node dies), and
//! query starts are drawn from a per-agent token bucket in chunks, so that
//! most starts make no remote call.

use std::time::Duration;

use async_trait::async_trait;

use super::MetaError;

/// Limits counted in the shared store.
#[async_trait]
pub trait SharedLimits: Send + Sync + std::fmt::Debug {
    /// Takes one of `principal`'s `max` running-query slots across every
    /// node, for `ttl` unless renewed; none when all are taken. Returns the
    /// lease.
    async fn acquire_slot(
        &self,
        principal: &str,
        max: u32,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<String>, MetaError>;
    /// Gives a slot back.
    async fn release_slot(&self, lease: &str) -> Result<(), MetaError>;
    /// Extends leases still in use by `ttl` from now.
    async fn renew_slots(&self, leases: &[String], ttl: Duration) -> Result<(), MetaError>;
    /// Takes up to `want` query starts from `principal`'s bucket of
    /// `per_minute` (refilled continuously); returns how many it got.
    async fn take_budget(
        &self,
        principal: &str,
        per_minute: u32,
        want: u32,
    ) -> Result<u32, MetaError>;
}

//! Admission: how many queries one agent may run at once and start per
//! minute.
//!
//! Each restricted principal (an agent, or a swarm token querying itself)
//! has a semaphore of `max_concurrent` permits, held by its running queries,
//! and a token bucket of `per_minute` tokens refilled continuously. Over
//! either, a query is refused at once with RESOURCE_EXHAUSTED, so one busy
//! agent cannot crowd out the others.
//!
//! Nodes of a cluster also count in the shared store ([`SharedLimits`]): a
//! running query holds a slot leased there (renewed while it runs; a dead
//! node's leases expire), and starts come from the agent's shared bucket,
//! drawn in chunks of a twentieth of `per_minute` so most starts make no
//! remote call. Starts a node drew but has not used are the only excess:
//! at most `nodes × chunk` above `per_minute` in a burst.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::AbortOnDropHandle;

use super::QueryError;
use crate::meta::SharedLimits;

/// How long a slot lease lives unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a node renews the leases of its running queries.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Per-principal admission state.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    principals: Mutex<HashMap<String, PrincipalState>>,
    shared: Option<Shared>,
}

#[derive(Debug)]
struct PrincipalState {
    max_concurrent: u32,
    running: Arc<Semaphore>,
    per_minute: u32,
    tokens: f64,
    refilled: Instant,
}

/// The cluster-wide side of admission.
#[derive(Debug)]
struct Shared {
    limits: Arc<dyn SharedLimits>,
    node: String,
    /// Starts drawn from each principal's shared bucket, not used yet.
    drawn: Mutex<HashMap<String, u32>>,
    /// Leases of this node's running queries.
    leases: Arc<Mutex<HashSet<String>>>,
    _renewer: AbortOnDropHandle<()>,
}

/// What an admitted query holds until it ends: its local permit and, in a
/// cluster, its slot lease (given back when this is dropped).
#[derive(Debug)]
pub(crate) struct Admitted {
    _local: OwnedSemaphorePermit,
    _lease: Option<Lease>,
}

#[derive(Debug)]
struct Lease {
    id: String,
    limits: Arc<dyn SharedLimits>,
    leases: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.leases).remove(&self.id);
        let (limits, id) = (Arc::clone(&self.limits), self.id.clone());
        // No runtime (shutting down): the lease expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = limits.release_slot(&id).await {
                    tracing::warn!(error = %e, "could not give back a query slot; it expires by itself");
                }
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admission {
    /// Admission that also counts in the store the cluster's nodes share.
    /// Must be called inside a Tokio runtime (it starts the lease renewal).
    pub(crate) fn shared(limits: Arc<dyn SharedLimits>, node: String) -> Self {
        let leases: Arc<Mutex<HashSet<String>>> = Arc::default();
        let renewer = tokio::spawn(renew(Arc::clone(&limits), Arc::downgrade(&leases)));
        Self {
            principals: Mutex::default(),
            shared: Some(Shared {
                limits,
                node,
                drawn: Mutex::default(),
                leases,
                _renewer: AbortOnDropHandle::new(renewer),
            }),
        }
    }

    /// Admits one query of `principal` or says which limit it hit. What it
    /// returns counts the query as running until it is dropped.
    pub(crate) async fn admit(
        &self,
        principal: &str,
        max_concurrent: u32,
        per_minute: u32,
    ) -> Result<Admitted, QueryError> {
        let Some(shared) = &self.shared else {
            let local = self.admit_here(principal, max_concurrent, Some(per_minute))?;
            return Ok(Admitted {
                _local: local,
                _lease: None,
            });
        };
        // This node's own count first (free); the rate only in the shared
        // bucket, which every node draws from.
        let local = self.admit_here(principal, max_concurrent, None)?;
        let id = shared
            .limits
            .acquire_slot(principal, max_concurrent, &shared.node, LEASE_TTL)
            .await
            .map_err(QueryError::SharedLimits)?
            .ok_or_else(|| {
                QueryError::Overloaded(format!(
                    "{max_concurrent} queries already running across the cluster, the most allowed \
                     at once; wait for one to finish"
                ))
            })?;
        lock(&shared.leases).insert(id.clone());
        let admitted = Admitted {
            _local: local,
            _lease: Some(Lease {
                id,
                limits: Arc::clone(&shared.limits),
                leases: Arc::clone(&shared.leases),
            }),
        };
        shared.draw_start(principal, per_minute).await?;
        Ok(admitted)
    }

    /// The node's own semaphore, and its token bucket unless the rate is
    /// counted elsewhere (`per_minute` none).
    fn admit_here(
        &self,
        principal: &str,
        max_concurrent: u32,
        per_minute: Option<u32>,
    ) -> Result<OwnedSemaphorePermit, QueryError> {
        let mut principals = lock(&self.principals);
        let now = Instant::now();
        let bucket = per_minute.unwrap_or(u32::MAX >> 3);
        let state = principals
            .entry(principal.to_string())
            .or_insert_with(|| PrincipalState {
                max_concurrent,
                running: Arc::new(Semaphore::new(max_concurrent as usize)),
                per_minute: bucket,
                tokens: f64::from(bucket),
                refilled: now,
            });
        // A grant change takes effect at once; queries already running
        // keep permits of the old semaphore until they end.
        if state.max_concurrent != max_concurrent {
            state.max_concurrent = max_concurrent;
            state.running = Arc::new(Semaphore::new(max_concurrent as usize));
        }
        if state.per_minute != bucket {
            state.per_minute = bucket;
            state.tokens = state.tokens.min(f64::from(bucket));
        }
        let rate = f64::from(bucket) / 60.0;
        state.tokens = (state.tokens + now.duration_since(state.refilled).as_secs_f64() * rate)
            .min(f64::from(bucket));
        state.refilled = now;
        if state.tokens < 1.0 {
            let wait = ((1.0 - state.tokens) / rate).ceil().max(1.0);
            return Err(QueryError::Overloaded(format!(
                "rate limit of {bucket} queries per minute reached; retry in {wait:.0}s"
            )));
        }
        let permit = Arc::clone(&state.running).try_acquire_owned().map_err(|_| {
            QueryError::Overloaded(format!(
                "{max_concurrent} queries already running, the most allowed at once; wait for one to finish"
            ))
        })?;
        state.tokens -= 1.0;
        Ok(permit)
    }
}

impl Shared {
    /// One start from the principal's shared bucket: from what this node
    /// drew before, or a new chunk.
    async fn draw_start(&self, principal: &str, per_minute: u32) -> Result<(), QueryError> {
        {
            let mut drawn = lock(&self.drawn);
            if let Some(left) = drawn.get_mut(principal).filter(|left| **left > 0) {
                *left -= 1;
                return Ok(());
            }
        }
        let chunk = (per_minute / 20).clamp(1, 100);
        let got = self
            .limits
            .take_budget(principal, per_minute, chunk)
            .await
            .map_err(QueryError::SharedLimits)?;
        if got == 0 {
            return Err(QueryError::Overloaded(format!(
                "rate limit of {per_minute} queries per minute reached across the cluster; retry shortly"
            )));
        }
        *lock(&self.drawn).entry(principal.to_string()).or_default() += got - 1;
        Ok(())
    }
}

/// Renews the leases of running queries until the admission is dropped.
async fn renew(limits: Arc<dyn SharedLimits>, leases: std::sync::Weak<Mutex<HashSet<String>>>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    loop {
        tick.tick().await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        let held: Vec<String> = lock(&leases).iter().cloned().collect();
        drop(leases);
        if let Err(e) = limits.renew_slots(&held, LEASE_TTL).await {
            tracing::warn!(error = %e, "could not renew query slots; they may expire while running");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_is_capped_and_released() {
        let admission = Admission::default();
        let first = admission.admit("a", 2, 100).await.unwrap();
        let _second = admission.admit("a", 2, 100).await.unwrap();
        let err = admission.admit("a", 2, 100).await.unwrap_err();
        assert!(
            err.to_string().contains("2 queries already running"),
            "{err}"
        );
        // Others are not affected.
        assert!(admission.admit("b", 2, 100).await.is_ok());
        drop(first);
        assert!(admission.admit("a", 2, 100).await.is_ok());
    }

    #[tokio::test]
    async fn the_rate_is_capped() {
        let admission = Admission::default();
        for _ in 0..3 {
            drop(admission.admit("a", 10, 3).await.unwrap());
        }
        let err = admission.admit("a", 10, 3).await.unwrap_err();
        assert!(err.to_string().contains("3 queries per minute"), "{err}");
    }
}

//! Admission: how many queries one agent may run at once and start per
//! minute.
//!
//! Each restricted principal (an agent, or a swarm token querying itself)
//! has a semaphore of `max_concurrent` permits, held by its running queries,
//! and a token bucket of `per_minute` tokens refilled continuously. Over
//! either, a query is refused at once with RESOURCE_EXHAUSTED, so one busy
//! agent cannot crowd out the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::QueryError;

/// Per-principal admission state.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    principals: Mutex<HashMap<String, PrincipalState>>,
}

#[derive(Debug)]
struct PrincipalState {
    max_concurrent: u32,
    running: Arc<Semaphore>,
    per_minute: u32,
    tokens: f64,
    refilled: Instant,
}

impl Admission {
    /// Admits one query of `principal` or says which limit it hit. The
    /// permit counts the query as running until it is dropped.
    pub(crate) fn admit(
        &self,
        principal: &str,
        max_concurrent: u32,
        per_minute: u32,
    ) -> Result<OwnedSemaphorePermit, QueryError> {
        let mut principals = self.principals.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let state = principals
            .entry(principal.to_string())
            .or_insert_with(|| PrincipalState {
                max_concurrent,
                running: Arc::new(Semaphore::new(max_concurrent as usize)),
                per_minute,
                tokens: f64::from(per_minute),
                refilled: now,
            });
        // A grant change takes effect at once; queries already running
        // keep permits of the old semaphore until they end.
        if state.max_concurrent != max_concurrent {
            state.max_concurrent = max_concurrent;
            state.running = Arc::new(Semaphore::new(max_concurrent as usize));
        }
        if state.per_minute != per_minute {
            state.per_minute = per_minute;
            state.tokens = state.tokens.min(f64::from(per_minute));
        }
        let rate = f64::from(per_minute) / 60.0;
        state.tokens = (state.tokens + now.duration_since(state.refilled).as_secs_f64() * rate)
            .min(f64::from(per_minute));
        state.refilled = now;
        if state.tokens < 1.0 {
            let wait = ((1.0 - state.tokens) / rate).ceil().max(1.0);
            return Err(QueryError::Overloaded(format!(
                "rate limit of {per_minute} queries per minute reached; retry in {wait:.0}s"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_capped_and_released() {
        let admission = Admission::default();
        let first = admission.admit("a", 2, 100).unwrap();
        let _second = admission.admit("a", 2, 100).unwrap();
        let err = admission.admit("a", 2, 100).unwrap_err();
        assert!(
            err.to_string().contains("2 queries already running"),
            "{err}"
        );
        // Others are not affected.
        assert!(admission.admit("b", 2, 100).is_ok());
        drop(first);
        assert!(admission.admit("a", 2, 100).is_ok());
    }

    #[test]
    fn the_rate_is_capped() {
        let admission = Admission::default();
        for _ in 0..3 {
            drop(admission.admit("a", 10, 3).unwrap());
        }
        let err = admission.admit("a", 10, 3).unwrap_err();
        assert!(err.to_string().contains("3 queries per minute"), "{err}");
    }
}

//! Changes to the shared store, and the caches that follow them.
//!
//! Modules keep hot records (tokens, grants, connections, artifacts,
//! context) in memory. On one node they write through; in a cluster other
//! nodes write too, so the shared store announces every change
//! ([`MetaStore::subscribe`](super::MetaStore::subscribe)) and [`follow`]
//! hands each one to the caches that mirror its collection. When
//! announcements may have been missed (the feed reconnected, or this node
//! fell behind) every cache reloads everything.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Collection, MetaError};

/// A change another node (or this one) made to the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A document was written or deleted.
    Document {
        /// Its collection.
        collection: Collection,
        /// Its key; none when it was too long to announce (reload the
        /// whole collection).
        key: Option<String>,
    },
    /// Changes may have been missed: reload everything.
    Everything,
}

/// An in-memory mirror of some collections.
#[async_trait]
pub trait Cache: Send + Sync {
    /// What it holds, for logs.
    fn name(&self) -> &'static str;
    /// The collections it mirrors.
    fn collections(&self) -> &'static [Collection];
    /// Reloads one document of `collection` (its key), or all of them.
    async fn refresh(&self, collection: Collection, key: Option<&str>) -> Result<(), MetaError>;
}

/// How long a cache that failed to reload waits before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Applies the changes of `changes` to `caches` until the feed closes or
/// every cache is gone. Caches are held weakly: following them does not
/// keep a closed server alive.
pub fn follow(
    mut changes: broadcast::Receiver<Change>,
    caches: Vec<Weak<dyn Cache>>,
    current: impl Fn(std::time::Instant) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "fell behind the metadata feed; reloading every cache"
                    );
                    Change::Everything
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let live: Vec<Arc<dyn Cache>> = caches.iter().filter_map(Weak::upgrade).collect();
            if live.is_empty() {
                return;
            }
            let started = std::time::Instant::now();
            for cache in live {
                apply(cache.as_ref(), &change).await;
            }
            if change == Change::Everything {
                current(started);
            }
        }
    })
}

/// Applies one change to one cache, retrying until the store answers: a
/// cache must not stay behind a change it was told about.
async fn apply(cache: &dyn Cache, change: &Change) {
    let targets: Vec<(Collection, Option<&str>)> = match change {
        Change::Document { collection, key } if cache.collections().contains(collection) => {
            vec![(*collection, key.as_deref())]
        }
        Change::Document { .. } => return,
        Change::Everything => cache.collections().iter().map(|c| (*c, None)).collect(),
    };
    for (collection, key) in targets {
        let mut attempt = key;
        loop {
            match cache.refresh(collection, attempt).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(cache = cache.name(), collection = collection.name(),
                        error = %e, "reloading a cache failed; retrying");
                    // A retry reloads the whole collection: other changes
                    // may be lost meanwhile.
                    attempt = None;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(Collection, Option<String>)>>,
        failures: Mutex<u32>,
    }

    #[async_trait]
    impl Cache for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn collections(&self) -> &'static [Collection] {
            &[Collection::Tokens, Collection::Grants]
        }
        async fn refresh(
            &self,
            collection: Collection,
            key: Option<&str>,
        ) -> Result<(), MetaError> {
            let mut failures = self.failures.lock().unwrap();
            // Fails the first reloads of single grants.
            if collection == Collection::Grants && key.is_some() && *failures > 0 {
                *failures -= 1;
                return Err(MetaError::Postgres("down".into()));
            }
            self.seen
                .lock()
                .unwrap()
                .push((collection, key.map(str::to_string)));
            Ok(())
        }
    }

    #[tokio::test]
    async fn changes_reach_the_caches_of_their_collection_and_failures_reload_it() {
        let (sender, receiver) = broadcast::channel(16);
        let cache = Arc::new(Recorder::default());
        let weak = Arc::downgrade(&cache) as Weak<dyn Cache>;
        let reloads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&reloads);
        let task = follow(receiver, vec![weak], move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let doc = |collection, key: &str| Change::Document {
            collection,
            key: Some(key.to_string()),
        };
        *cache.failures.lock().unwrap() = 1;
        sender.send(doc(Collection::Jobs, "j1")).unwrap();
        sender.send(doc(Collection::Tokens, "t1")).unwrap();
        sender.send(doc(Collection::Grants, "emea")).unwrap();
        sender.send(Change::Everything).unwrap();
        drop(sender);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            *cache.seen.lock().unwrap(),
            vec![
                (Collection::Tokens, Some("t1".into())),
                // The failed reload of one grant became a reload of all.
                (Collection::Grants, None),
                (Collection::Tokens, None),
                (Collection::Grants, None),
            ]
        );
        // Only the reload of everything makes the caches current again.
        assert_eq!(reloads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn following_ends_when_every_cache_is_gone() {
        let (sender, receiver) = broadcast::channel(16);
        let cache: Arc<dyn Cache> = Arc::new(Recorder::default());
        let task = follow(receiver, vec![Arc::downgrade(&cache)], |_| {});
        drop(cache);
        sender.send(Change::Everything).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}

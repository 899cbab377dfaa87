//! Dedicated Postgres sessions (outside the pool): the change feed every
//! node of a cluster listens to, and the writer's campaign.
//!
//! The trigger of `airlock.documents` announces each change on the
//! `airlock_meta` channel after its commit. One session per node LISTENs
//! and turns announcements into [`Change`]s; when the session drops, it
//! reconnects and announces [`Change::Everything`], because Postgres does
//! not keep announcements for a listener that was away.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Change, Collection};

/// The channel document changes are announced on.
pub(super) const CHANNEL: &str = "airlock_meta";

/// The feed session's `application_name` (in `pg_stat_activity`).
pub(super) const FEED_NAME: &str = "airlock-feed";

/// How often an idle session is checked.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a check may take before the session counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection of its own, with its notifications. The session ends
/// (and `notifications` closes) when the connection fails.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) notifications: mpsc::UnboundedReceiver<Notification>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Session {
    /// Connects with TCP keepalives short enough that Postgres drops a
    /// session whose node vanished within seconds (which releases its
    /// session-level advisory locks).
    pub(super) async fn connect(
        config: &tokio_postgres::Config,
        tls: &MakeRustlsConnect,
        purpose: &str,
    ) -> Result<Self, tokio_postgres::Error> {
        let mut config = config.clone();
        config
            .application_name(purpose)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .options(
                "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
            )
            .connect_timeout(Duration::from_secs(10));
        let (client, mut connection) = config.connect(tls.clone()).await?;
        let (sender, notifications) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if sender.send(note).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a Postgres session was lost");
                        return;
                    }
                }
            }
        });
        Ok(Self {
            client,
            notifications,
            driver,
        })
    }

    /// Whether the session still answers.
    pub(super) async fn alive(&self) -> bool {
        matches!(
            tokio::time::timeout(HEARTBEAT_TIMEOUT, self.client.check_connection()).await,
            Ok(Ok(()))
        )
    }
}

/// Since when this node's caches may be missing changes.
#[derive(Debug, Default)]
pub(super) struct FeedHealth {
    lost_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl FeedHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.lost_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The feed's session was lost (or never came).
    fn lost(&self) {
        self.lock().get_or_insert_with(std::time::Instant::now);
    }

    /// The caches reloaded everything from `started` on: a loss before
    /// then is made good (a loss since is not).
    pub(super) fn current(&self, started: std::time::Instant) {
        let mut lost = self.lock();
        if lost.is_some_and(|since| since <= started) {
            *lost = None;
        }
    }

    pub(super) fn lag(&self) -> Option<Duration> {
        self.lock().map(|since| since.elapsed())
    }
}

/// Listens for changes until the task is aborted, reconnecting with
/// backoff; sends [`Change::Everything`] after each (re)connection.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    changes: broadcast::Sender<Change>,
    health: std::sync::Arc<FeedHealth>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Session::connect(&config, &tls, FEED_NAME).await {
            Err(e) => {
                health.lost();
                tracing::warn!(error = %e, "cannot reach Postgres for the metadata feed");
            }
            Ok(mut session) => {
                // LISTEN before reloading: a change committed between the
                // two is then announced rather than missed.
                match session
                    .client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                {
                    Err(e) => {
                        health.lost();
                        tracing::warn!(error = %e, "LISTEN failed");
                    }
                    Ok(()) => {
                        backoff = Duration::from_millis(200);
                        let _ = changes.send(Change::Everything);
                        follow_session(&mut session, &changes).await;
                        health.lost();
                        tracing::warn!("the metadata feed was interrupted; reconnecting");
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Forwards the session's announcements until it is lost.
async fn follow_session(session: &mut Session, changes: &broadcast::Sender<Change>) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = session.notifications.recv() => match note {
                Some(note) => {
                    if let Some(change) = parse(note.payload()) {
                        // No receiver yet is fine: nothing to refresh.
                        let _ = changes.send(change);
                    }
                }
                None => return,
            },
            _ = beat.tick() => {
                if !session.alive().await {
                    return;
                }
            }
        }
    }
}

/// The advisory lock the writer holds on its campaign session.
const WRITER_LOCK: i64 = 0x6169_726c_6f63_6b02;
/// The campaign session's `application_name`.
pub(super) const WRITER_NAME: &str = "airlock-writer";
/// How often a node that is not the writer tries for the lock.
const CAMPAIGN_POLL: Duration = Duration::from_secs(1);

/// Campaigns until every receiver of `role` is gone: takes the writer's
/// advisory lock when it is free, bumps the term (which fences the
/// previous writer's writes) and holds the lock while the session lives.
/// `role` holds the term while this node is the writer.
pub(super) async fn campaign(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    node: String,
    role: watch::Sender<Option<u64>>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Session::connect(&config, &tls, WRITER_NAME).await {
            Err(e) => tracing::warn!(error = %e, "cannot reach Postgres to campaign for writer"),
            Ok(session) => {
                backoff = Duration::from_millis(200);
                match hold_office(&session, &node, &role).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "the writer campaign's session failed"),
                }
                if role.send_replace(None).is_some() {
                    tracing::warn!("this node lost the writer lock; it serves as a reader now");
                }
            }
        }
        tokio::select! {
            () = role.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Tries for the lock until it is won, then holds it while the session
/// answers. Ok when nobody wants the role any more; an error when the
/// session is lost.
async fn hold_office(
    session: &Session,
    node: &str,
    role: &watch::Sender<Option<u64>>,
) -> Result<(), String> {
    loop {
        let won: bool = session
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if won {
            break;
        }
        tokio::select! {
            () = role.closed() => return Ok(()),
            () = tokio::time::sleep(CAMPAIGN_POLL) => {}
        }
    }
    // A new term waits for a commit of the previous writer in flight (it
    // holds the row FOR SHARE) and fails every later one.
    let term: i64 = session
        .client
        .query_one(
            "UPDATE airlock.writer SET term = term + 1, node = $1, since = now() \
             WHERE id = 1 RETURNING term",
            &[&node],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let term = u64::try_from(term).unwrap_or_default();
    tracing::info!(term, "this node is the cluster's writer");
    role.send_replace(Some(term));
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = role.closed() => return Ok(()),
            _ = beat.tick() => {
                if !session.alive().await {
                    return Err("the session stopped answering".into());
                }
            }
        }
    }
}

/// An announcement's payload: `{"c": collection, "k": key or null, "op": …}`.
fn parse(payload: &str) -> Option<Change> {
    #[derive(serde::Deserialize)]
    struct Note {
        c: String,
        k: Option<String>,
    }
    let note: Note = match serde_json::from_str(payload) {
        Ok(note) => note,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable metadata announcement; reloading everything");
            return Some(Change::Everything);
        }
    };
    // A collection this version does not know (a newer node wrote it).
    let collection = Collection::from_name(&note.c)?;
    Some(Change::Document {
        collection,
        key: note.k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_feed_counts_until_a_reload_that_started_after_it() {
        let health = FeedHealth::default();
        assert_eq!(health.lag(), None);
        let before = std::time::Instant::now();
        health.lost();
        assert!(health.lag().is_some());
        // A reload that began before the loss may have missed changes.
        health.current(before - Duration::from_millis(1));
        assert!(health.lag().is_some());
        health.current(std::time::Instant::now());
        assert_eq!(health.lag(), None);
    }

    #[test]
    fn announcements_name_a_document_or_its_whole_collection() {
        assert_eq!(
            parse(r#"{"c": "tokens", "k": "abc", "op": "update"}"#),
            Some(Change::Document {
                collection: Collection::Tokens,
                key: Some("abc".into())
            })
        );
        assert_eq!(
            parse(r#"{"c": "grants", "k": null, "op": "insert"}"#),
            Some(Change::Document {
                collection: Collection::Grants,
                key: None
            })
        );
        assert_eq!(parse(r#"{"c": "from_the_future", "k": "x"}"#), None);
        assert_eq!(parse("not json"), Some(Change::Everything));
    }
}

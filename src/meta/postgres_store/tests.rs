//! The Postgres store against a throwaway Postgres.

use super::*;
use crate::meta::test_postgres::TestPostgres;
use crate::meta::{Meta, contract};

async fn meta(postgres: &TestPostgres) -> Meta {
    Meta::new(Arc::new(PgMetaStore::open(&postgres.url()).await.unwrap()))
}

#[tokio::test]
async fn postgres_keeps_the_store_contract() {
    let postgres = TestPostgres::start();
    // Each contract on a fresh database, over a pool of its own, as
    // another node would connect.
    contract::conditional_writes_detect_concurrent_changes(meta(&postgres).await).await;
    let (admin, _) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .map(|(client, connection)| (client, tokio::spawn(connection)))
        .unwrap();
    admin
        .batch_execute("TRUNCATE airlock.documents CASCADE")
        .await
        .unwrap();
    contract::listings_page_and_filter_by_label_and_prefix(meta(&postgres).await).await;
    admin
        .batch_execute("TRUNCATE airlock.documents CASCADE")
        .await
        .unwrap();
    contract::each_queued_record_is_claimed_exactly_once(meta(&postgres).await).await;
}

#[tokio::test]
async fn two_nodes_share_documents_and_every_change_is_announced() {
    let postgres = TestPostgres::start();
    let (one, two) = (meta(&postgres).await, meta(&postgres).await);
    let (listener, mut connection) =
        tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (sender, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notification(note) = message {
                let _ = sender.send(note.payload().to_string());
            }
        }
    });
    listener.batch_execute("LISTEN airlock_meta").await.unwrap();
    one.put(Collection::Grants, "emea", &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    let read: Option<serde_json::Value> = two.get(Collection::Grants, "emea").await.unwrap();
    assert_eq!(read, Some(serde_json::json!({"n": 1})));
    assert!(two.delete(Collection::Grants, "emea").await.unwrap());
    let mut seen = Vec::new();
    for _ in 0..2 {
        let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(serde_json::from_str::<serde_json::Value>(&note).unwrap());
    }
    assert_eq!(
        seen,
        vec![
            serde_json::json!({"c": "grants", "k": "emea", "op": "insert"}),
            serde_json::json!({"c": "grants", "k": "emea", "op": "delete"}),
        ]
    );
    // Nodes starting together create the schema once, without racing.
    let url = postgres.url();
    let again = futures::future::join_all((0..3).map(|_| PgMetaStore::open(&url))).await;
    assert!(again.iter().all(Result::is_ok));
}

/// The next change naming `key`, skipping others.
async fn next_change_of(changes: &mut broadcast::Receiver<Change>, key: &str) -> Change {
    loop {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("no change announced within 10 s")
            .unwrap();
        match &change {
            Change::Document { key: Some(k), .. } if k == key => return change,
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_feed_announces_other_nodes_changes_and_its_own_reconnection() {
    let postgres = TestPostgres::start();
    let store = PgMetaStore::open(&postgres.url()).await.unwrap();
    let mut changes = store.subscribe().unwrap();
    let other = meta(&postgres).await;
    // The feed's session may still be connecting (a busy machine): write
    // until it hears one.
    let mut heard = None;
    for _ in 0..50 {
        other
            .put(Collection::Grants, "emea", &serde_json::json!({}))
            .await
            .unwrap();
        let next = next_change_of(&mut changes, "emea");
        if let Ok(change) = tokio::time::timeout(Duration::from_millis(200), next).await {
            heard = Some(change);
            break;
        }
    }
    assert_eq!(
        heard,
        Some(Change::Document {
            collection: Collection::Grants,
            key: Some("emea".into())
        })
    );
    // Keys too long to announce name their whole collection.
    let long = "k".repeat(1001);
    other
        .put(Collection::Tokens, &long, &serde_json::json!({}))
        .await
        .unwrap();
    loop {
        let change = changes.recv().await.unwrap();
        if let Change::Document {
            collection: Collection::Tokens,
            key,
        } = change
        {
            assert_eq!(key, None);
            break;
        }
    }
    // Postgres drops the feed's session: the node reconnects and, as
    // announcements were lost meanwhile, tells its caches to reload.
    let (admin, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&postgres_sessions::FEED_NAME],
        )
        .await
        .unwrap();
    // Both stores' feeds (each node has one).
    assert_eq!(killed.len(), 2);
    let reloaded = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if changes.recv().await.unwrap() == Change::Everything {
                return;
            }
        }
    })
    .await;
    assert!(reloaded.is_ok(), "no reload after the feed was cut");
    // Until a follower has reloaded its caches, the node counts as behind.
    assert!(store.feed_lag().is_some());
    store.caches_current(std::time::Instant::now());
    assert_eq!(store.feed_lag(), None);
    other
        .put(Collection::Grants, "apac", &serde_json::json!({}))
        .await
        .unwrap();
    next_change_of(&mut changes, "apac").await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let error = PgMetaStore::open(&url).await.unwrap_err();
    assert!(matches!(error, MetaError::Postgres(_)), "{error}");
    assert!(error.to_string().contains("Postgres"), "{error}");
}

#[tokio::test]
async fn tls_connects_to_a_server_the_named_ca_signed_and_refuses_an_unknown_one() {
    let (postgres, ca) = TestPostgres::start_with_tls();
    let url = |query: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            postgres.port()
        )
    };
    // The default mode (require), the CA named: encrypted, and it works.
    let store = PgMetaStore::open(&url(&format!("?sslrootcert={}", ca.display())))
        .await
        .unwrap();
    let client = store.pool.get().await.unwrap();
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the connection is not encrypted");
    drop(client);
    let meta = Meta::new(Arc::new(store));
    meta.put(Collection::Grants, "g", &serde_json::json!({"over": "tls"}))
        .await
        .unwrap();
    let read: Option<serde_json::Value> = meta.get(Collection::Grants, "g").await.unwrap();
    assert_eq!(read, Some(serde_json::json!({"over": "tls"})));
    // Without the CA, the system's roots do not vouch for the server: a
    // clear refusal, never a fallback to plaintext.
    let refused = PgMetaStore::open(&url("")).await.unwrap_err().to_string();
    assert!(
        refused.contains("certificate") || refused.contains("Certificate"),
        "{refused}"
    );
}

#[test]
fn urls_require_tls_unless_they_turn_it_off() {
    let (config, ca) = parse_url("postgres://airlock@db.example:5432/meta").unwrap();
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    assert_eq!(ca, None);
    let (config, ca) =
        parse_url("postgresql://db.example/meta?sslrootcert=/etc/ca.pem&application_name=a")
            .unwrap();
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );
    assert_eq!(config.get_application_name(), Some("a"));
    assert_eq!(ca, Some(PathBuf::from("/etc/ca.pem")));
    let (config, _) = parse_url("postgres://127.0.0.1:5544/meta?sslmode=disable").unwrap();
    assert_eq!(
        config.get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    );
    assert!(
        parse_url("postgres://h/m?sslmode=prefer")
            .unwrap_err()
            .contains("plaintext")
    );
    assert!(
        parse_url("mysql://h/m")
            .unwrap_err()
            .contains("postgres://")
    );
    assert!(
        parse_url("postgres://h/m?bogus=1")
            .unwrap_err()
            .contains("Postgres accepts")
    );
}

/// Waits until `role` satisfies `ready`, for up to 20 s.
async fn role_until(
    role: &mut watch::Receiver<Option<u64>>,
    ready: impl Fn(Option<u64>) -> bool,
) -> Option<u64> {
    let waited = tokio::time::timeout(Duration::from_secs(20), role.wait_for(|r| ready(*r))).await;
    *waited
        .expect("the writer role did not change in 20 s")
        .unwrap()
}

#[tokio::test]
async fn one_node_writes_at_a_time_and_a_replaced_writer_is_fenced() {
    let postgres = TestPostgres::start();
    let one = Arc::new(PgMetaStore::open(&postgres.url()).await.unwrap());
    let two = Arc::new(PgMetaStore::open(&postgres.url()).await.unwrap());
    let mut role_one = one.campaign("one");
    let first = role_until(&mut role_one, |r| r.is_some()).await.unwrap();
    let role_two = two.campaign("two");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(*role_two.borrow(), None, "two writers at once");
    let fenced = Meta::new(Arc::clone(&one) as Arc<dyn MetaStore>).fenced(first);
    fenced
        .put(Collection::Jobs, "j1", &serde_json::json!({"n": 1}))
        .await
        .unwrap();
    // The writer's session dies (as when its node is partitioned away).
    let (admin, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "one session holds the writer lock");
    // Some node is the writer again, under a newer term.
    let next = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let terms = [*role_one.borrow(), *role_two.borrow()];
            // The old writer may not have noticed yet (fencing covers that
            // window): wait until it has stepped down.
            let holders = terms.iter().filter(|t| t.is_some()).count();
            if let Some(term) = terms.into_iter().flatten().find(|t| *t > first)
                && holders == 1
            {
                return term;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("nobody took over in 20 s");
    assert!(next > first);
    // Whatever the old writer still tries is refused.
    let refused = fenced
        .put(Collection::Jobs, "j1", &serde_json::json!({"n": 2}))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, MetaError::Fenced { term } if term == first),
        "{refused}"
    );
    assert!(matches!(
        fenced.delete(Collection::Jobs, "j1").await,
        Err(MetaError::Fenced { .. })
    ));
    let stored: serde_json::Value = fenced.get(Collection::Jobs, "j1").await.unwrap().unwrap();
    assert_eq!(stored, serde_json::json!({"n": 1}));
    // The new term writes.
    let writer = if role_one.borrow().is_some() {
        &one
    } else {
        &two
    };
    Meta::new(Arc::clone(writer) as Arc<dyn MetaStore>)
        .fenced(next)
        .put(Collection::Jobs, "j1", &serde_json::json!({"n": 3}))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agents_slots_and_starts_are_counted_across_nodes() {
    let postgres = TestPostgres::start();
    let one = PgMetaStore::open(&postgres.url()).await.unwrap();
    let two = PgMetaStore::open(&postgres.url()).await.unwrap();
    let (one, two) = (one.shared_limits().unwrap(), two.shared_limits().unwrap());
    let ttl = Duration::from_secs(30);
    let first = one
        .acquire_slot("a1", 2, "one", ttl)
        .await
        .unwrap()
        .unwrap();
    let _second = two
        .acquire_slot("a1", 2, "two", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.acquire_slot("a1", 2, "two", ttl).await.unwrap(), None);
    assert_eq!(one.acquire_slot("a1", 2, "one", ttl).await.unwrap(), None);
    // Another agent has its own slots.
    assert!(
        one.acquire_slot("a2", 2, "one", ttl)
            .await
            .unwrap()
            .is_some()
    );
    one.release_slot(&first).await.unwrap();
    assert!(
        two.acquire_slot("a1", 2, "two", ttl)
            .await
            .unwrap()
            .is_some()
    );
    // A node that dies stops renewing: its slots free up when they expire.
    let short = Duration::from_millis(500);
    let lost = one
        .acquire_slot("a3", 1, "one", short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.acquire_slot("a3", 1, "two", ttl).await.unwrap(), None);
    one.renew_slots(std::slice::from_ref(&lost), short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        two.acquire_slot("a3", 1, "two", ttl)
            .await
            .unwrap()
            .is_some()
    );

    // 10 a minute: two nodes drawing chunks of 5 empty the bucket.
    assert_eq!(one.take_budget("a1", 10, 5).await.unwrap(), 5);
    assert_eq!(two.take_budget("a1", 10, 5).await.unwrap(), 5);
    assert_eq!(one.take_budget("a1", 10, 5).await.unwrap(), 0);
    // It refills at 10 a minute: one start after six seconds.
    tokio::time::sleep(Duration::from_millis(6100)).await;
    assert_eq!(two.take_budget("a1", 10, 5).await.unwrap(), 1);
}

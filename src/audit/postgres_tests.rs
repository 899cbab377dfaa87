//! The shared audit trail against a throwaway Postgres.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use super::{AuditLog, AuditRecord, AuditSource, Outcome};
use crate::meta::PgMetaStore;
use crate::meta::test_postgres::TestPostgres;

fn record(principal: &str, age: chrono::Duration) -> AuditRecord {
    AuditRecord {
        time: Utc::now() - age,
        request: "DoGet".into(),
        principal_kind: Some("agent".into()),
        principal: Some(principal.into()),
        swarm: Some("ops".into()),
        token_id: None,
        remote_addr: None,
        statement: Some("SELECT 1".into()),
        tables: None,
        columns: None,
        policy: None,
        outcome: Outcome::Ok,
        status: "OK".into(),
        reason: None,
        rows: Some(1),
        bytes: 10,
        duration: Duration::from_millis(3),
        truncated: false,
    }
}

async fn sql(context: &SessionContext, query: &str) -> String {
    let batches = context.sql(query).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_records_are_read_on_any_node_and_old_days_are_dropped() {
    let postgres = TestPostgres::start();
    let store = PgMetaStore::open(&postgres.url()).await.unwrap();
    let pool = crate::meta::MetaStore::postgres(&store).unwrap();
    let retention = Duration::from_secs(90 * 86_400);
    let one = AuditLog::open_shared(pool.clone(), "one:1".into(), retention)
        .await
        .unwrap();
    let two = AuditLog::open_shared(pool.clone(), "two:2".into(), retention)
        .await
        .unwrap();
    for n in 0..3 {
        one.record(record(&format!("a{n}"), chrono::Duration::minutes(n)));
    }
    two.record(record("b0", chrono::Duration::zero()));
    // A record from before the retention: its day's partition goes.
    two.record(record("ancient", chrono::Duration::days(100)));
    for log in [&one, &two] {
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    let AuditSource::Postgres(table) = one.source() else {
        panic!("a shared trail is read from Postgres");
    };
    let context = SessionContext::new();
    context.register_table("audit", table).unwrap();
    assert_eq!(
        sql(
            &context,
            "SELECT node, count(*) AS n FROM audit GROUP BY node ORDER BY node"
        )
        .await,
        "+-------+---+\n| node  | n |\n+-------+---+\n| one:1 | 3 |\n| two:2 | 2 |\n+-------+---+"
    );
    // Filters go to Postgres; the answer is the one DataFusion would give.
    let recent = sql(
        &context,
        "SELECT principal FROM audit WHERE swarm = 'ops' AND time > now() - INTERVAL '30' SECOND \
         AND principal LIKE 'a%' ORDER BY principal",
    )
    .await;
    assert_eq!(
        recent,
        "+-----------+\n| principal |\n+-----------+\n| a0        |\n+-----------+"
    );
    let newest = sql(
        &context,
        "SELECT principal FROM audit ORDER BY time DESC LIMIT 2",
    )
    .await;
    assert!(newest.contains("b0") || newest.contains("a0"), "{newest}");
    assert!(!newest.contains("ancient"), "{newest}");

    // Retention drops the old day's partition, with its record.
    assert_eq!(super::postgres::purge(&pool, retention).await.unwrap(), 1);
    assert_eq!(
        sql(
            &context,
            "SELECT count(*) AS n FROM audit WHERE principal = 'ancient'"
        )
        .await,
        "+---+\n| n |\n+---+\n| 0 |\n+---+"
    );
}

//! The audit trail: every request leaves a record admins can query with
//! SQL; nobody else can; records survive restarts and never hold secrets.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::governance::world;
use crate::harness::{Client, PASSWORD, TestServer, action, query, rows};

const COLUMNS: &str = "request, principal_kind, principal, swarm, outcome, status, \
    statement, tables, columns, policy, rows, reason, remote_addr, truncated";

/// The audit rows (as `|`-joined text, in COLUMNS order) once `ready`
/// holds for them; records are written a fraction of a second after the
/// request ends.
async fn audit_until(admin: &mut Client, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, batches) = query(
            admin,
            &format!("SELECT {COLUMNS} FROM airlock.audit ORDER BY time"),
        )
        .await
        .unwrap();
        let found = rows(&batches);
        if ready(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "audit never showed the records: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(records: &'a [String], parts: &[&str]) -> &'a str {
    records
        .iter()
        .find(|r| parts.iter().all(|p| r.contains(p)))
        .unwrap_or_else(|| panic!("no record with {parts:?} in {records:#?}"))
}

#[tokio::test]
async fn every_request_is_recorded_with_who_what_and_outcome() {
    let mut w = world().await;
    let eu_token = w.eu_agent.token().unwrap().clone();

    // A failed handshake, a governed query, a refused statement, a probe of
    // an invisible table, an action.
    let mut anonymous = w.server.anonymous().await;
    assert!(
        anonymous
            .handshake("admin", "wrong-password-XYZ")
            .await
            .is_err()
    );
    let (_, batches) = query(
        &mut w.eu_agent,
        "SELECT id, email FROM sales.orders ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches).len(), 2);
    query(&mut w.eu_agent, "DROP TABLE sales.orders")
        .await
        .unwrap_err();
    query(&mut w.stranger, "SELECT * FROM sales.orders")
        .await
        .unwrap_err();
    action(&mut w.admin, "grant.list", &json!({}))
        .await
        .unwrap();

    let records = audit_until(&mut w.admin, |r| {
        r.iter().any(|r| r.starts_with("DoAction grant.list"))
    })
    .await;

    let handshake = find(
        &records,
        &["Handshake|NULL|admin|NULL|denied|Unauthenticated"],
    );
    assert!(handshake.contains("127.0.0.1:"), "{handshake}");
    let fetched = find(
        &records,
        &["DoGet TicketStatementQuery|agent|a1|emea|ok|Ok"],
    );
    assert!(
        fetched.contains("SELECT id, email FROM sales.orders ORDER BY id"),
        "{fetched}"
    );
    assert!(fetched.contains("|sales.orders|"), "{fetched}");
    // Columns read from storage include the filter's, not the denied one.
    assert!(
        fetched.contains("sales.orders.id") && fetched.contains("sales.orders.region"),
        "{fetched}"
    );
    assert!(!fetched.contains("sales.orders.ssn"), "{fetched}");
    // The policy applied: filter, mask, denied column.
    assert!(
        fetched.contains("agent_attr('region')") && fetched.contains("\"masked\":[\"email\"]"),
        "{fetched}"
    );
    assert!(fetched.contains("\"denied\":[\"ssn\"]"), "{fetched}");
    assert!(fetched.contains("|2|NULL|"), "rows returned: {fetched}");
    let dropped = find(
        &records,
        &["GetFlightInfo CommandStatementQuery|agent|a1|emea|denied"],
    );
    assert!(dropped.contains("DROP TABLE is not allowed"), "{dropped}");
    let probe = find(&records, &["|x1|nogrant|error|NotFound"]);
    assert!(probe.contains("not visible"), "{probe}");
    find(&records, &["DoAction grant.list|admin|admin|NULL|ok"]);

    // No secret anywhere in the trail.
    let (_, batches) = query(&mut w.admin, "SELECT * FROM airlock.audit")
        .await
        .unwrap();
    let everything = rows(&batches).join("\n");
    for secret in ["wrong-password-XYZ", PASSWORD, eu_token.as_str()] {
        assert!(!everything.contains(secret), "a secret reached the audit");
    }

    // Only admins can read it, or even see it exists.
    let err = query(&mut w.eu_agent, "SELECT * FROM airlock.audit")
        .await
        .unwrap_err();
    assert!(err.starts_with("NotFound"), "{err}");
    // Nobody can register a table in its schema.
    let err = action(
        &mut w.admin,
        "table.register",
        &json!({"name": "airlock.audit2", "source": "file:///nowhere.parquet"}),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("reserved"), "{}", err.message());
}

#[tokio::test]
async fn records_survive_a_restart_and_admins_filter_them_with_sql() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    query(&mut admin, "SELECT 42 AS answer").await.unwrap();
    let dir = server.dir.clone();
    let tmp = server.stop().await;

    let server = TestServer::start_in(&dir, |_| {}).await;
    let mut admin = server.admin().await;
    let (_, batches) = query(
        &mut admin,
        "SELECT count(*) FROM airlock.audit \
         WHERE statement = 'SELECT 42 AS answer' AND outcome = 'ok' AND rows = 1",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), vec!["1"]);
    drop(tmp);
}

#[tokio::test]
async fn truncated_results_and_limits_are_recorded() {
    let w = world().await;
    let mut admin = w.admin;
    action(
        &mut admin,
        "grant.set",
        &json!({"swarm": "apac", "tables": {"sales.*": {}}, "limits": {"max_rows": 1}}),
    )
    .await
    .unwrap();
    let mut apac = w.apac_agent;
    let (_, batches) = query(&mut apac, "SELECT id FROM sales.orders")
        .await
        .unwrap();
    assert_eq!(rows(&batches).len(), 1);
    let records = audit_until(&mut admin, |r| {
        r.iter()
            .any(|r| r.starts_with("DoGet") && r.contains("|p1|"))
    })
    .await;
    let fetched = find(&records, &["DoGet TicketStatementQuery|agent|p1|apac|ok"]);
    assert!(fetched.ends_with("|true"), "{fetched}");
    assert!(fetched.contains("|1|NULL|"), "{fetched}");
}

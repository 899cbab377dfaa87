//! Limits on agents' queries: the row cap (with a notice the client can
//! read), the time limit, concurrency and rate per agent.

use std::time::Duration;

use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::execution::{SLOW, load_numbers, wait_until_idle};
use crate::governance::token;
use crate::harness::{Client, TestServer, action, query, total_rows};

/// A server with `big.numbers` (0..n) and an agent of swarm `s` whose
/// grant on `big.*` has `limits`.
async fn agent_with_limits(
    server: &TestServer,
    n: i64,
    limits: Value,
) -> (Client, FlightSqlServiceClient<Channel>) {
    let mut admin = server.admin().await;
    load_numbers(server, &mut admin, n).await;
    action(
        &mut admin,
        "grant.set",
        &json!({"swarm": "s", "tables": {"big.*": {}}, "limits": limits}),
    )
    .await
    .unwrap();
    let token = token(
        &mut admin,
        json!({"kind": "agent", "name": "a1", "swarm": "s"}),
    )
    .await;
    (admin, server.with_token(&token).await)
}

/// Runs `sql` and returns its batches with every distinct app_metadata
/// they carry, as clients that read app_metadata (pyarrow's read_chunk)
/// see them.
async fn query_with_notices(client: &mut Client, sql: &str) -> (Vec<RecordBatch>, Vec<Value>) {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut request = tonic::Request::new(ticket);
    let token = client.token().unwrap().clone();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let messages = client
        .inner_mut()
        .do_get(request)
        .await
        .unwrap()
        .into_inner()
        .map_err(arrow_flight::error::FlightError::from);
    let mut decoder = FlightDataDecoder::new(messages);
    let (mut batches, mut notices) = (Vec::new(), Vec::new());
    while let Some(decoded) = decoder.try_next().await.unwrap() {
        if !decoded.app_metadata().is_empty() {
            let notice: Value = serde_json::from_slice(&decoded.app_metadata()).unwrap();
            if !notices.contains(&notice) {
                notices.push(notice);
            }
        }
        if let DecodedPayload::RecordBatch(batch) = decoded.payload {
            batches.push(batch);
        }
    }
    (batches, notices)
}

#[tokio::test]
async fn results_stop_at_max_rows_and_say_so() {
    let server = TestServer::start().await;
    let (mut admin, mut agent) =
        agent_with_limits(&server, 100_000, json!({"max_rows": 1000})).await;

    let (batches, notices) = query_with_notices(&mut agent, "SELECT n FROM big.numbers").await;
    assert_eq!(total_rows(&batches), 1000);
    assert_eq!(
        notices,
        vec![json!({"airlock": {"truncated": true, "max_rows": 1000}})]
    );

    // Exactly at the cap is not a cut.
    let (batches, notices) =
        query_with_notices(&mut agent, "SELECT n FROM big.numbers WHERE n < 1000").await;
    assert_eq!(total_rows(&batches), 1000);
    assert!(notices.is_empty(), "{notices:?}");

    // Stock clients that ignore app_metadata still get a valid, shorter result.
    let (_, batches) = query(&mut agent, "SELECT n FROM big.numbers ORDER BY n DESC")
        .await
        .unwrap();
    assert_eq!(total_rows(&batches), 1000);

    // Aggregates still see every permitted row; only the output is capped.
    let (_, batches) = query(&mut agent, "SELECT count(*) FROM big.numbers")
        .await
        .unwrap();
    assert_eq!(crate::harness::rows(&batches), vec!["100000"]);

    // Admins are not capped.
    let (batches, notices) = query_with_notices(&mut admin, "SELECT n FROM big.numbers").await;
    assert_eq!(total_rows(&batches), 100_000);
    assert!(notices.is_empty());
}

#[tokio::test]
async fn the_configured_default_caps_grants_without_limits() {
    let server = TestServer::start_with(|c| c.limits.max_rows = 7).await;
    let (_admin, mut agent) = agent_with_limits(&server, 100, json!({})).await;
    let (batches, notices) = query_with_notices(&mut agent, "SELECT n FROM big.numbers").await;
    assert_eq!(total_rows(&batches), 7);
    assert_eq!(notices[0]["airlock"]["max_rows"], 7);
}

#[tokio::test]
async fn a_grant_timeout_stops_the_agents_query_only() {
    let server = TestServer::start().await;
    let (mut admin, mut agent) = agent_with_limits(&server, 100_000, json!({"timeout_s": 1})).await;
    let started = std::time::Instant::now();
    let err = query(&mut agent, SLOW).await.unwrap_err();
    assert!(
        err.starts_with("DeadlineExceeded") && err.contains("1s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_until_idle(&server).await;
    // The admin's default limit is the server's (5 minutes): a quick query runs.
    let (_, batches) = query(&mut admin, "SELECT count(*) FROM big.numbers")
        .await
        .unwrap();
    assert_eq!(crate::harness::rows(&batches), vec!["100000"]);
}

/// Opens a DoGet of a never-ending result and reads one batch, so the query
/// holds its admission permit until the returned stream is dropped.
async fn hold_a_query(
    server: &TestServer,
    token: &str,
) -> arrow_flight::decode::FlightRecordBatchStream {
    let mut client = server.with_token(token).await;
    let info = client
        .execute(
            "SELECT a.n, b.n FROM big.numbers a CROSS JOIN big.numbers b".into(),
            None,
        )
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = client.do_get(ticket).await.unwrap();
    stream.next().await.unwrap().unwrap();
    stream
}

#[tokio::test]
async fn concurrent_queries_past_the_limit_are_refused_with_resource_exhausted() {
    let server = TestServer::start().await;
    let (mut admin, mut agent) = agent_with_limits(
        &server,
        100_000,
        json!({"max_concurrent": 1, "max_rows": 1_000_000_000}),
    )
    .await;
    let token = agent.token().unwrap().clone();
    let held = hold_a_query(&server, &token).await;

    let err = query(&mut agent, "SELECT 1 FROM big.numbers LIMIT 1")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("ResourceExhausted") && err.contains("1 queries already running"),
        "{err}"
    );
    // Other principals are not affected.
    query(&mut admin, "SELECT 1 FROM big.numbers LIMIT 1")
        .await
        .unwrap();

    drop(held);
    wait_until_idle(&server).await;
    let (_, batches) = query(&mut agent, "SELECT n FROM big.numbers LIMIT 1")
        .await
        .unwrap();
    assert_eq!(total_rows(&batches), 1);
}

#[tokio::test]
async fn queries_past_the_rate_limit_are_refused_until_it_refills() {
    let server = TestServer::start().await;
    let (_admin, mut agent) = agent_with_limits(&server, 10, json!({"per_minute": 2})).await;
    for _ in 0..2 {
        query(&mut agent, "SELECT n FROM big.numbers")
            .await
            .unwrap();
    }
    let err = query(&mut agent, "SELECT n FROM big.numbers")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("ResourceExhausted") && err.contains("2 queries per minute"),
        "{err}"
    );
    assert!(err.contains("retry in"), "{err}");
    // A second agent of the same swarm has its own budget.
    let mut admin = server.admin().await;
    let other = token(
        &mut admin,
        json!({"kind": "agent", "name": "a2", "swarm": "s"}),
    )
    .await;
    let mut other = server.with_token(&other).await;
    query(&mut other, "SELECT n FROM big.numbers")
        .await
        .unwrap();
}

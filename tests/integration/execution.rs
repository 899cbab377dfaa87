//! Running queries: timeouts, client disconnects and CancelFlightInfo all
//! stop the work, DuckDB scans included, and the server keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::{Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use prost::Message;

use crate::harness::{TestServer, file_url, query, rows, write_parquet};

/// A billion-row join: long enough to outlast any test deadline, and built
/// from small polls, so stopping it is prompt.
pub(crate) const SLOW: &str =
    "SELECT count(*) FROM big.numbers a JOIN big.numbers b ON a.n % 10 = b.n % 10";

pub(crate) async fn load_numbers(server: &TestServer, client: &mut crate::harness::Client, n: i64) {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batches: Vec<RecordBatch> = (0..n)
        .step_by(50_000)
        .map(|start| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(
                    start..(start + 50_000).min(n),
                ))],
            )
            .unwrap()
        })
        .collect();
    let file = server.files.join("numbers.parquet");
    write_parquet(&file, &batches);
    let status = server.load(client, "big.numbers", &file_url(&file)).await;
    assert_eq!(status["state"], "succeeded", "{status}");
}

pub(crate) async fn wait_until_idle(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.app.replica.active_scans() > 0 || !server.app.query.running().is_empty() {
        assert!(
            Instant::now() < deadline,
            "scans still running: {}",
            server.app.replica.active_scans()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn queries_past_the_timeout_stop_with_deadline_exceeded() {
    let server = TestServer::start_with(|c| c.query.timeout = Duration::from_millis(1500)).await;
    let mut admin = server.admin().await;
    load_numbers(&server, &mut admin, 100_000).await;
    let err = query(&mut admin, SLOW).await.unwrap_err();
    assert!(
        err.starts_with("DeadlineExceeded") && err.contains("time limit of 1s 500ms"),
        "{err}"
    );
    wait_until_idle(&server).await;
    // Everyone else is still served.
    let (_, batches) = query(&mut admin, "SELECT count(*) FROM big.numbers")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["100000"]);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_work() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    load_numbers(&server, &mut admin, 400_000).await;
    {
        // A big result: read one batch, then hang up.
        let mut client = server.admin().await;
        let info = client
            .execute(
                "SELECT a.n, b.n FROM big.numbers a CROSS JOIN big.numbers b".to_string(),
                None,
            )
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let mut stream = client.do_get(ticket).await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.num_rows() > 0);
        assert!(server.app.replica.active_scans() > 0 || !server.app.query.running().is_empty());
        drop(stream);
        drop(client);
    }
    wait_until_idle(&server).await;
    let (_, batches) = query(&mut admin, "SELECT max(n) FROM big.numbers")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["399999"]);
}

#[tokio::test]
async fn cancel_flight_info_stops_a_running_query() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    load_numbers(&server, &mut admin, 100_000).await;
    let info = admin.execute(SLOW.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut reader = server.admin().await;
    let running = tokio::spawn(async move {
        let mut stream = reader.do_get(ticket).await.unwrap();
        let mut outcome = Ok(());
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                outcome = Err(crate::harness::describe(e));
                break;
            }
        }
        outcome
    });
    // Wait until the query is registered as running, then cancel it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.app.query.running().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = CancelFlightInfoRequest { info: Some(info) }.encode_to_vec();
    let mut result = admin
        .do_action(Action::new("CancelFlightInfo", body))
        .await
        .unwrap();
    let answer = result.message().await.unwrap().unwrap();
    let status = CancelFlightInfoResult::decode(answer.body).unwrap();
    assert_eq!(status.status, CancelStatus::Cancelled as i32);
    let outcome = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .unwrap()
        .unwrap();
    let err = outcome.unwrap_err();
    assert!(
        err.starts_with("Cancelled") && err.contains("query cancelled"),
        "{err}"
    );
    wait_until_idle(&server).await;
}

/// Two clients running one query over and over, each result checked
/// against the allowed ones, until [`Readers::finish`].
struct Readers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<usize>>,
}

impl Readers {
    async fn start(server: &TestServer, sql: &'static str, allowed: &[String]) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..2 {
            let mut client = server.admin().await;
            let stop = Arc::clone(&stop);
            let allowed = allowed.to_vec();
            handles.push(tokio::spawn(async move {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (_, batches) = query(&mut client, sql).await.unwrap();
                    let got = rows(&batches).remove(0);
                    assert!(allowed.contains(&got), "a query saw a mix of states: {got}");
                    seen += 1;
                }
                seen
            }));
        }
        Self { stop, handles }
    }

    /// Stops the readers; each must have run at least once.
    async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.handles {
            assert!(handle.await.unwrap() > 0);
        }
    }
}

#[tokio::test]
async fn queries_during_a_sync_see_the_old_or_the_new_table_never_a_mix() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    // Two versions of 600k rows: big enough to be scanned as several
    // partitions, with different sums.
    let version = |offset: i64| -> Vec<RecordBatch> {
        (0..600_000i64)
            .step_by(100_000)
            .map(|start| {
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(Int64Array::from_iter_values(
                        (start..start + 100_000).map(|n| n + offset),
                    ))],
                )
                .unwrap()
            })
            .collect()
    };
    let file = server.files.join("flip.parquet");
    let totals = |offset: i64| {
        format!(
            "600000|{}",
            (0..600_000i64).map(|n| n + offset).sum::<i64>()
        )
    };
    write_parquet(&file, &version(0));
    server.load(&mut admin, "big.flip", &file_url(&file)).await;
    let allowed = [totals(0), totals(1_000_000)];

    let readers = Readers::start(&server, "SELECT count(*), sum(n) FROM big.flip", &allowed).await;
    for round in 1..=4 {
        write_parquet(&file, &version(if round % 2 == 1 { 1_000_000 } else { 0 }));
        let status = server.sync(&mut admin, "big.flip").await;
        assert_eq!(status["state"], "succeeded", "{status}");
    }
    readers.finish().await;
    // The last load (round 4) wrote version 0 back.
    let (_, batches) = query(&mut admin, "SELECT count(*), sum(n) FROM big.flip")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec![allowed[0].clone()]);
}

#[tokio::test]
async fn queries_during_an_in_place_merge_see_all_of_it_or_none() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
    ]));
    // 600k keys (scanned as several partitions, like big.flip above),
    // every row rewritten by each round: an upsert deletes and inserts
    // 600k rows in place while the readers scan.
    let round = |r: i64| -> Vec<RecordBatch> {
        (0..600_000i64)
            .step_by(100_000)
            .map(|start| {
                let keys = start..start + 100_000;
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from_iter_values(keys.clone())),
                        Arc::new(Int64Array::from_iter_values(keys.clone().map(|_| r))),
                        Arc::new(Int64Array::from_iter_values(
                            keys.map(|k| k + r * 1_000_000),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect()
    };
    let totals = |r: i64| {
        format!(
            "600000|{}",
            (0..600_000i64).map(|k| k + r * 1_000_000).sum::<i64>()
        )
    };
    let file = server.files.join("merge.parquet");
    write_parquet(&file, &round(0));
    crate::harness::action(
        &mut admin,
        "table.register",
        &serde_json::json!({
            "name": "big.merge",
            "source": file_url(&file),
            "strategy": "incremental",
            "primary_key": ["k"],
            "cursor": "v",
        }),
    )
    .await
    .unwrap();
    let first = server.sync(&mut admin, "big.merge").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let allowed: Vec<String> = (0..=4).map(totals).collect();

    let readers = Readers::start(&server, "SELECT count(*), sum(n) FROM big.merge", &allowed).await;
    for r in 1..=4 {
        write_parquet(&file, &round(r));
        let status = server.sync(&mut admin, "big.merge").await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["table_rows"], 600_000, "{status}");
    }
    readers.finish().await;
    let (_, batches) = query(&mut admin, "SELECT count(*), sum(n) FROM big.merge")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec![allowed[4].clone()]);
}

#[tokio::test]
async fn the_deadline_stops_the_work_even_when_the_client_stops_reading() {
    let server = TestServer::start_with(|c| c.query.timeout = Duration::from_secs(1)).await;
    let mut admin = server.admin().await;
    load_numbers(&server, &mut admin, 100_000).await;
    let info = admin
        .execute(
            "SELECT a.n, b.n FROM big.numbers a CROSS JOIN big.numbers b".to_string(),
            None,
        )
        .await
        .unwrap();
    let mut stream = admin
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().unwrap().num_rows() > 0);
    // Stop reading: flow control fills up and the server can no longer send.
    // The deadline must still stop DuckDB and the plan.
    let deadline = Instant::now() + Duration::from_secs(20);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while server.app.replica.active_scans() > 0 {
        assert!(
            Instant::now() < deadline,
            "scans still running after the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading again ends with the timeout, not with a truncated success.
    let mut outcome = Ok(());
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            outcome = Err(crate::harness::describe(e));
            break;
        }
    }
    let err = outcome.unwrap_err();
    assert!(err.starts_with("DeadlineExceeded"), "{err}");
}

//! Replication from files: incremental, append and full strategies,
//! watermarks, schema drift, cancellation, schedules and job listings.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::{Value, json};

use crate::harness::{
    Client, TestServer, action, describe, file_url, query, rows, wait_for_job, write_parquet,
};

/// 2026-01-01T00:00:00Z in microseconds.
const T0: i64 = 1_767_225_600_000_000;
const MINUTE: i64 = 60_000_000;

/// Orders `ids`, each updated at T0 + id minutes (+ `shift` minutes), with `status`.
fn orders(ids: std::ops::Range<i64>, status: &str, shift: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
        Field::new(
            "updated_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
    ]));
    let n = ids.clone().count();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from(vec![status; n])),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.map(|id| T0 + (id + shift) * MINUTE),
            )),
        ],
    )
    .unwrap()
}

async fn one(client: &mut Client, sql: &str) -> String {
    let (_, batches) = query(client, sql).await.unwrap();
    rows(&batches).join("\n")
}

async fn start(client: &mut Client, table: &str) -> String {
    let started = action(client, "sync.start", &json!({"table": table}))
        .await
        .unwrap();
    started["job_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn incremental_syncs_upsert_rows_past_the_watermark() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let dir = server.files.join("orders");
    write_parquet(&dir.join("a.parquet"), &[orders(1..101, "placed", 0)]);
    let registered = action(
        &mut admin,
        "table.register",
        &json!({
            "name": "shop.orders",
            "source": format!("{}/*.parquet", file_url(&dir)),
            "strategy": "incremental",
            "primary_key": ["id"],
            "cursor": "updated_at",
            "overlap": "30s",
        }),
    )
    .await
    .unwrap();
    assert_eq!(registered["strategy"], "incremental");
    assert_eq!(registered["columns"][2]["type"], "TIMESTAMP");

    let first = server.sync(&mut admin, "shop.orders").await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(first["rows"], 100);
    assert_eq!(first["watermark_before"], Value::Null);
    assert_eq!(first["watermark_after"], "2026-01-01T01:40:00");

    // Ten updates (later timestamps), ten new orders, and a late-arriving
    // row older than the watermark, which incremental syncs do not see.
    write_parquet(
        &dir.join("b.parquet"),
        &[
            orders(1..11, "shipped", 200),
            orders(101..111, "placed", 0),
            orders(50..51, "lost", -40),
        ],
    );
    let second = server.sync(&mut admin, "shop.orders").await;
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(second["watermark_before"], "2026-01-01T01:40:00");
    assert_eq!(second["watermark_after"], "2026-01-01T03:30:00");
    // Read: the row at the old watermark (inside the overlap) + 20 new.
    assert_eq!(second["rows"], 21, "{second}");
    assert_eq!(second["table_rows"], 110);
    assert_eq!(
        one(
            &mut admin,
            "SELECT count(*), count(DISTINCT id), sum(CASE WHEN status = 'shipped' THEN 1 ELSE 0 END), \
             sum(CASE WHEN status = 'lost' THEN 1 ELSE 0 END) FROM shop.orders"
        )
        .await,
        "110|110|10|0"
    );

    // Nothing new: no new version, same watermark.
    let third = server.sync(&mut admin, "shop.orders").await;
    assert_eq!(third["state"], "succeeded", "{third}");
    assert_eq!(third["watermark_after"], "2026-01-01T03:30:00");
    assert_eq!(third["table_rows"], 110);

    let status = action(&mut admin, "table.status", &json!({"name": "shop.orders"}))
        .await
        .unwrap();
    assert_eq!(status["rows"], 110, "{status}");
    assert_eq!(status["watermark"], "2026-01-01T03:30:00");
    assert!(status["bytes_on_disk"].is_u64(), "{status}");
    assert!(status["freshness_s"].as_i64().unwrap() < 60, "{status}");
    assert_eq!(status["last_sync"]["job_id"], third["job_id"]);
}

#[tokio::test]
async fn append_syncs_insert_only_rows_past_the_watermark() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let dir = server.files.join("events");
    write_parquet(&dir.join("1.parquet"), &[orders(1..51, "e", 0)]);
    action(
        &mut admin,
        "table.register",
        &json!({
            "name": "log.events",
            "source": format!("{}/", file_url(&dir)),
            "format": "parquet",
            "strategy": "append",
            "cursor": "id",
        }),
    )
    .await
    .unwrap();
    assert_eq!(server.sync(&mut admin, "log.events").await["rows"], 50);
    write_parquet(&dir.join("2.parquet"), &[orders(51..61, "e", 0)]);
    let second = server.sync(&mut admin, "log.events").await;
    assert_eq!(second["rows"], 10, "{second}");
    assert_eq!(second["watermark_after"], "60");
    assert_eq!(
        one(
            &mut admin,
            "SELECT count(*), count(DISTINCT id), max(id) FROM log.events"
        )
        .await,
        "60|60|60"
    );
}

#[tokio::test]
async fn schema_drift_adds_columns_and_refuses_removed_or_retyped_ones() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let path = server.files.join("drift.parquet");
    write_parquet(&path, &[orders(1..11, "a", 0)]);
    for (name, on_change) in [("s.strict", "fail"), ("s.relaxed", "full_refresh")] {
        action(
            &mut admin,
            "table.register",
            &json!({"name": name, "source": path.display().to_string(), "on_schema_change": on_change}),
        )
        .await
        .unwrap();
        assert_eq!(server.sync(&mut admin, name).await["state"], "succeeded");
    }

    // A column added: both tables take it.
    let base = orders(1..11, "a", 0);
    let mut fields = base.schema().fields().to_vec();
    fields.push(Arc::new(Field::new("note", DataType::Utf8, true)));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec!["n"; 10])));
    let wider = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    write_parquet(&path, &[wider]);
    let job = server.sync(&mut admin, "s.strict").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["added_columns"], json!(["note"]));
    assert_eq!(
        one(&mut admin, "SELECT count(note) FROM s.strict").await,
        "10"
    );

    // A column removed and one retyped: the strict table fails and keeps
    // its replica; the relaxed one reloads.
    let narrower = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["x1", "x2"])),
            Arc::new(StringArray::from(vec!["b", "b"])),
        ],
    )
    .unwrap();
    write_parquet(&path, &[narrower]);
    let job = server.sync(&mut admin, "s.strict").await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("removed updated_at, note")
            && error.contains("id changed from BIGINT to VARCHAR")
            && error.contains("full_refresh"),
        "{error}"
    );
    assert_eq!(
        one(&mut admin, "SELECT count(*), sum(id) FROM s.strict").await,
        "10|55"
    );
    let job = server.sync(&mut admin, "s.relaxed").await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["strategy"], "full");
    assert_eq!(
        one(
            &mut admin,
            "SELECT string_agg(id, ',' ORDER BY id) FROM s.relaxed"
        )
        .await,
        "x1,x2"
    );
}

#[tokio::test]
async fn a_cancelled_sync_keeps_the_previous_replica() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let path = server.files.join("big.csv");
    std::fs::create_dir_all(&server.files).unwrap();
    std::fs::write(&path, "id,name\n1,a\n2,b\n").unwrap();
    action(
        &mut admin,
        "table.register",
        &json!({"name": "s.big", "source": path.display().to_string()}),
    )
    .await
    .unwrap();
    assert_eq!(server.sync(&mut admin, "s.big").await["rows"], 2);

    // Large enough to take seconds to parse in a debug build (loading into
    // DuckDB keeps pace, so parsing sets the time).
    let mut text = String::from("id,name\n");
    for i in 0..5_000_000 {
        text.push_str(&format!("{i},name-{i}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let job_id = start(&mut admin, "s.big").await;
    // Wait until it reads, then cancel.
    for _ in 0..500 {
        let status = action(&mut admin, "sync.status", &json!({"job_id": job_id}))
            .await
            .unwrap();
        if status["rows"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = action(&mut admin, "sync.cancel", &json!({"job_id": job_id}))
        .await
        .unwrap();
    assert_eq!(cancelled["cancelling"], true);
    let status = wait_for_job(&mut admin, &job_id).await;
    assert_eq!(status["state"], "cancelled", "{status}");
    assert!(status["rows"].as_u64().unwrap() < 5_000_000, "{status}");
    assert_eq!(one(&mut admin, "SELECT count(*) FROM s.big").await, "2");

    // Cancelling a finished job says so.
    let err = action(&mut admin, "sync.cancel", &json!({"job_id": job_id}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Cancelled"), "{}", err.message());
}

#[tokio::test]
async fn schedules_run_syncs_and_jobs_list_in_pages() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let path = server.files.join("t.parquet");
    write_parquet(&path, &[orders(1..4, "a", 0)]);
    let registered = action(
        &mut admin,
        "table.register",
        &json!({"name": "s.t", "source": path.display().to_string(), "every": "1s"}),
    )
    .await
    .unwrap();
    assert_eq!(registered["schedule"], json!({"every": "1s"}));

    // The scheduler runs it without sync.start.
    let mut scheduled = Vec::new();
    for _ in 0..100 {
        let page = action(
            &mut admin,
            "sync.jobs",
            &json!({"table": "s.t", "state": "succeeded"}),
        )
        .await
        .unwrap();
        scheduled = page["jobs"].as_array().unwrap().clone();
        if scheduled.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scheduled.len() >= 2, "{scheduled:?}");
    assert!(scheduled.iter().all(|j| j["trigger"] == "schedule"));
    assert_eq!(one(&mut admin, "SELECT count(*) FROM s.t").await, "3");
    let status = action(&mut admin, "table.status", &json!({"name": "s.t"}))
        .await
        .unwrap();
    assert!(status["next_run"].is_string(), "{status}");

    // Clear it: no more jobs start.
    let cleared = action(
        &mut admin,
        "sync.schedule",
        &json!({"table": "s.t", "clear": true}),
    )
    .await
    .unwrap();
    assert_eq!(cleared["schedule"], Value::Null);
    tokio::time::sleep(Duration::from_millis(300)).await; // let a running one finish
    let count = |page: &Value| page["jobs"].as_array().unwrap().len();
    let before = count(
        &action(
            &mut admin,
            "sync.jobs",
            &json!({"table": "s.t", "limit": 500}),
        )
        .await
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = count(
        &action(
            &mut admin,
            "sync.jobs",
            &json!({"table": "s.t", "limit": 500}),
        )
        .await
        .unwrap(),
    );
    assert_eq!(before, after);

    // Pages: newest first, a token to continue, no overlap.
    let first = action(
        &mut admin,
        "sync.jobs",
        &json!({"table": "s.t", "limit": 1}),
    )
    .await
    .unwrap();
    let token = first["next_page_token"].as_str().unwrap().to_string();
    let second = action(
        &mut admin,
        "sync.jobs",
        &json!({"table": "s.t", "limit": 1, "page_token": token}),
    )
    .await
    .unwrap();
    assert_ne!(first["jobs"][0]["job_id"], second["jobs"][0]["job_id"]);
    assert!(first["jobs"][0]["created_at"].as_str() >= second["jobs"][0]["created_at"].as_str());

    // A cron schedule, and bad ones refused precisely.
    let set = action(
        &mut admin,
        "sync.schedule",
        &json!({"table": "s.t", "cron": "0 3 * * *"}),
    )
    .await
    .unwrap();
    assert!(
        set["next_run"].as_str().unwrap().contains("T03:00:00"),
        "{set}"
    );
    for (body, expected) in [
        (
            json!({"table": "s.t", "cron": "61 * * * *"}),
            "'61 * * * *'",
        ),
        (json!({"table": "s.t", "every": "soon"}), "'soon'"),
        (
            json!({"table": "s.t", "every": "1m", "cron": "* * * * *"}),
            "exactly one",
        ),
        (json!({"table": "s.t"}), "exactly one"),
        (json!({"table": "s.none", "every": "1m"}), "not registered"),
    ] {
        let err = action(&mut admin, "sync.schedule", &body)
            .await
            .unwrap_err();
        let text = describe(arrow_flight::error::FlightError::Tonic(Box::new(err)));
        assert!(text.contains(expected), "{body}: {text}");
    }
    for (body, expected) in [
        (json!({"state": "done"}), "unknown job state 'done'"),
        (json!({"limit": 0}), "limit must be between"),
        (json!({"page_token": "x"}), "page_token 'x'"),
    ] {
        let err = action(&mut admin, "sync.jobs", &body).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{body}");
        assert!(err.message().contains(expected), "{}", err.message());
    }
}

#[tokio::test]
async fn strategy_settings_are_checked_at_registration() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let path = server.files.join("o.parquet");
    write_parquet(&path, &[orders(1..4, "a", 0)]);
    let source = path.display().to_string();
    for (extra, expected) in [
        (
            json!({"strategy": "incremental", "cursor": "updated_at"}),
            "needs a primary_key",
        ),
        (
            json!({"strategy": "incremental", "primary_key": ["id"]}),
            "needs a cursor",
        ),
        (
            json!({"strategy": "append", "cursor": "nope"}),
            "'nope' is not a column",
        ),
        (
            json!({"strategy": "incremental", "primary_key": ["id"], "cursor": "updated_at", "overlap": 5}),
            "duration",
        ),
        (json!({"cursor": "id"}), "not full"),
        (json!({"strategy": "sometimes"}), "unknown variant"),
        (json!({"every": "1m", "cron": "* * * * *"}), "not both"),
        (
            json!({"source": "snowflake://nowhere/DB.S.T"}),
            "no connection named 'nowhere'",
        ),
        (
            json!({"source": "snowflake://prod/DB.T"}),
            "DATABASE.SCHEMA.TABLE",
        ),
    ] {
        let mut body = json!({"name": "s.o", "source": source});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let err = action(&mut admin, "table.register", &body)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{body}: {err:?}");
        assert!(
            err.message().contains(expected),
            "{body}: {}",
            err.message()
        );
    }
    // Nothing was registered by the refusals.
    let listed = action(&mut admin, "table.list", &json!({})).await.unwrap();
    assert_eq!(listed["tables"], json!([]));
}

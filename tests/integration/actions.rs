//! Actions: ListActions, table registration from files, syncs, and their errors.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use serde_json::json;
use tonic::Code;

use crate::harness::{
    TestServer, action, action_raw, file_url, query, rows, total_rows, write_parquet,
};

fn people(ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: Vec<String> = ids.clone().map(|i| format!("person {i}")).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn list_actions_describes_every_action() {
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    let actions: Vec<arrow_flight::ActionType> = raw
        .list_actions(arrow_flight::Empty {})
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    for name in [
        "token.create",
        "token.revoke",
        "token.list",
        "whoami",
        "table.register",
        "table.list",
        "table.remove",
        "sync.start",
        "sync.status",
        "sync.jobs",
        "sync.cancel",
        "sync.schedule",
        "table.status",
        "sources.list_tables",
        "CancelFlightInfo",
    ] {
        let found = actions.iter().find(|a| a.r#type == name);
        assert!(
            found.is_some_and(|a| a.description.len() > 20),
            "{name} missing or undescribed"
        );
    }
}

#[tokio::test]
async fn parquet_glob_csv_and_json_sources_load_and_query() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let data = server.files.clone();

    // Three Parquet files behind a glob, plus a file the glob must skip.
    for (i, range) in [(0, 0..100), (1, 100..250), (2, 250..300)] {
        write_parquet(
            &data.join(format!("parts/part-{i}.parquet")),
            &[people(range)],
        );
    }
    std::fs::write(data.join("parts/readme.txt"), "not data").unwrap();
    let status = server
        .load(
            &mut admin,
            "hr.people",
            &format!("{}/parts/*.parquet", file_url(&data)),
        )
        .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["rows"], 300);
    assert_eq!(status["files"], 3);
    let (_, batches) = query(
        &mut admin,
        "SELECT count(*), sum(id), max(name) FROM hr.people",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), vec!["300|44850|person 99"]);

    // A directory prefix with an explicit format.
    action(
        &mut admin,
        "table.register",
        &json!({"name": "hr.people_dir", "source": format!("{}/parts/", file_url(&data)), "format": "parquet"}),
    )
    .await
    .unwrap();
    let status = server.sync(&mut admin, "hr.people_dir").await;
    assert_eq!(status["rows"], 300, "{status}");

    // CSV with a header, typed by inference.
    std::fs::write(
        data.join("cities.csv"),
        "city,population,founded\nParis,2100000,1000-01-01\nLyon,520000,1500-06-30\n",
    )
    .unwrap();
    let status = server
        .load(
            &mut admin,
            "geo.cities",
            &data.join("cities.csv").display().to_string(),
        )
        .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let (schema, batches) = query(
        &mut admin,
        "SELECT city, population FROM geo.cities WHERE population > 1000000",
    )
    .await
    .unwrap();
    assert_eq!(schema.field(1).data_type(), &DataType::Int64);
    assert_eq!(rows(&batches), vec!["Paris|2100000"]);

    // Newline-delimited JSON.
    std::fs::write(
        data.join("events.ndjson"),
        "{\"kind\":\"a\",\"n\":1}\n{\"kind\":\"b\",\"n\":2}\n{\"kind\":\"a\",\"n\":3}\n",
    )
    .unwrap();
    let status = server
        .load(
            &mut admin,
            "ops.events",
            &file_url(&data.join("events.ndjson")),
        )
        .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let (_, batches) = query(
        &mut admin,
        "SELECT kind, sum(n) AS total FROM ops.events GROUP BY kind ORDER BY kind",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), vec!["a|4", "b|2"]);

    // table.list shows registrations with their last sync.
    let listed = action(&mut admin, "table.list", &json!({})).await.unwrap();
    let names: Vec<&str> = listed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["geo.cities", "hr.people", "hr.people_dir", "ops.events"]
    );
    assert_eq!(listed["tables"][0]["last_sync"]["state"], "succeeded");
    assert_eq!(listed["tables"][0]["replicated"], true);
}

#[tokio::test]
async fn bad_sources_and_bodies_get_precise_errors_and_change_nothing() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let data = server.files.clone();
    std::fs::create_dir_all(&data).unwrap();

    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "s.t", "source": file_url(&data.join("missing.parquet"))}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(
        err.message().contains("no parquet files found"),
        "{}",
        err.message()
    );

    std::fs::write(data.join("book.xlsx"), "zip").unwrap();
    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "s.t", "source": file_url(&data.join("book.xlsx"))}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unsupported file type 'xlsx'"),
        "{}",
        err.message()
    );

    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "bad name!", "source": "/x.csv"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("bad name!"), "{}", err.message());

    let err = action_raw(&mut admin, "table.register", b"{not json".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("invalid JSON body for table.register"),
        "{}",
        err.message()
    );

    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "s.t", "source": "/x.csv", "sorce": 1}),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("sorce"), "{}", err.message());

    // airlock's own files (secrets, replicas) are never a source.
    let secret = server.dir.join("secrets/jwt.key");
    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "s.leak", "source": secret.display().to_string(), "format": "csv"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains("inside airlock's data directory"),
        "{}",
        err.message()
    );

    let err = action(&mut admin, "no.such.action", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("unknown action 'no.such.action'"),
        "{}",
        err.message()
    );

    let err = action(&mut admin, "sync.start", &json!({"table": "s.nothing"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = action(&mut admin, "sync.status", &json!({"job_id": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Nothing was registered by any of the above.
    let listed = action(&mut admin, "table.list", &json!({})).await.unwrap();
    assert_eq!(listed["tables"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_failed_sync_leaves_the_previous_replica_whole() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let csv = server.files.join("t.csv");
    std::fs::create_dir_all(csv.parent().unwrap()).unwrap();
    std::fs::write(&csv, "id,v\n1,10\n2,20\n").unwrap();
    let status = server
        .load(&mut admin, "s.t", &csv.display().to_string())
        .await;
    assert_eq!(status["state"], "succeeded");

    // The file changes into something that cannot be read with the same
    // schema: a non-number where integers were inferred.
    let mut body = String::from("id,v\n");
    for i in 0..5000 {
        body.push_str(&format!("{i},{i}\n"));
    }
    body.push_str("oops,not-a-number\n");
    std::fs::write(&csv, body).unwrap();
    let status = server.sync(&mut admin, "s.t").await;
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("reading"),
        "{status}"
    );

    let (_, batches) = query(&mut admin, "SELECT id, v FROM s.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["1|10", "2|20"]);
    assert_eq!(
        server.app.replica.tables().len(),
        1,
        "no staging table became visible"
    );
}

#[tokio::test]
async fn resync_replaces_the_table_and_remove_drops_it() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let file = server.files.join("p.parquet");
    write_parquet(&file, &[people(0..10)]);
    server.load(&mut admin, "hr.p", &file_url(&file)).await;
    write_parquet(&file, &[people(0..25)]);
    let status = server.sync(&mut admin, "hr.p").await;
    assert_eq!(status["rows"], 25);
    let (_, batches) = query(&mut admin, "SELECT * FROM hr.p").await.unwrap();
    assert_eq!(total_rows(&batches), 25);

    // Removing the table also removes it from queries.
    let removed = action(&mut admin, "table.remove", &json!({"name": "hr.p"}))
        .await
        .unwrap();
    assert_eq!(removed["replica_dropped"], true);
    let err = query(&mut admin, "SELECT * FROM hr.p").await.unwrap_err();
    assert!(
        err.contains("NotFound") && err.contains("'hr.p' does not exist"),
        "{err}"
    );

    // Registering the same name twice is refused.
    action(
        &mut admin,
        "table.register",
        &json!({"name": "hr.q", "source": file_url(&file)}),
    )
    .await
    .unwrap();
    let err = action(
        &mut admin,
        "table.register",
        &json!({"name": "hr.q", "source": file_url(&file)}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

//! Queries: what SQL reaches DuckDB, pushdown that never changes answers,
//! read-only refusals, errors with positions, parameters and schemas.

use std::sync::Arc;

use airlock::principal::Principal;
use airlock::replica::DuckDbScanExec;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::harness::{TestServer, file_url, query, rows, total_rows, write_parquet};

fn mixed() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("price", DataType::Decimal128(15, 2), true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            Some(1),
            Some(2),
            None,
            Some(4),
            Some(-5),
            Some(6),
            Some(i64::MAX),
            Some(0),
        ])),
        Arc::new(StringArray::from(vec![
            Some("alpha"),
            Some("O'Brien"),
            Some("Zoë"),
            None,
            Some("al%pha"),
            Some(""),
            Some("beta"),
            Some("a_b"),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(-0.0),
            Some(0.0),
            Some(f64::NAN),
            None,
            Some(-2.25),
            Some(1e300),
            Some(f64::INFINITY),
        ])),
        Arc::new(
            Decimal128Array::from(vec![
                Some(100),
                Some(250),
                Some(-999),
                None,
                Some(0),
                Some(12345),
                Some(1),
                Some(99999),
            ])
            .with_precision_and_scale(15, 2)
            .unwrap(),
        ),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
            Some(true),
            None,
            Some(false),
        ])),
        Arc::new(Date32Array::from(vec![
            Some(0),
            Some(10957),
            Some(19000),
            None,
            Some(-365),
            Some(20000),
            Some(1),
            Some(10958),
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(0),
            Some(1_500_000),
            None,
            Some(1_700_000_000_000_000),
            Some(-1),
            Some(86_400_000_000),
            Some(1),
            Some(2),
        ])),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn admin_principal(
    server: &TestServer,
    client: &FlightSqlServiceClient<tonic::transport::Channel>,
) -> Principal {
    let token = client.token().unwrap();
    server
        .app
        .auth
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .unwrap()
}

/// The SQL of every DuckDB scan in a query's physical plan.
async fn pushed_sql(server: &TestServer, principal: &Principal, sql: &str) -> Vec<String> {
    let planned = server.app.query.plan(principal, sql).await.unwrap();
    let plan = server.app.query.physical_plan(&planned).await.unwrap();
    let mut found = Vec::new();
    collect_scans(&plan, &mut found);
    found
}

fn collect_scans(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<String>) {
    if let Some(scan) = plan.downcast_ref::<DuckDbScanExec>() {
        out.extend(scan.sql().iter().cloned());
    }
    for child in plan.children() {
        collect_scans(child, out);
    }
}

async fn loaded_server() -> (
    TestServer,
    FlightSqlServiceClient<tonic::transport::Channel>,
) {
    loaded_server_with(|_| {}).await
}

async fn loaded_server_with(
    configure: impl FnOnce(&mut airlock::server::Settings),
) -> (
    TestServer,
    FlightSqlServiceClient<tonic::transport::Channel>,
) {
    let server = TestServer::start_with(configure).await;
    let mut admin = server.admin().await;
    let file = server.files.join("mixed.parquet");
    write_parquet(&file, &[mixed()]);
    let status = server.load(&mut admin, "s.t", &file_url(&file)).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    (server, admin)
}

#[tokio::test]
async fn projection_filters_and_limit_reach_duckdb_as_generated_sql() {
    // The scan path alone (sub-plan pushdown has its own tests).
    let (server, admin) = loaded_server_with(|c| c.query.pushdown = false).await;
    let principal = admin_principal(&server, &admin).await;
    assert_eq!(
        pushed_sql(
            &server,
            &principal,
            "SELECT name FROM s.t WHERE id > 1 AND name = 'x''y' LIMIT 3"
        )
        .await,
        vec![
            r#"SELECT "name" FROM "s"."t$1" WHERE ("id" > CAST($1 AS BIGINT)) AND ("name" = CAST($2 AS VARCHAR)) LIMIT 3"#
        ]
    );
    // Only the needed columns are read for count(*).
    assert_eq!(
        pushed_sql(&server, &principal, "SELECT count(*) FROM s.t").await,
        vec![r#"SELECT NULL FROM "s"."t$1""#]
    );
    // Untranslatable predicates stay in DataFusion; the scan reads what they need.
    let sql = pushed_sql(
        &server,
        &principal,
        "SELECT id FROM s.t WHERE id + 1 > 3 AND upper(name) = 'BETA'",
    )
    .await;
    assert_eq!(sql, vec![r#"SELECT "id", "name" FROM "s"."t$1""#]);
    // Text the query contains never reaches DuckDB: literals are bound.
    let sql = pushed_sql(
        &server,
        &principal,
        "SELECT id FROM s.t WHERE name = 'a''; DROP TABLE s.t; --'",
    )
    .await;
    assert_eq!(
        sql,
        vec![r#"SELECT "id" FROM "s"."t$1" WHERE ("name" = CAST($1 AS VARCHAR))"#]
    );
    // Self-joins scan twice.
    assert_eq!(
        pushed_sql(
            &server,
            &principal,
            "SELECT a.id FROM s.t a JOIN s.t b ON a.id = b.id"
        )
        .await
        .len(),
        2
    );
}

#[tokio::test]
async fn pushdown_never_changes_an_answer() {
    let (_server, mut admin) = loaded_server().await;
    // Reference: DataFusion over the same batch in memory, nothing pushed down.
    let reference = SessionContext::new();
    let batch = mixed();
    reference
        .register_table(
            "t",
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap()),
        )
        .unwrap();
    let predicates = [
        "id > 1",
        "id = 9223372036854775807",
        "id <> 2 OR id IS NULL",
        "id IN (1, 4, 7)",
        "id NOT IN (1, 4)",
        "id BETWEEN -5 AND 2",
        "id NOT BETWEEN 0 AND 4",
        "name = 'O''Brien'",
        "name < 'b'",
        "name >= ''",
        "name LIKE 'al%'",
        "name LIKE '%a%'",
        "name LIKE 'a_b'",
        "name ILIKE 'ZO%'",
        "name IS NULL",
        "score > 1",
        "score < 0",
        "score = 0",
        "score >= -0.0",
        "score = 'NaN'",
        "score > 1e299",
        "price > 1.00",
        "price BETWEEN -10 AND 2.5",
        "price = 123.45",
        "flag",
        "NOT flag",
        "flag IS NULL",
        "day >= DATE '2000-01-01'",
        "day < DATE '1970-01-01'",
        "ts > TIMESTAMP '1970-01-01 00:00:01'",
        "ts <= TIMESTAMP '1970-01-01 00:00:00.000001'",
        "id > 0 AND (name LIKE 'a%' OR flag)",
        "NOT (id > 2 AND score < 2)",
        "id + 1 > 3",
        "length(name) > 3",
    ];
    for predicate in predicates {
        let sql = format!(
            "SELECT id, name, score, price, flag, day, ts FROM {{}} WHERE {predicate} ORDER BY id NULLS FIRST, name"
        );
        let (_, ours) = query(&mut admin, &sql.replace("{}", "s.t")).await.unwrap();
        let expected = reference
            .sql(&sql.replace("{}", "t"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(rows(&ours), rows(&expected), "WHERE {predicate}");
    }
}

#[tokio::test]
async fn only_queries_run_and_refusals_name_what_was_refused() {
    let (server, mut admin) = loaded_server().await;
    let cases = [
        (
            "DROP TABLE s.t",
            "PermissionDenied",
            "DROP TABLE is not allowed",
        ),
        (
            "DELETE FROM s.t",
            "PermissionDenied",
            "DELETE FROM is not allowed",
        ),
        (
            "INSERT INTO s.t (id) VALUES (1)",
            "PermissionDenied",
            "INSERT INTO is not allowed",
        ),
        (
            "CREATE TABLE x AS SELECT 1",
            "PermissionDenied",
            "CREATE TABLE is not allowed",
        ),
        (
            "COPY s.t TO '/tmp/x.csv'",
            "PermissionDenied",
            "COPY is not allowed",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            "PermissionDenied",
            "SET is not allowed",
        ),
        (
            "SELECT 1; DROP TABLE s.t",
            "InvalidArgument",
            "2 statements",
        ),
        ("SELEC 1", "InvalidArgument", "SQL syntax error"),
        (
            "SELECT * FROM s.t WHERE id = = 1",
            "InvalidArgument",
            "Line: 1, Column: 30",
        ),
        ("SELECT nope FROM s.t", "InvalidArgument", "nope"),
        (
            "SELECT * FROM s.missing",
            "NotFound",
            "'s.missing' does not exist",
        ),
        (
            "SELECT * FROM other.catalog.t",
            "NotFound",
            "does not exist",
        ),
        ("SELECT 1/0", "InvalidArgument", "Divide by zero"),
    ];
    for (sql, code, message) in cases {
        let err = query(&mut admin, sql).await.unwrap_err();
        assert!(err.contains(code) && err.contains(message), "{sql}: {err}");
    }
    // The table is untouched and the server still answers.
    let (_, batches) = query(&mut admin, "SELECT count(*) FROM s.t").await.unwrap();
    assert_eq!(rows(&batches), vec!["8"]);
    assert!(server.app.replica.tables().len() == 1);
}

#[tokio::test]
async fn empty_results_carry_their_schema_and_types_survive() {
    let (_server, mut admin) = loaded_server().await;
    let (schema, batches) = query(&mut admin, "SELECT * FROM s.t WHERE false")
        .await
        .unwrap();
    assert_eq!(total_rows(&batches), 0);
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Utf8,
            DataType::Float64,
            DataType::Decimal128(15, 2),
            DataType::Boolean,
            DataType::Date32,
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
        ]
    );
    assert_eq!(
        schema.field(3).metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"],
        "DECIMAL(15,2)"
    );
}

#[tokio::test]
async fn prepared_statements_bind_parameters_through_do_put() {
    let (server, mut admin) = loaded_server().await;
    let mut prepared = admin
        .prepare(
            "SELECT id, name FROM s.t WHERE id > ? AND name <> ? ORDER BY id".to_string(),
            None,
        )
        .await
        .unwrap();
    let dataset = prepared.dataset_schema().unwrap().clone();
    assert_eq!(dataset.fields().len(), 2);
    assert_eq!(dataset.field(0).name(), "id");
    let parameters = prepared.parameter_schema().unwrap().clone();
    assert_eq!(parameters.fields().len(), 2);
    assert_eq!(parameters.field(0).data_type(), &DataType::Int64);

    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["beta"])),
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let (_, batches) = crate::harness::fetch(&mut admin, info).await.unwrap();
    assert_eq!(rows(&batches), vec!["2|O'Brien", "6|"]);

    // Wrong parameter count is refused at bind time.
    let mut prepared = admin
        .prepare("SELECT id FROM s.t WHERE id = $1".to_string(), None)
        .await
        .unwrap();
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    prepared.set_parameters(two).unwrap();
    let err = crate::harness::describe(prepared.execute().await.unwrap_err());
    assert!(
        err.starts_with("InvalidArgument") && err.contains("1 placeholders but 2 values"),
        "{err}"
    );

    // Statements that are not queries are refused at prepare time (JDBC prepares everything).
    let err = crate::harness::describe(
        admin
            .prepare("DROP TABLE s.t".to_string(), None)
            .await
            .unwrap_err(),
    );
    assert!(
        err.starts_with("PermissionDenied") && err.contains("DROP TABLE is not allowed"),
        "{err}"
    );
    drop(server);
}

#[tokio::test]
async fn now_is_the_time_of_each_query() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let sql = "SELECT CAST(now() AS BIGINT) / 1000000";
    let (_, first) = query(&mut admin, sql).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, second) = query(&mut admin, sql).await.unwrap();
    let seconds = |b: &[RecordBatch]| rows(b)[0].parse::<i64>().unwrap();
    assert!(seconds(&second) > seconds(&first), "now() did not advance");
}

#[tokio::test]
async fn deep_expressions_are_refused_and_the_server_lives_on() {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    // As deep as the length limit allows: planning it would overflow the
    // stack and kill the process.
    let chain = format!("SELECT {}", vec!["1"; 120_000].join("+"));
    let err = query(&mut admin, &chain).await.unwrap_err();
    assert!(
        err.starts_with("InvalidArgument") && err.contains("nested deeper than"),
        "{err}"
    );
    let ors = format!("SELECT 1 WHERE {}", vec!["1 = 1"; 5_000].join(" OR "));
    let err = query(&mut admin, &ors).await.unwrap_err();
    assert!(err.contains("nested deeper than"), "{err}");
    // Moderate depth still plans and runs.
    let (_, batches) = query(&mut admin, &format!("SELECT {}", vec!["1"; 200].join("+")))
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["200"]);
}

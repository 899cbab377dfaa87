//! Grants through the wire: who sees which rows and columns, in every query
//! position, through queries, prepared statements and metadata.

use std::sync::Arc;

use arrow_flight::sql::CommandGetTables;
use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Client, TestServer, action, fetch, file_url, query, rows, write_parquet};

/// sales.orders: two EU rows, one US row, one APAC row with amount 5.00.
fn orders() -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("ssn", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec!["EU", "EU", "US", "APAC"])),
            Arc::new(StringArray::from(vec![
                "ana@eu.example",
                "bo@eu.example",
                "cy@us.example",
                "secret@apac.example",
            ])),
            Arc::new(StringArray::from(vec!["111", "222", "333", "444"])),
            Arc::new(
                Decimal128Array::from(vec![1000, 2000, 3000, 500])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ],
    )
    .unwrap()
}

pub(crate) struct World {
    pub(crate) server: TestServer,
    pub(crate) admin: Client,
    pub(crate) eu_agent: Client,
    pub(crate) apac_agent: Client,
    pub(crate) stranger: Client,
}

pub(crate) async fn token(admin: &mut Client, body: Value) -> String {
    action(admin, "token.create", &body).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) async fn world() -> World {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let file = server.files.join("orders.parquet");
    write_parquet(&file, &[orders()]);
    server
        .load(&mut admin, "sales.orders", &file_url(&file))
        .await;
    server
        .load(&mut admin, "sales.audit_copy", &file_url(&file))
        .await;
    action(
        &mut admin,
        "grant.set",
        &json!({"swarm": "emea", "tables": {"sales.orders": {
            "row_filter": "region = agent_attr('region')",
            "columns": {"email": {"mask": "'***'"}, "ssn": "deny"}}}}),
    )
    .await
    .unwrap();
    action(
        &mut admin,
        "grant.set",
        &json!({"swarm": "apac", "tables": {"sales.*": {
            "row_filter": "region = 'APAC'", "columns": {"amount": "deny"}}}}),
    )
    .await
    .unwrap();

    let emea = token(
        &mut admin,
        json!({"kind": "swarm", "name": "emea", "attributes": {"region": "EU"}}),
    )
    .await;
    let mut emea_client = server.with_token(&emea).await;
    let eu_agent = token(&mut emea_client, json!({"kind": "agent", "name": "a1"})).await;
    let apac_agent = token(
        &mut admin,
        json!({"kind": "agent", "name": "p1", "swarm": "apac"}),
    )
    .await;
    let stranger = token(
        &mut admin,
        json!({"kind": "agent", "name": "x1", "swarm": "nogrant"}),
    )
    .await;
    World {
        eu_agent: server.with_token(&eu_agent).await,
        apac_agent: server.with_token(&apac_agent).await,
        stranger: server.with_token(&stranger).await,
        server,
        admin,
    }
}

#[tokio::test]
async fn each_swarm_sees_its_rows_and_columns() {
    let mut w = world().await;
    let sql = "SELECT * FROM sales.orders ORDER BY id";
    let (schema, batches) = query(&mut w.eu_agent, sql).await.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "region", "email", "amount"]);
    assert_eq!(rows(&batches), vec!["1|EU|***|10.00", "2|EU|***|20.00"]);

    let (schema, batches) = query(&mut w.apac_agent, sql).await.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "region", "email", "ssn"]);
    assert_eq!(rows(&batches), vec!["4|APAC|secret@apac.example|444"]);

    // apac's grant is a schema pattern: it covers the second table too;
    // emea's names one table only.
    assert!(
        query(&mut w.apac_agent, "SELECT id FROM sales.audit_copy")
            .await
            .is_ok()
    );
    let err = query(&mut w.eu_agent, "SELECT id FROM sales.audit_copy")
        .await
        .unwrap_err();
    assert!(err.starts_with("NotFound"), "{err}");

    // No grant, no tables.
    let err = query(&mut w.stranger, "SELECT * FROM sales.orders")
        .await
        .unwrap_err();
    assert!(
        err.starts_with("NotFound") && err.contains("does not exist or is not visible"),
        "{err}"
    );

    // The admin sees everything.
    let (_, batches) = query(&mut w.admin, "SELECT count(*) FROM sales.orders")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["4"]);
}

#[tokio::test]
async fn denied_columns_do_not_exist_anywhere() {
    let mut w = world().await;
    for sql in [
        "SELECT ssn FROM sales.orders",
        "SELECT id FROM sales.orders WHERE ssn = '444'",
        "SELECT ssn, count(*) FROM sales.orders GROUP BY ssn",
        "SELECT a.id FROM sales.orders a JOIN sales.orders b ON a.ssn = b.ssn",
        "SELECT id FROM sales.orders ORDER BY ssn",
        "SELECT max(length(ssn)) FROM sales.orders",
    ] {
        let err = query(&mut w.eu_agent, sql).await.unwrap_err();
        assert!(
            err.starts_with("InvalidArgument") && err.contains("ssn"),
            "{sql}: {err}"
        );
        assert!(!err.contains("444") && !err.contains("111"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn every_query_position_gets_the_filter_and_masks() {
    let mut w = world().await;
    let cases = [
        ("SELECT count(*), sum(amount) FROM sales.orders", "2|30.00"),
        (
            "SELECT count(*) FROM sales.orders WHERE id IN (SELECT id FROM sales.orders)",
            "2",
        ),
        (
            "SELECT count(*) FROM (SELECT 1) t WHERE EXISTS (SELECT 1 FROM sales.orders WHERE region = 'APAC')",
            "0",
        ),
        ("SELECT (SELECT max(id) FROM sales.orders)", "2"),
        (
            "WITH o AS (SELECT * FROM sales.orders) SELECT count(*) FROM o",
            "2",
        ),
        (
            "SELECT count(*) FROM sales.orders a JOIN sales.orders b ON a.id = b.id",
            "2",
        ),
        (
            "SELECT count(*) FROM (SELECT id FROM sales.orders UNION ALL SELECT id FROM sales.orders) u",
            "4",
        ),
        (
            "SELECT l.n FROM (SELECT 1 AS x) t, LATERAL (SELECT count(*) AS n FROM sales.orders) l",
            "2",
        ),
        ("SELECT string_agg(email, ',') FROM sales.orders", "***,***"),
        ("SELECT count(DISTINCT region) FROM sales.orders", "1"),
        // A CTE named like the protected table is just a CTE.
        (
            "WITH orders AS (SELECT 'x' AS email) SELECT count(*) FROM sales.orders",
            "2",
        ),
        // Predicates on a masked column see the mask, not the value.
        (
            "SELECT count(*) FROM sales.orders WHERE email = 'ana@eu.example'",
            "0",
        ),
        (
            "SELECT count(*) FROM sales.orders WHERE email LIKE 'ana%'",
            "0",
        ),
        ("SELECT count(*) FROM sales.orders WHERE email = '***'", "2"),
    ];
    for (sql, expected) in cases {
        let (_, batches) = query(&mut w.eu_agent, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows(&batches), vec![expected], "{sql}");
    }
}

#[tokio::test]
async fn errors_cannot_probe_hidden_rows() {
    let mut w = world().await;
    // The APAC row (id 4) is hidden from the EU agent: an expression
    // that fails only on it must not fail, wherever it sits.
    for sql in [
        "SELECT count(*) FROM sales.orders WHERE 1 / (id - 4) > 0",
        "SELECT sum(1 / (id - 4)) FROM sales.orders",
        "SELECT count(*) FROM sales.orders WHERE CAST(CASE WHEN region = 'APAC' THEN 'x' ELSE '1' END AS INT) = 1",
        "SELECT count(*) FROM sales.orders WHERE id = 4 AND 1 / (id - 4) > 0",
    ] {
        let result = query(&mut w.eu_agent, sql).await;
        assert!(result.is_ok(), "{sql}: {result:?}");
    }
    // Control: the same predicate fails for someone who can see the row.
    let err = query(
        &mut w.admin,
        "SELECT count(*) FROM sales.orders WHERE 1 / (id - 4) > 0",
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("divide by zero"), "{err}");
}

/// `schema.table` of a GetTables answer, without airlock's own tables
/// (the context tables every principal has).
fn warehouse_tables(batches: &[RecordBatch]) -> Vec<String> {
    let mut names = Vec::new();
    for batch in batches {
        let schemas = batch
            .column_by_name("db_schema_name")
            .unwrap()
            .as_string::<i32>();
        let tables = batch
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>();
        for i in 0..batch.num_rows() {
            if schemas.value(i) != "airlock" {
                names.push(format!("{}.{}", schemas.value(i), tables.value(i)));
            }
        }
    }
    names
}

#[tokio::test]
async fn prepared_statements_and_metadata_show_only_what_is_granted() {
    let mut w = world().await;
    let prepared = w
        .eu_agent
        .prepare("SELECT * FROM sales.orders".to_string(), None)
        .await
        .unwrap();
    let names: Vec<String> = prepared
        .dataset_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "region", "email", "amount"]);

    let info = w
        .eu_agent
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut w.eu_agent, info).await.unwrap();
    assert_eq!(
        warehouse_tables(&batches),
        ["sales.orders"],
        "emea sees one table"
    );
    let orders = (0..batches[0].num_rows())
        .find(|&i| {
            batches[0]
                .column_by_name("db_schema_name")
                .unwrap()
                .as_string::<i32>()
                .value(i)
                == "sales"
        })
        .unwrap();
    let schemas = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let schema = try_schema_from_ipc_buffer(schemas.value(orders)).unwrap();
    assert!(schema.field_with_name("ssn").is_err());
    assert!(schema.field_with_name("email").is_ok());

    let info = w
        .stranger
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut w.stranger, info).await.unwrap();
    assert!(warehouse_tables(&batches).is_empty());
    let listed = action(&mut w.stranger, "table.list", &json!({}))
        .await
        .unwrap();
    assert_eq!(listed["tables"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn grant_changes_apply_to_the_next_query_and_survive_restart() {
    let w = world().await;
    let mut admin = w.admin;
    let mut eu = w.eu_agent;
    let (_, batches) = query(&mut eu, "SELECT count(*) FROM sales.orders")
        .await
        .unwrap();
    assert_eq!(rows(&batches), vec!["2"]);
    action(
        &mut admin,
        "grant.set",
        &json!({"swarm": "emea", "tables": {"sales.orders": {"row_filter": "amount > 15"}}}),
    )
    .await
    .unwrap();
    let (_, batches) = query(&mut eu, "SELECT count(*), max(ssn) FROM sales.orders")
        .await
        .unwrap();
    assert_eq!(
        rows(&batches),
        vec!["2|333"],
        "the new grant shows US and EU rows over 15.00"
    );

    let dir = w.server.dir.clone();
    let tmp = w.server.stop().await;
    let server = TestServer::start_in(&dir, |_| {}).await;
    let mut admin = server.admin().await;
    let got = action(&mut admin, "grant.get", &json!({"swarm": "emea"}))
        .await
        .unwrap();
    assert_eq!(
        got["grant"]["tables"]["sales.orders"]["row_filter"],
        "amount > 15"
    );
    action(&mut admin, "grant.delete", &json!({"swarm": "emea"}))
        .await
        .unwrap();
    let listed = action(&mut admin, "grant.list", &json!({})).await.unwrap();
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1);
    drop(tmp);
}

#[tokio::test]
async fn bad_grants_are_refused_at_set_time() {
    let mut w = world().await;
    let cases = [
        (
            json!({"swarm": "emea", "tables": {"sales.orders": {"columns": {"snn": "deny"}}}}),
            "no column 'snn'",
        ),
        (
            json!({"swarm": "emea", "tables": {"sales.orders": {"row_filter": "nope > 1"}}}),
            "nope",
        ),
        (
            json!({"swarm": "emea", "tables": {"sales.orders": {"row_filter": "amount"}}}),
            "not a boolean",
        ),
        (
            json!({"swarm": "emea", "tables": {"sales.orders": {"columns": {"ssn": "hide"}}}}),
            "deny",
        ),
        (
            json!({"swarm": "emea", "limits": {"max_rows": 0}}),
            "positive",
        ),
    ];
    for (grant, message) in cases {
        let err = action(&mut w.admin, "grant.set", &grant).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{grant}: {}",
            err.message()
        );
        assert!(
            err.message().contains(message),
            "{grant}: {}",
            err.message()
        );
    }
    // Agents and swarms cannot read or write grants.
    let err = action(&mut w.eu_agent, "grant.list", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn explain_shows_an_admin_the_plan_with_policies_applied() {
    let mut w = world().await;
    let explained = action(
        &mut w.admin,
        "explain",
        &json!({"sql": "SELECT email FROM sales.orders WHERE id = 1",
                "as": {"kind": "agent", "swarm": "emea", "name": "a1", "attributes": {"region": "EU"}}}),
    )
    .await
    .unwrap();
    // A lookup: one DuckDB query applies the row filter and computes the
    // mask, a constant — the masked column is not even read.
    let physical = explained["physical_plan"].as_str().unwrap();
    assert!(
        physical.contains(r#"SELECT CAST($1 AS VARCHAR) AS c0 FROM "sales"."orders$1""#)
            && physical.contains(r#"("region" = CAST($2 AS VARCHAR))"#)
            && physical.contains(r#"("id" = CAST($3 AS BIGINT))"#),
        "{physical}"
    );
    // DuckDB's own plan shows the bound values at the scan.
    let duckdb = explained["duckdb_plans"][0].as_str().unwrap();
    let compact = duckdb.replace(' ', "");
    assert!(
        compact.contains("region='EU'") && compact.contains("id=1"),
        "{duckdb}"
    );
    assert_eq!(
        explained["access"]["tables"]["sales.orders"]["denied"],
        json!(["ssn"])
    );
    let err = action(&mut w.eu_agent, "explain", &json!({"sql": "SELECT 1"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let _ = w.apac_agent;
    let _ = w.stranger;
}

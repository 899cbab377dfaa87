//! Metadata RPCs: catalogs, schemas, tables with column metadata, table
//! types, primary keys, SqlInfo and type info.

use std::sync::Arc;

use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};
use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::array::{Decimal128Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use serde_json::json;

use crate::harness::{TestServer, action, fetch, file_url, write_parquet};

async fn server_with_tables() -> (TestServer, crate::harness::Client) {
    let server = TestServer::start().await;
    let mut admin = server.admin().await;
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(
                Decimal128Array::from(vec![100, 200])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ],
    )
    .unwrap();
    let file = server.files.join("orders.parquet");
    write_parquet(&file, &[batch]);
    action(
        &mut admin,
        "table.register",
        &json!({"name": "sales.orders", "source": file_url(&file), "primary_key": ["order_id"]}),
    )
    .await
    .unwrap();
    server.sync(&mut admin, "sales.orders").await;
    server
        .load(&mut admin, "ops.orders_copy", &file_url(&file))
        .await;
    (server, admin)
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let array = batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    (0..array.len())
        .map(|i| array.value(i).to_string())
        .collect()
}

#[tokio::test]
async fn catalogs_schemas_and_table_types() {
    let (_server, mut admin) = server_with_tables().await;
    let info = admin.get_catalogs().await.unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    assert_eq!(strings(&batches[0], "catalog_name"), vec!["airlock"]);

    let info = admin
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("s%".into()),
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    assert_eq!(strings(&batches[0], "db_schema_name"), vec!["sales"]);

    let info = admin.get_table_types().await.unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    assert_eq!(strings(&batches[0], "table_type"), vec!["TABLE"]);
}

#[tokio::test]
async fn get_tables_with_schema_carries_column_metadata() {
    let (_server, mut admin) = server_with_tables().await;
    let info = admin
        .get_tables(CommandGetTables {
            catalog: Some("airlock".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("%orders%".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    let batch = &batches[0];
    assert_eq!(strings(batch, "db_schema_name"), vec!["ops", "sales"]);
    assert_eq!(strings(batch, "table_name"), vec!["orders_copy", "orders"]);
    let schemas = batch
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    let schema = try_schema_from_ipc_buffer(schemas.value(1)).unwrap();
    let amount = schema.field_with_name("amount").unwrap();
    assert_eq!(amount.data_type(), &DataType::Decimal128(12, 2));
    let metadata = amount.metadata();
    assert_eq!(metadata["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL(12,2)");
    assert_eq!(metadata["ARROW:FLIGHT:SQL:PRECISION"], "12");
    assert_eq!(metadata["ARROW:FLIGHT:SQL:SCALE"], "2");
    assert_eq!(metadata["ARROW:FLIGHT:SQL:TABLE_NAME"], "orders");
    assert_eq!(metadata["ARROW:FLIGHT:SQL:DB_SCHEMA_NAME"], "sales");
    assert!(amount.is_nullable());
}

#[tokio::test]
async fn primary_keys_come_from_the_registration() {
    let (_server, mut admin) = server_with_tables().await;
    let info = admin
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("sales".into()),
            table: "orders".into(),
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    assert_eq!(strings(&batches[0], "column_name"), vec!["order_id"]);
    let info = admin
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("ops".into()),
            table: "orders_copy".into(),
        })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
}

#[tokio::test]
async fn sql_info_and_type_info_answer() {
    let (_server, mut admin) = server_with_tables().await;
    let info = admin
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
            SqlInfo::FlightSqlServerArrowVersion,
        ])
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 4);
    let names = batch
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
    assert!(
        names
            .values()
            .contains(&(SqlInfo::FlightSqlServerReadOnly as u32))
    );

    let info = admin
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let (_, batches) = fetch(&mut admin, info).await.unwrap();
    let types = strings(&batches[0], "type_name");
    for expected in [
        "BIGINT",
        "DECIMAL",
        "VARCHAR",
        "TIMESTAMP",
        "DATE",
        "BOOLEAN",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} missing from {types:?}"
        );
    }
}

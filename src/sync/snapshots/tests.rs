//! Snapshots against real DuckDB replicas and a local snapshot store.

use datafusion::arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::replica::{Replica, test_support};

/// Every column type a sync can give a replica table (the types
/// `duckdb_type` produces), with values at their edges and a row of NULLs.
const EVERY_TYPE: &str = r#"
CREATE SCHEMA s;
CREATE TABLE s.every (
    id INTEGER, b BOOLEAN, i8 TINYINT, i16 SMALLINT, i64 BIGINT,
    u8 UTINYINT, u16 USMALLINT, u32 UINTEGER, u64 UBIGINT, f FLOAT, d DOUBLE,
    wide DECIMAL(38,9), money DECIMAL(10,2), txt VARCHAR, bin BLOB, day DATE, tod TIME,
    ts TIMESTAMP, ts_s TIMESTAMP_S, ts_ms TIMESTAMP_MS, ts_ns TIMESTAMP_NS, tz TIMESTAMPTZ,
    span INTERVAL, list INTEGER[], fixed DOUBLE[3], rec STRUCT(a INTEGER, b VARCHAR),
    m MAP(VARCHAR, INTEGER));
INSERT INTO s.every VALUES
    (1, true, -128, -32768, -9223372036854775808, 255, 65535, 4294967295,
     18446744073709551615, 1.5, -2.25, 12345678901234567890123456789.123456789, -0.01,
     'ünïcode ✓', '\x00\xFF'::BLOB, DATE '1900-01-01', TIME '23:59:59.999999',
     TIMESTAMP '2024-02-29 12:34:56.789012', TIMESTAMP_S '1970-01-01 00:00:01',
     TIMESTAMP_MS '2000-01-01 00:00:00.123', TIMESTAMP_NS '2262-01-01 00:00:00.123456789',
     TIMESTAMPTZ '2024-06-01 08:00:00+02', INTERVAL '1 year 2 months 3 days 04:05:06',
     [1, NULL, 3], [1.0, 2.0, 3.0], {'a': 7, 'b': 'x'}, MAP {'k': 1}),
    (2, false, 127, 32767, 9223372036854775807, 0, 0, 0, 0, 'NaN', 'Infinity',
     -0.000000001, 99999999.99, '', ''::BLOB, DATE '9999-12-31', TIME '00:00:00',
     TIMESTAMP '0001-01-01 00:00:00', TIMESTAMP_S '2038-01-19 03:14:08',
     TIMESTAMP_MS '1969-12-31 23:59:59.999', TIMESTAMP_NS '1677-09-22 00:00:00.000000001',
     TIMESTAMPTZ '1970-01-01 00:00:00+00', INTERVAL '-1 day', [], [0.0, -0.0, 1e300],
     {'a': NULL, 'b': NULL}, MAP {}),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

/// A table as queries see it: its schema and every row, in id order.
async fn contents(replica: &Arc<Replica>, table: &TableName) -> (SchemaRef, String) {
    let info = replica
        .tables()
        .get(table)
        .cloned()
        .expect("the table exists");
    let schema = Arc::clone(&info.schema);
    let provider = ReplicaTable::new(Arc::clone(replica), table.clone(), info);
    let context = SessionContext::new();
    context.register_table("t", Arc::new(provider)).unwrap();
    let batches = context
        .sql("SELECT * FROM t ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    (schema, pretty_format_batches(&batches).unwrap().to_string())
}

use datafusion::arrow::datatypes::SchemaRef;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_type_round_trips_through_a_snapshot() {
    let (writer_dir, reader_dir, store_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let writer = test_support::create(
        writer_dir.path(),
        test_support::replica(writer_dir.path()),
        EVERY_TYPE,
    );
    let reader = test_support::replica(reader_dir.path());
    let snapshots =
        SnapshotStore::open(store_dir.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
    let table = TableName::parse("s.every").unwrap();
    let info = writer.tables().get(&table).cloned().unwrap();
    let (_, files) = export(&snapshots, &writer, &table, info).await.unwrap();
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 3);
    let manifest = Manifest {
        table: table.clone(),
        rows: 3,
        files,
        state: Some(r#"{"cursor":"id","watermark":"3"}"#.into()),
        job_id: "j".into(),
        published_at: Utc::now(),
    };
    load(&snapshots, &reader, &manifest).await.unwrap();
    let (written_schema, written) = contents(&writer, &table).await;
    let (read_schema, read) = contents(&reader, &table).await;
    assert_eq!(read_schema, written_schema, "types changed on the way");
    assert_eq!(read, written);
    assert!(
        written.contains("ünïcode ✓") && written.contains("18446744073709551615"),
        "{written}"
    );
    // The sync state travels with the rows: the next writer continues from it.
    assert_eq!(
        reader.sync_state(&table).unwrap().as_deref(),
        Some(r#"{"cursor":"id","watermark":"3"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_keeps_its_columns_and_large_ones_span_files() {
    let (writer_dir, reader_dir, store_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let writer = test_support::create(
        writer_dir.path(),
        test_support::replica(writer_dir.path()),
        "CREATE SCHEMA s; CREATE TABLE s.empty (id BIGINT, name VARCHAR); \
         CREATE TABLE s.big AS SELECT range AS id, range::VARCHAR AS name FROM range(2500000);",
    );
    let reader = test_support::replica(reader_dir.path());
    let snapshots =
        SnapshotStore::open(store_dir.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
    for (name, files_expected) in [("s.empty", 1), ("s.big", 3)] {
        let table = TableName::parse(name).unwrap();
        let info = writer.tables().get(&table).cloned().unwrap();
        let rows = info.rows;
        let (_, files) = export(&snapshots, &writer, &table, info).await.unwrap();
        assert_eq!(files.len(), files_expected, "{name}: {files:?}");
        let manifest = Manifest {
            table: table.clone(),
            rows,
            files,
            state: None,
            job_id: "j".into(),
            published_at: Utc::now(),
        };
        load(&snapshots, &reader, &manifest).await.unwrap();
        let loaded = reader.tables().get(&table).cloned().unwrap();
        assert_eq!(loaded.rows, rows, "{name}");
        assert_eq!(
            loaded.schema,
            writer.tables().get(&table).unwrap().schema,
            "{name}"
        );
    }
}

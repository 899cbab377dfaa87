//! Snapshots against real DuckDB replicas and a local snapshot store.

use std::sync::atomic::AtomicBool;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use super::*;
use crate::replica::{Replica, ReplicaTable, StagingTable, test_support};
use crate::sync::pipeline::{Load, Received};

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

/// A writer's replica (with `setup` run in it), a reader's, and the
/// snapshot store between them, each in a directory of its own.
struct Nodes {
    writer: Arc<Replica>,
    reader: Arc<Replica>,
    snapshots: SnapshotStore,
    _dirs: [tempfile::TempDir; 3],
}

impl Nodes {
    fn new(setup: Option<&str>) -> Self {
        let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
        let mut writer = test_support::replica(dirs[0].path());
        if let Some(setup) = setup {
            writer = test_support::create(dirs[0].path(), writer, setup);
        }
        let store = dirs[2].path().to_str().unwrap();
        Self {
            reader: test_support::replica(dirs[1].path()),
            snapshots: SnapshotStore::open(store, &BTreeMap::new()).unwrap(),
            writer,
            _dirs: dirs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_type_round_trips_through_a_snapshot() {
    let Nodes {
        writer,
        reader,
        snapshots,
        _dirs,
    } = Nodes::new(Some(EVERY_TYPE));
    let table = TableName::parse("s.every").unwrap();
    let info = writer.tables().get(&table).cloned().unwrap();
    let files = files::export(&snapshots, &writer, &table, info)
        .await
        .unwrap();
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 3);
    let state = Some(r#"{"cursor":"id","watermark":"3"}"#.to_string());
    files::load(&snapshots, &reader, &table, &files, Merge::Replace, state)
        .await
        .unwrap();
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
    let Nodes {
        writer,
        reader,
        snapshots,
        _dirs,
    } = Nodes::new(Some(
        "CREATE SCHEMA s; CREATE TABLE s.empty (id BIGINT, name VARCHAR); \
         CREATE TABLE s.big AS SELECT range AS id, range::VARCHAR AS name FROM range(2500000);",
    ));
    for (name, files_expected) in [("s.empty", 1), ("s.big", 3)] {
        let table = TableName::parse(name).unwrap();
        let info = writer.tables().get(&table).cloned().unwrap();
        let rows = info.rows;
        let files = files::export(&snapshots, &writer, &table, info)
            .await
            .unwrap();
        assert_eq!(files.len(), files_expected, "{name}: {files:?}");
        files::load(&snapshots, &reader, &table, &files, Merge::Replace, None)
            .await
            .unwrap();
        let loaded = reader.tables().get(&table).cloned().unwrap();
        assert_eq!(loaded.rows, rows, "{name}");
        assert_eq!(
            loaded.schema,
            writer.tables().get(&table).unwrap().schema,
            "{name}"
        );
    }
}

/// Rows a sync loads, as the runner sees them: `(id, v, updated)`.
fn batch(ids: std::ops::Range<i64>, version: i64) -> RecordBatch {
    use datafusion::arrow::array::Int64Array;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("updated", DataType::Int64, false),
    ]));
    let n = ids.end - ids.start;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Int64Array::from_iter_values(
                ids.clone().map(|i| i * 10 + version),
            )),
            Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
                version, n as usize,
            ))),
        ],
    )
    .unwrap()
}

/// Loads `rows` into `replica`'s table as a sync would, merging as `merge`
/// says; with `delta`, tees them into it too.
async fn sync(replica: &Arc<Replica>, table: &TableName, rows: RecordBatch, merge: &Merge) {
    let (tx, rx) = mpsc::channel::<Load>(4);
    let received = Received {
        rx,
        finished: Arc::new(AtomicBool::new(false)),
    };
    let (replica, target, merge) = (Arc::clone(replica), table.clone(), merge.clone());
    let schema = rows.schema();
    let writer = tokio::task::spawn_blocking(move || {
        let mut staging = StagingTable::create(&replica, &target, &schema).unwrap();
        staging.load(received).unwrap();
        staging.commit_merge(&merge, None).unwrap()
    });
    tx.send(Load::Batch(rows)).await.unwrap();
    tx.send(Load::Finish).await.unwrap();
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_holds_only_the_rows_loaded_and_replays_the_merge_on_a_reader() {
    let Nodes {
        writer,
        reader,
        snapshots,
        _dirs,
    } = Nodes::new(None);
    let table = TableName::parse("s.events").unwrap();
    let upsert = Merge::Upsert {
        key: vec!["id".into()],
        cursor: "updated".into(),
    };
    // The base: 10 000 rows, published whole.
    sync(&writer, &table, batch(0..10_000, 0), &Merge::Replace).await;
    let info = writer.tables().get(&table).cloned().unwrap();
    let base = files::export(&snapshots, &writer, &table, info)
        .await
        .unwrap();
    files::load(&snapshots, &reader, &table, &base, Merge::Replace, None)
        .await
        .unwrap();
    // An upsert of 150 rows (100 replaced, 50 new), then an append of 20:
    // each delta holds the rows loaded, not the table.
    let steps = [
        (batch(9_900..10_050, 1), upsert.clone()),
        (batch(20_000..20_020, 2), Merge::Append),
    ];
    for (rows, merge) in steps {
        let loaded = rows.num_rows() as u64;
        let mut delta = DeltaWriter::new(&snapshots, &table, &rows.schema(), &merge).unwrap();
        delta.write(&rows).await.unwrap();
        sync(&writer, &table, rows, &merge).await;
        let written = delta.finish().await.unwrap().unwrap();
        assert_eq!(written.op.merge(), merge);
        assert_eq!(written.files.iter().map(|f| f.rows).sum::<u64>(), loaded);
        files::load(
            &snapshots,
            &reader,
            &table,
            &written.files,
            written.op.merge(),
            Some(format!("after {loaded}")),
        )
        .await
        .unwrap();
        assert_eq!(
            contents(&reader, &table).await,
            contents(&writer, &table).await
        );
        assert_eq!(
            reader.sync_state(&table).unwrap(),
            Some(format!("after {loaded}"))
        );
    }
    let (_, read) = contents(&reader, &table).await;
    assert_eq!(reader.tables().get(&table).unwrap().rows, 10_070);
    let cells = |line: &str| line.split('|').map(str::trim).collect::<Vec<_>>().join(" ");
    assert!(
        read.lines().any(|line| cells(line) == " 9999 99991 1 "),
        "the upsert replaced row 9999: {read}"
    );
    // A delta whose source added a column: the reader's merge writes a
    // new version with NULLs in it for the rows before, as the writer's did.
    let wider = {
        use datafusion::arrow::array::StringArray;
        let rows = batch(30_000..30_005, 4);
        let mut fields = rows.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("note", DataType::Utf8, true)));
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![Some("new"); 5])));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    };
    let mut delta = DeltaWriter::new(&snapshots, &table, &wider.schema(), &Merge::Append).unwrap();
    delta.write(&wider).await.unwrap();
    sync(&writer, &table, wider, &Merge::Append).await;
    let written = delta.finish().await.unwrap().unwrap();
    files::load(
        &snapshots,
        &reader,
        &table,
        &written.files,
        Merge::Append,
        None,
    )
    .await
    .unwrap();
    let (schema, read) = contents(&reader, &table).await;
    assert_eq!((schema, read), contents(&writer, &table).await);
    assert_eq!(reader.tables().get(&table).unwrap().rows, 10_075);
    // A replacement has no delta: its snapshot is the whole table.
    assert!(
        DeltaWriter::new(
            &snapshots,
            &table,
            &batch(0..1, 3).schema(),
            &Merge::Replace
        )
        .is_none()
    );
}

#[test]
fn the_chain_says_which_epoch_each_step_reaches_and_which_directories_it_uses() {
    let file = |path: &str, rows| SnapshotFile {
        path: path.into(),
        rows,
        bytes: 1,
    };
    let table = TableName::parse("s.t").unwrap();
    let mut manifest = Manifest::base(
        &table,
        vec![file("p/s.t/a/part-00000.parquet", 100)],
        None,
        "j1",
    );
    assert_eq!(manifest.epoch_after(0, 4), 4);
    for (after, dir) in [(4, "b"), (5, "c")] {
        manifest.deltas.push(Delta {
            after,
            op: DeltaOp::Append,
            files: vec![file(&format!("p/s.t/{dir}/part-00000.parquet"), 10)],
            state: None,
            job_id: "j".into(),
        });
    }
    // Base → epoch 4, first delta → 5, second → the manifest's own, 9.
    assert_eq!(
        [0, 1, 2].map(|step| manifest.epoch_after(step, 9)),
        [4, 5, 9]
    );
    assert_eq!((manifest.base_rows(), manifest.delta_rows()), (100, 20));
    assert_eq!(
        manifest.dirs().into_iter().collect::<Vec<_>>(),
        ["p/s.t/a", "p/s.t/b", "p/s.t/c"]
    );
    // Manifests published before deltas existed still read.
    let old = r#"{"table":"s.t","files":[],"rows":0,"state":"w","job_id":"j","published_at":"2026-11-01T00:00:00Z"}"#;
    let old: Manifest = serde_json::from_str(old).unwrap();
    assert!(old.deltas.is_empty() && old.base_state.is_none());
}

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};

use super::*;
use crate::replica::test_support::replica;

impl BatchSource for std::vec::IntoIter<RecordBatch> {
    fn next_batch(&mut self, _patience: Option<Duration>) -> Pull {
        self.next().map_or(Pull::Done, Pull::Batch)
    }
}

fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8View, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(
                datafusion::arrow::compute::cast(
                    &StringArray::from(names.to_vec()),
                    &DataType::Utf8View,
                )
                .unwrap(),
            ),
        ],
    )
    .unwrap()
}

/// Every DuckDB table except airlock's own bookkeeping.
fn physical_tables(replica: &Replica) -> Vec<String> {
    let conn = replica.connect().unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() \
             WHERE NOT starts_with(table_name, '__airlock') ORDER BY 1",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn count(replica: &Replica, name: &TableName) -> i64 {
    let table = replica.tables()[name].physical.quoted().to_string();
    replica
        .connect()
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Waits for the graveyard thread to drop what it was sent.
fn settle(replica: &Replica, expected: &[&str]) {
    for _ in 0..200 {
        if physical_tables(replica) == expected {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(physical_tables(replica), expected);
}

#[test]
fn commit_publishes_a_new_version_and_abort_leaves_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let name = TableName::parse("s.t").unwrap();
    let b = batch(&[1, 2, 3], &["a", "b", "c"]);

    let mut staging = StagingTable::create(&replica, &name, &b.schema()).unwrap();
    staging.load(vec![b.clone()].into_iter()).unwrap();
    // Not visible before commit.
    assert!(replica.schema(&name).is_none());
    assert_eq!(staging.commit(None).unwrap(), 3);
    assert_eq!(count(&replica, &name), 3);
    assert_eq!(replica.tables()[&name].physical.quoted(), "\"s\".\"t$1\"");
    let schema = replica.schema(&name).unwrap();
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);

    // A failed second load (dropped before commit) leaves the first intact.
    let mut staging = StagingTable::create(&replica, &name, &b.schema()).unwrap();
    staging.load(vec![batch(&[9], &["z"])].into_iter()).unwrap();
    drop(staging);
    assert_eq!(count(&replica, &name), 3);
    assert_eq!(physical_tables(&replica), ["s.t$1"]);
}

/// The `id` column of a table's current version, in storage order.
fn ids_in_order(replica: &Replica, name: &TableName) -> Vec<i64> {
    replica
        .connect()
        .unwrap()
        .prepare(&format!(
            "SELECT id FROM {} ORDER BY rowid",
            replica.tables()[name].physical.quoted()
        ))
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Hands out batches with a stall longer than DuckDB's patience before
/// each one but the first.
struct Stalling {
    batches: std::vec::IntoIter<RecordBatch>,
    first: bool,
}

impl BatchSource for Stalling {
    fn next_batch(&mut self, patience: Option<Duration>) -> Pull {
        if let (false, Some(patience)) = (self.first, patience) {
            std::thread::sleep(patience);
            // A stall: the insert under way must end here.
            self.first = true;
            return Pull::Waiting;
        }
        self.first = false;
        self.batches.next().map_or(Pull::Done, Pull::Batch)
    }
}

#[test]
fn a_stalling_source_loads_every_row_in_order_over_several_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let name = TableName::parse("s.t").unwrap();
    let batches: Vec<RecordBatch> = (0..5)
        .map(|i| batch(&[i * 2, i * 2 + 1], &["x", "y"]))
        .collect();
    let schema = batches[0].schema();
    let mut staging = StagingTable::create(&replica, &name, &schema).unwrap();
    staging
        .load(Stalling {
            batches: batches.into_iter(),
            first: true,
        })
        .unwrap();
    assert_eq!(staging.rows(), 10);
    staging.commit(None).unwrap();
    assert_eq!(ids_in_order(&replica, &name), (0..10).collect::<Vec<i64>>());
}

#[test]
fn concurrent_loads_keep_their_rows_apart_and_leave_no_view_behind() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let loads: Vec<_> = (0..2i64)
        .map(|t| {
            let replica = Arc::clone(&replica);
            std::thread::spawn(move || {
                let name = TableName::parse(&format!("s.t{t}")).unwrap();
                // One insert per batch, interleaved with the other load's.
                let batches: Vec<RecordBatch> =
                    (0..20).map(|i| batch(&[t * 1000 + i], &["x"])).collect();
                let schema = batches[0].schema();
                let mut staging = StagingTable::create(&replica, &name, &schema).unwrap();
                staging
                    .load(Stalling {
                        batches: batches.into_iter(),
                        first: true,
                    })
                    .unwrap();
                staging.commit(None).unwrap();
            })
        })
        .collect();
    for load in loads {
        load.join().unwrap();
    }
    let conn = replica.connect().unwrap();
    for t in 0..2i64 {
        let name = TableName::parse(&format!("s.t{t}")).unwrap();
        assert_eq!(
            ids_in_order(&replica, &name),
            (t * 1000..t * 1000 + 20).collect::<Vec<i64>>()
        );
    }
    let views: i64 = conn
        .query_row(
            "SELECT count(*) FROM duckdb_views() WHERE view_name LIKE '__airlock_ingest%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(views, 0);
}

#[test]
fn a_batch_that_cannot_be_stored_fails_the_load_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let name = TableName::parse("s.t").unwrap();
    let good = batch(&[1], &["a"]);
    let narrow = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![2]))],
    )
    .unwrap();
    let mut staging = StagingTable::create(&replica, &name, &good.schema()).unwrap();
    let err = staging.load(vec![good, narrow].into_iter()).unwrap_err();
    assert!(
        matches!(&err, ReplicaError::UnsupportedType { reason, .. } if reason.contains("source changed")),
        "{err}"
    );
    drop(staging);
    assert!(replica.tables().is_empty());
    assert!(physical_tables(&replica).is_empty());
}

#[test]
fn an_old_version_lives_while_a_reader_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let name = TableName::parse("s.t").unwrap();
    let b = batch(&[1, 2, 3], &["a", "b", "c"]);
    let mut first = StagingTable::create(&replica, &name, &b.schema()).unwrap();
    first.load(vec![b.clone()].into_iter()).unwrap();
    first.commit(None).unwrap();
    // A reader (a running scan) holds version 1.
    let reader = replica.tables()[&name].clone();

    let mut second = StagingTable::create(&replica, &name, &b.schema()).unwrap();
    second.load(vec![batch(&[7], &["x"])].into_iter()).unwrap();
    second.commit(None).unwrap();
    assert_eq!(count(&replica, &name), 1);
    assert_eq!(
        physical_tables(&replica),
        ["s.t$1", "s.t$2"],
        "v1 dropped under a reader"
    );

    // The reader finishes: version 1 goes.
    drop(reader);
    settle(&replica, &["s.t$2"]);

    // Removal retires the current version the same way.
    assert!(replica.drop_table(&name).unwrap());
    assert!(replica.tables().is_empty());
    settle(&replica, &[]);
}

fn rows(replica: &Replica, name: &TableName) -> Vec<(i64, Option<String>)> {
    let table = replica.tables()[name].physical.quoted().to_string();
    let conn = replica.connect().unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT id, name FROM {table} ORDER BY id"))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn merges_write_a_new_version_with_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    let name = TableName::parse("s.t").unwrap();
    let first = batch(&[1, 2, 3], &["a", "b", "c"]);
    let mut staging = StagingTable::create(&replica, &name, &first.schema()).unwrap();
    staging.load(vec![first].into_iter()).unwrap();
    staging.commit(Some("w1")).unwrap();
    assert_eq!(replica.sync_state(&name).unwrap().as_deref(), Some("w1"));

    // Upsert: key 2 twice in the load, the larger cursor (here: the id
    // column doubles as cursor, so use name) wins; key 4 is new.
    let delta = batch(&[2, 4, 2], &["b1", "d", "b2"]);
    let mut staging = StagingTable::create(&replica, &name, &delta.schema()).unwrap();
    staging.load(vec![delta].into_iter()).unwrap();
    assert_eq!(
        staging.max_of("id").unwrap(),
        Some(ScalarValue::Int64(Some(4)))
    );
    let merge = Merge::Upsert {
        key: vec!["id".to_string()],
        cursor: "name".to_string(),
    };
    assert_eq!(staging.commit_merge(&merge, Some("w2")).unwrap(), 4);
    assert_eq!(
        rows(&replica, &name),
        [
            (1, Some("a".into())),
            (2, Some("b2".into())),
            (3, Some("c".into())),
            (4, Some("d".into()))
        ]
    );
    assert_eq!(replica.sync_state(&name).unwrap().as_deref(), Some("w2"));

    // An upsert that only updates keeps the DuckDB table and the row
    // count; its merge time still tells the change apart.
    // (Compared by name and numbers only: holding a TableInfo keeps its
    // DuckDB table alive.)
    let version = |r: &Replica| {
        let info = &r.tables()[&name];
        (
            info.physical.quoted().to_string(),
            info.rows,
            info.merged_at,
        )
    };
    let before = version(&replica);
    let update = batch(&[1], &["a2"]);
    let mut staging = StagingTable::create(&replica, &name, &update.schema()).unwrap();
    staging.load(vec![update].into_iter()).unwrap();
    assert_eq!(staging.commit_merge(&merge, Some("w3")).unwrap(), 4);
    let after = version(&replica);
    assert_eq!((&after.0, after.1), (&before.0, before.1));
    assert!(after.2 > before.2, "{after:?} {before:?}");

    // Append with a new column: old rows get NULL in it.
    let wide = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("extra", DataType::Int64, true),
    ]));
    let more = RecordBatch::try_new(
        Arc::clone(&wide),
        vec![
            Arc::new(Int64Array::from(vec![5])),
            Arc::new(StringArray::from(vec!["e"])),
            Arc::new(Int64Array::from(vec![50])),
        ],
    )
    .unwrap();
    let mut staging = StagingTable::create(&replica, &name, &wide).unwrap();
    staging.load(vec![more].into_iter()).unwrap();
    assert_eq!(staging.commit_merge(&Merge::Append, None).unwrap(), 5);
    let schema = replica.schema(&name).unwrap();
    assert_eq!(schema.fields().len(), 3);
    let conn = replica.connect().unwrap();
    let table = replica.tables()[&name].physical.quoted().to_string();
    let extras: Vec<Option<i64>> = conn
        .prepare(&format!("SELECT extra FROM {table} ORDER BY id"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(extras, [None, None, None, None, Some(50)]);
    // No state given: the watermark is gone with the version it described.
    assert_eq!(replica.sync_state(&name).unwrap(), None);
    // Only the newest version and no leftovers remain.
    drop(conn);
    settle(&replica, &[&table.replace('"', "")]);
}

#[test]
fn what_a_crash_leaves_is_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let replica = replica(dir.path());
    // A kill mid-load leaves a $loading table; a kill after a commit but
    // before the old version was dropped leaves it in the retired list;
    // two committed versions of one table keep only the newest.
    let replica = crate::replica::test_support::create(
        dir.path(),
        replica,
        "CREATE SCHEMA s;
         CREATE TABLE s.\"t$3$loading\" (id BIGINT);
         CREATE TABLE s.\"u$4\" (id BIGINT);
         INSERT INTO main.__airlock_retired VALUES ('\"s\".\"u$4\"');
         CREATE TABLE s.\"v$5\" (id BIGINT);
         CREATE TABLE s.\"v$6\" AS SELECT 1 AS id;",
    );
    assert_eq!(physical_tables(&replica), ["s.v$6"]);
    let names: Vec<String> = replica.tables().keys().map(ToString::to_string).collect();
    assert_eq!(names, ["s.v"]);
    // New versions continue after the highest seen.
    assert_eq!(replica.allocate_version(), 7);
}

//! The demo dataset behind `airlock serve --demo`: two small tables,
//! generated here (no download), written as Parquet under
//! `<data_dir>/demo/` and loaded through the same register + sync path a
//! user's own tables take.
//!
//! - `demo.customers` (1 000 rows): id, name, email, region, signup date,
//!   lifetime value
//! - `demo.orders` (20 000 rows): id, customer, timestamp (UTC), status,
//!   amount, region

use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ArrowWriter;

use crate::sync::{JobState, RegisterRequest, SyncError, SyncService};
use crate::table_name::TableName;

/// Rows in `demo.customers`.
pub const CUSTOMERS: usize = 1_000;
/// Rows in `demo.orders`.
pub const ORDERS: usize = 20_000;

const REGIONS: [&str; 4] = ["EU", "US", "APAC", "LATAM"];
const STATUSES: [&str; 4] = ["placed", "shipped", "delivered", "returned"];
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia", "Donald",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Perlman", "Knuth",
];

/// Why the demo could not load.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Writing the Parquet files failed.
    #[error("writing demo files: {0}")]
    Write(String),
    /// Registering or syncing failed.
    #[error("loading demo tables: {0}")]
    Sync(#[from] SyncError),
}

/// Generates (if needed), registers (if needed) and syncs the demo tables;
/// returns the rows loaded.
pub async fn load(sync: &Arc<SyncService>, data_dir: &Path) -> Result<u64, DemoError> {
    let dir = data_dir.join("demo");
    let files = dir.clone();
    tokio::task::spawn_blocking(move || write_files(&files))
        .await
        .map_err(|e| DemoError::Write(e.to_string()))??;
    let mut rows = 0;
    for table in ["customers", "orders"] {
        let name = TableName::from_parts("demo", table).map_err(SyncError::from)?;
        if sync.registration(&name).await.is_err() {
            let mut request = RegisterRequest::new(
                name.to_string(),
                format!("{}/{table}.parquet", dir.display()),
            );
            request.primary_key = vec![
                if table == "orders" {
                    "order_id"
                } else {
                    "customer_id"
                }
                .to_string(),
            ];
            sync.register("demo", request).await?;
        }
        let (job, _) = sync.start(&name).await?;
        let job = sync.wait(&job.job_id).await?;
        if job.state != JobState::Succeeded {
            return Err(DemoError::Write(
                job.error.unwrap_or_else(|| "sync failed".into()),
            ));
        }
        rows += job.rows;
    }
    Ok(rows)
}

fn write_files(dir: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DemoError::Write(format!("{}: {e}", dir.display())))?;
    let generated = |e: ArrowError| DemoError::Write(format!("generating rows: {e}"));
    write_parquet(
        &dir.join("customers.parquet"),
        customers().map_err(generated)?,
    )?;
    write_parquet(&dir.join("orders.parquet"), orders().map_err(generated)?)
}

fn write_parquet(path: &Path, batch: RecordBatch) -> Result<(), DemoError> {
    let error = |e: &dyn std::fmt::Display| DemoError::Write(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| error(&e))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| error(&e))?;
    writer.write(&batch).map_err(|e| error(&e))?;
    writer.close().map_err(|e| error(&e))?;
    // Rename so a crash never leaves a half-written file under the real name.
    std::fs::rename(&tmp, path).map_err(|e| error(&e))
}

/// A tiny deterministic generator, so every demo is the same demo.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn customers() -> Result<RecordBatch, ArrowError> {
    let mut seq = Sequence(0x5EED_0001);
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let start = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or_default();
    let base_day = (start - epoch).num_days() as i32;
    let ids: Vec<i64> = (1..=CUSTOMERS as i64).collect();
    let names: Vec<String> = ids
        .iter()
        .map(|_| {
            format!(
                "{} {}",
                FIRST[seq.below(FIRST.len())],
                LAST[seq.below(LAST.len())]
            )
        })
        .collect();
    let emails: Vec<String> = ids
        .iter()
        .zip(&names)
        .map(|(id, name)| format!("{}.{id}@example.com", name.to_lowercase().replace(' ', ".")))
        .collect();
    let regions: Vec<&str> = ids
        .iter()
        .map(|_| REGIONS[seq.below(REGIONS.len())])
        .collect();
    let signup: Vec<i32> = ids
        .iter()
        .map(|_| base_day + seq.below(1500) as i32)
        .collect();
    let value: Vec<i128> = ids.iter().map(|_| seq.below(5_000_000) as i128).collect();
    RecordBatch::try_from_iter(vec![
        ("customer_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names))),
        ("email", Arc::new(StringArray::from(emails))),
        ("region", Arc::new(StringArray::from(regions))),
        ("signup_date", Arc::new(Date32Array::from(signup))),
        (
            "lifetime_value",
            Arc::new(Decimal128Array::from(value).with_precision_and_scale(12, 2)?),
        ),
    ])
}

fn orders() -> Result<RecordBatch, ArrowError> {
    let mut seq = Sequence(0x5EED_0002);
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_micros());
    let ids: Vec<i64> = (1..=ORDERS as i64).collect();
    let customers: Vec<i64> = ids
        .iter()
        .map(|_| 1 + seq.below(CUSTOMERS) as i64)
        .collect();
    let times: Vec<i64> = ids
        .iter()
        .map(|_| start + (seq.below(365 * 24 * 3600) as i64) * 1_000_000)
        .collect();
    let statuses: Vec<&str> = ids
        .iter()
        .map(|_| STATUSES[seq.below(STATUSES.len())])
        .collect();
    let amounts: Vec<i128> = ids
        .iter()
        .map(|_| 500 + seq.below(100_000) as i128)
        .collect();
    let regions: Vec<&str> = ids
        .iter()
        .map(|_| REGIONS[seq.below(REGIONS.len())])
        .collect();
    RecordBatch::try_from_iter(vec![
        ("order_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("customer_id", Arc::new(Int64Array::from(customers))),
        (
            "ordered_at",
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        ),
        ("status", Arc::new(StringArray::from(statuses))),
        (
            "amount",
            Arc::new(Decimal128Array::from(amounts).with_precision_and_scale(12, 2)?),
        ),
        ("region", Arc::new(StringArray::from(regions))),
    ])
}

//! Ingest: Arrow batches into a DuckDB table at DuckDB's own speed.
//!
//! duckdb-rs's appender converts Arrow to DuckDB vectors value by value and
//! appends (and compresses) on the one calling thread: a TPC-H lineitem
//! load took three times as long as DuckDB's own `read_parquet`. Here
//! DuckDB scans the batches as an Arrow stream instead (its `arrow_scan`,
//! the path its Python client takes) and runs `INSERT INTO … SELECT *` over
//! it with its whole thread pool. The scan numbers batches in stream order
//! and the insert keeps that order, so zone maps stay as useful as the
//! source's sort order makes them.
//!
//! DuckDB reaches the stream through the C API only (`duckdb_arrow_scan`),
//! so this is the one place with a raw connection.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::RecordBatchReader;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ffi::FFI_ArrowSchema;
use datafusion::arrow::ffi_stream::FFI_ArrowArrayStream;
use duckdb::ffi;

use super::ReplicaError;
use crate::duckdb_setup::{Database, SCRATCH_CATALOG};
use crate::table_name::quote_ident;

/// Names the views streams are scanned through. `duckdb_arrow_scan`
/// creates a view in the connection's default catalog — for an ingest, the
/// in-memory scratch catalog (see [`Ingest::open`]) — so each gets a name of
/// its own and lives only as long as its insert: never in the file.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(0);

/// One load's raw connection; each [`Ingest::insert`] commits on its own
/// (the new version stays invisible until the load commits).
pub(super) struct Ingest {
    conn: RawConnection,
    table: String,
}

impl Ingest {
    /// A connection for loading into `table` (a quoted, qualified name).
    pub(super) fn open(database: &Database, table: String) -> Result<Self, ReplicaError> {
        let context = || format!("start loading {table}");
        // `duckdb_arrow_scan` creates its view in the connection's default
        // catalog, and DuckDB 2 cannot commit such a view to a database
        // file (it would have to serialize the process-local stream), even
        // one dropped before the commit. So this connection defaults to the
        // in-memory scratch catalog, and names the target's catalog.
        let catalog: String = database
            .connect()
            .and_then(|conn| conn.query_row("SELECT current_database()", [], |row| row.get(0)))
            .map_err(ReplicaError::duckdb(context()))?;
        let conn = RawConnection::open(database).map_err(ReplicaError::duckdb(context()))?;
        conn.rows_changed(&format!("USE {SCRATCH_CATALOG}"))
            .map_err(ReplicaError::duckdb(context()))?;
        let table = format!("{}.{table}", quote_ident(&catalog));
        Ok(Self { conn, table })
    }

    /// Inserts what `reader` yields (with `schema`, whose columns match
    /// the table's by position), in one transaction; returns the rows
    /// inserted.
    pub(super) fn insert(
        &mut self,
        schema: SchemaRef,
        reader: Box<dyn RecordBatchReader + Send>,
    ) -> Result<u64, ReplicaError> {
        let context = || format!("load rows into {}", self.table);
        let stream = LentStream::new(reader, &schema)?;
        let view = format!(
            "__airlock_ingest_{}",
            NEXT_VIEW.fetch_add(1, Ordering::Relaxed)
        );
        let quoted = quote_ident(&view);
        // The view is created and dropped in transactions of its own (the
        // scratch catalog's), the insert in the target's: a transaction
        // may write to one database only.
        self.conn
            .scan_stream(&view, &stream)
            .map_err(ReplicaError::duckdb(context()))?;
        let inserted = (|| {
            self.conn.rows_changed("BEGIN TRANSACTION")?;
            let rows = self.conn.rows_changed(&format!(
                "INSERT INTO {} SELECT * FROM {quoted}",
                self.table
            ))?;
            self.conn.rows_changed("COMMIT")?;
            Ok(rows)
        })();
        if inserted.is_err() {
            let _ = self.conn.rows_changed("ROLLBACK");
        }
        // The view points at the stream: it goes before the stream does.
        if self
            .conn
            .rows_changed(&format!("DROP VIEW {quoted}"))
            .is_err()
        {
            // Keep the stream's memory rather than risk DuckDB reading it
            // freed. Only a broken connection gets here.
            tracing::error!(table = %self.table, "could not drop a load's view; keeping its stream");
            std::mem::forget(stream);
        }
        inserted.map_err(ReplicaError::duckdb(context()))
    }
}

/// An Arrow C stream whose schema DuckDB borrows rather than owns.
///
/// `duckdb_arrow_scan` asks for the stream's schema and never releases
/// what it gets (nor does the scan's bind): an arrow-rs stream would leak a
/// schema per load. This stream lends a view of a schema it owns, with a
/// release callback that frees nothing, and passes batches through from an
/// arrow-rs stream. Both are freed when this value drops.
struct LentStream {
    // Boxed: DuckDB copies the outer struct and reaches the rest through
    // `private_data`, which must not move.
    outer: Box<FFI_ArrowArrayStream>,
    // Owned (from `Box::into_raw`) and freed in `Drop`: a raw pointer, as
    // `private_data` aliases it.
    shared: NonNull<Shared>,
}

struct Shared {
    inner: FFI_ArrowArrayStream,
    schema: FFI_ArrowSchema,
}

impl LentStream {
    fn new(
        reader: Box<dyn RecordBatchReader + Send>,
        schema: &SchemaRef,
    ) -> Result<Self, ReplicaError> {
        let schema = FFI_ArrowSchema::try_from(schema.as_ref())?;
        let shared = NonNull::from(Box::leak(Box::new(Shared {
            inner: FFI_ArrowArrayStream::new(reader),
            schema,
        })));
        let outer = Box::new(FFI_ArrowArrayStream {
            get_schema: Some(lend_schema),
            get_next: Some(next_batch),
            get_last_error: Some(last_error),
            release: Some(release_nothing),
            private_data: shared.as_ptr().cast::<c_void>(),
        });
        Ok(Self { outer, shared })
    }

    fn as_duckdb(&self) -> ffi::duckdb_arrow_stream {
        std::ptr::from_ref::<FFI_ArrowArrayStream>(&self.outer)
            .cast_mut()
            .cast()
    }
}

impl Drop for LentStream {
    fn drop(&mut self) {
        // SAFETY: `shared` came from `Box::leak` in `new` and is freed only
        // here; DuckDB is done with the stream (the view is gone).
        drop(unsafe { Box::from_raw(self.shared.as_ptr()) });
    }
}

/// # Safety
/// `stream` is a [`LentStream`]'s outer stream (or DuckDB's copy of it)
/// and `out` points to writable memory for a schema.
unsafe extern "C" fn lend_schema(
    stream: *mut FFI_ArrowArrayStream,
    out: *mut FFI_ArrowSchema,
) -> c_int {
    // SAFETY: per the contract above, `private_data` is the live `Shared`.
    let shared = unsafe { &*(*stream).private_data.cast::<Shared>() };
    let owned = &shared.schema;
    let lent = FFI_ArrowSchema {
        format: owned.format,
        name: owned.name,
        metadata: owned.metadata,
        flags: owned.flags,
        n_children: owned.n_children,
        children: owned.children,
        dictionary: owned.dictionary,
        release: Some(release_lent_schema),
        private_data: std::ptr::null_mut(),
    };
    // SAFETY: `out` is writable (contract); writing does not drop the old
    // (uninitialized) contents.
    unsafe { out.write(lent) };
    0
}

/// # Safety
/// `schema` is a schema [`lend_schema`] produced.
unsafe extern "C" fn release_lent_schema(schema: *mut FFI_ArrowSchema) {
    // The memory belongs to the owned schema; only mark this view released.
    // SAFETY: `schema` is valid (contract).
    unsafe { (*schema).release = None };
}

/// # Safety
/// As [`lend_schema`], with `out` writable memory for an array. DuckDB
/// calls this under its scan lock, one call at a time.
unsafe extern "C" fn next_batch(
    stream: *mut FFI_ArrowArrayStream,
    out: *mut datafusion::arrow::ffi::FFI_ArrowArray,
) -> c_int {
    // SAFETY: `private_data` is the live `Shared` (contract); calls are
    // serialized, so this is the only reference.
    let shared = unsafe { &mut *(*stream).private_data.cast::<Shared>() };
    match shared.inner.get_next {
        // SAFETY: the inner stream is arrow-rs's, alive and unreleased.
        Some(get_next) => unsafe { get_next(&mut shared.inner, out) },
        None => EINVAL,
    }
}

/// # Safety
/// As [`lend_schema`].
unsafe extern "C" fn last_error(stream: *mut FFI_ArrowArrayStream) -> *const c_char {
    // SAFETY: as in `next_batch`.
    let shared = unsafe { &mut *(*stream).private_data.cast::<Shared>() };
    let error = match shared.inner.get_last_error {
        // SAFETY: as in `next_batch`.
        Some(get_last_error) => unsafe { get_last_error(&mut shared.inner) },
        None => std::ptr::null(),
    };
    // DuckDB makes a string of it: never hand it a null.
    if error.is_null() {
        c"the Arrow stream failed".as_ptr()
    } else {
        error
    }
}

/// # Safety
/// `stream` is valid.
unsafe extern "C" fn release_nothing(stream: *mut FFI_ArrowArrayStream) {
    // The [`LentStream`] frees everything when it drops.
    // SAFETY: `stream` is valid (contract).
    unsafe { (*stream).release = None };
}

/// The C stream interface's code (an errno) for a call on a released
/// stream.
const EINVAL: c_int = 22;

/// A connection made through the C API, closed on drop.
struct RawConnection {
    raw: ffi::duckdb_connection,
}

impl RawConnection {
    fn open(database: &Database) -> Result<Self, duckdb::Error> {
        let mut raw: ffi::duckdb_connection = std::ptr::null_mut();
        // SAFETY: the database is open while borrowed; `raw` is written on
        // success only.
        let state = unsafe { ffi::duckdb_connect(database.raw(), &mut raw) };
        if state != ffi::DuckDBSuccess || raw.is_null() {
            return Err(failure("cannot open a connection".into()));
        }
        Ok(Self { raw })
    }

    /// Makes `view` (temporary, on this connection) scan `stream`, which
    /// must outlive the connection.
    fn scan_stream(&self, view: &str, stream: &LentStream) -> Result<(), duckdb::Error> {
        let name = CString::new(view).map_err(duckdb::Error::NulError)?;
        // SAFETY: the connection is open, `name` is NUL-terminated, and the
        // stream outlives the connection (the caller drops it after).
        let state = unsafe { ffi::duckdb_arrow_scan(self.raw, name.as_ptr(), stream.as_duckdb()) };
        if state != ffi::DuckDBSuccess {
            return Err(failure("DuckDB refused the batches' Arrow schema".into()));
        }
        Ok(())
    }

    /// Runs `sql`; returns the rows it changed.
    fn rows_changed(&self, sql: &str) -> Result<u64, duckdb::Error> {
        let sql = CString::new(sql).map_err(duckdb::Error::NulError)?;
        // SAFETY: a zeroed duckdb_result is the documented initial state;
        // it is destroyed exactly once below, and the error text is copied
        // before that.
        unsafe {
            let mut result: ffi::duckdb_result = std::mem::zeroed();
            let state = ffi::duckdb_query(self.raw, sql.as_ptr(), &mut result);
            let outcome = if state == ffi::DuckDBSuccess {
                Ok(ffi::duckdb_rows_changed(&mut result))
            } else {
                let error = ffi::duckdb_result_error(&mut result);
                Err(failure(if error.is_null() {
                    "unknown error".into()
                } else {
                    CStr::from_ptr(error).to_string_lossy().into_owned()
                }))
            };
            ffi::duckdb_destroy_result(&mut result);
            outcome
        }
    }
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once.
        unsafe { ffi::duckdb_disconnect(&mut self.raw) }
    }
}

fn failure(message: String) -> duckdb::Error {
    duckdb::Error::DuckDBFailure(ffi::Error::new(ffi::DuckDBError), Some(message))
}

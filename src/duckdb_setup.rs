//! Opening DuckDB databases the way airlock needs them: hardened.
//!
//! DuckDB calls running untrusted SQL "unsafe by design". airlock never lets
//! agent text reach DuckDB (DataFusion plans it and we generate the SQL), so
//! these settings are defence in depth: no extension can be installed or
//! loaded, no file outside the data directory can be touched, and the
//! configuration is locked so that nothing later can loosen it. The order
//! matters: `allowed_directories` must be set before external access is
//! turned off, and the lock must come last.

use std::ffi::{CStr, CString};
use std::path::Path;

use bytesize::ByteSize;
use duckdb::{Connection, ffi};

/// An in-memory catalog beside each database, for objects that must never
/// be committed to its file (see `replica::ingest`).
pub(crate) const SCRATCH_CATALOG: &str = "airlock_scratch";

/// Why a DuckDB database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The temp directory could not be created.
    #[error("cannot create DuckDB temp directory {path}: {source}")]
    TempDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// DuckDB could not open the file.
    #[error("DuckDB cannot open {path}: {message}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// DuckDB's reason.
        message: String,
    },
    /// DuckDB rejected a startup setting.
    #[error("DuckDB rejected the startup setting {0}")]
    Setting(String),
    /// DuckDB refused to open or configure the database.
    #[error("DuckDB: {0}")]
    DuckDb(#[from] duckdb::Error),
    /// A security setting did not take effect.
    #[error(
        "DuckDB setting {name} is '{actual}' after hardening, expected '{expected}'; \
         refusing to run with a weakened database"
    )]
    Weakened {
        /// Setting name.
        name: &'static str,
        /// Value read back.
        actual: String,
        /// Value required.
        expected: &'static str,
    },
}

/// Resource settings for one DuckDB instance.
#[derive(Debug, Clone)]
pub(crate) struct DuckDbResources {
    /// Worker threads (at least 1).
    pub(crate) threads: usize,
    /// Memory limit.
    pub(crate) memory_limit: ByteSize,
    /// Where DuckDB spills; must be inside `allowed_dir`.
    pub(crate) temp_directory: std::path::PathBuf,
    /// Most it may spill.
    pub(crate) max_temp_directory_size: ByteSize,
}

/// Settings read back after hardening, with the value each must have.
const EXPECTED: &[(&str, &str)] = &[
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("allow_unsigned_extensions", "false"),
    ("allow_community_extensions", "false"),
    ("enable_external_access", "false"),
    ("lock_configuration", "true"),
];

/// A DuckDB database instance, opened through DuckDB's C API.
///
/// duckdb-rs keeps the raw database and connection handles private, but
/// loading Arrow batches at DuckDB's own speed needs a raw connection (see
/// [`crate::replica`]'s ingest): so airlock opens the instance itself and
/// hands out duckdb-rs connections with [`Database::connect`]. A connection
/// keeps the instance alive on its own; making a new one needs this value,
/// which is why connections are never `try_clone`d (that would reach for
/// the raw handle, possibly after it is closed).
pub(crate) struct Database {
    raw: ffi::duckdb_database,
}

// SAFETY: a DuckDB database handle may be used from any thread; DuckDB
// synchronizes internally (the C API documents connections, not databases,
// as single-threaded).
unsafe impl Send for Database {}
// SAFETY: as above; `connect` only reads the handle.
unsafe impl Sync for Database {}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) the file at `path` with startup-only
    /// `settings`.
    fn open(path: &Path, settings: &[(&str, String)]) -> Result<Self, OpenError> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|e| OpenError::DuckDb(duckdb::Error::NulError(e)))?;
        let mut config: ffi::duckdb_config = std::ptr::null_mut();
        // SAFETY: `config` is created, used and destroyed here; every string
        // passed is a valid NUL-terminated CString that outlives its call.
        unsafe {
            if ffi::duckdb_create_config(&mut config) != ffi::DuckDBSuccess {
                return Err(OpenError::Setting("the configuration".into()));
            }
            for (name, value) in settings {
                let (Ok(c_name), Ok(c_value)) = (CString::new(*name), CString::new(value.as_str()))
                else {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(OpenError::Setting((*name).to_string()));
                };
                if ffi::duckdb_set_config(config, c_name.as_ptr(), c_value.as_ptr())
                    != ffi::DuckDBSuccess
                {
                    ffi::duckdb_destroy_config(&mut config);
                    return Err(OpenError::Setting((*name).to_string()));
                }
            }
            let mut raw: ffi::duckdb_database = std::ptr::null_mut();
            let mut error: *mut std::os::raw::c_char = std::ptr::null_mut();
            let state = ffi::duckdb_open_ext(c_path.as_ptr(), &mut raw, config, &mut error);
            ffi::duckdb_destroy_config(&mut config);
            if state != ffi::DuckDBSuccess {
                let message = if error.is_null() {
                    "unknown error".to_string()
                } else {
                    let message = CStr::from_ptr(error).to_string_lossy().into_owned();
                    ffi::duckdb_free(error.cast());
                    message
                };
                return Err(OpenError::Open {
                    path: path.to_path_buf(),
                    message,
                });
            }
            Ok(Self { raw })
        }
    }

    /// A new connection.
    pub(crate) fn connect(&self) -> Result<Connection, duckdb::Error> {
        // SAFETY: `raw` is an open database for as long as `self` lives;
        // the connection does not close it (`open_from_raw` is non-owning)
        // and keeps the instance alive by itself once made.
        unsafe { Connection::open_from_raw(self.raw) }
    }

    /// The raw handle, for a raw connection made and closed while `self`
    /// is borrowed.
    pub(crate) fn raw(&self) -> ffi::duckdb_database {
        self.raw
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once. Connections still open keep
        // the instance (and its file) alive until they close.
        unsafe { ffi::duckdb_close(&mut self.raw) }
    }
}

/// Opens (creating if needed) the DuckDB file at `path`, hardened and
/// confined to `allowed_dir`.
pub(crate) fn open_hardened(
    path: &Path,
    allowed_dir: &Path,
    resources: &DuckDbResources,
) -> Result<Database, OpenError> {
    std::fs::create_dir_all(&resources.temp_directory).map_err(|source| OpenError::TempDir {
        path: resources.temp_directory.clone(),
        source,
    })?;
    // Startup-only settings go to the configuration; the rest are SET below.
    let database = Database::open(
        path,
        &[
            ("autoload_known_extensions", "false".into()),
            ("autoinstall_known_extensions", "false".into()),
            ("allow_community_extensions", "false".into()),
            ("threads", resources.threads.max(1).to_string()),
        ],
    )?;
    let conn = database.connect()?;
    let allowed = sql_string(&allowed_dir.to_string_lossy());
    conn.execute_batch(&format!(
        "ATTACH ':memory:' AS {SCRATCH_CATALOG};
         SET memory_limit = {memory};
         SET temp_directory = {temp};
         SET max_temp_directory_size = {max_temp};
         SET allowed_directories = [{allowed}];
         SET enable_external_access = false;
         SET lock_configuration = true;",
        memory = sql_string(&duckdb_size(resources.memory_limit)),
        temp = sql_string(&resources.temp_directory.to_string_lossy()),
        max_temp = sql_string(&duckdb_size(resources.max_temp_directory_size)),
    ))?;
    verify_hardening(&conn)?;
    Ok(database)
}

/// Reads the security settings back and fails if any is not what
/// [`open_hardened`] set, so a DuckDB upgrade that renames or ignores a
/// setting cannot silently weaken the lockdown.
pub(crate) fn verify_hardening(conn: &Connection) -> Result<(), OpenError> {
    for (name, expected) in EXPECTED {
        let actual: String = conn.query_row(
            "SELECT CAST(current_setting(?) AS VARCHAR)",
            [name],
            |row| row.get(0),
        )?;
        if actual.to_ascii_lowercase() != *expected {
            return Err(OpenError::Weakened {
                name,
                actual,
                expected,
            });
        }
    }
    Ok(())
}

/// A SQL string literal; only for values airlock itself produces (paths,
/// sizes), never for agent input.
pub(crate) fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// DuckDB accepts sizes like `4096MiB`; whole mebibytes avoid rounding
/// surprises in its parser.
fn duckdb_size(size: ByteSize) -> String {
    format!("{}MiB", (size.as_u64() / (1024 * 1024)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(dir: &Path) -> DuckDbResources {
        DuckDbResources {
            threads: 1,
            memory_limit: ByteSize::mib(256),
            temp_directory: dir.join("tmp"),
            max_temp_directory_size: ByteSize::mib(64),
        }
    }

    #[test]
    fn hardened_database_refuses_files_and_setting_changes() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_hardened(
            &dir.path().join("t.duckdb"),
            dir.path(),
            &resources(dir.path()),
        )
        .unwrap();
        let conn = database.connect().unwrap();
        // Reading outside the data directory is refused.
        let err = conn
            .execute_batch("SELECT * FROM read_csv('/etc/passwd')")
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("disabled")
                || err.to_string().to_lowercase().contains("permission"),
            "{err}"
        );
        // Loosening a setting is refused because the configuration is locked.
        let err = conn
            .execute_batch("SET enable_external_access = true")
            .unwrap_err();
        assert!(err.to_string().to_lowercase().contains("lock"), "{err}");
        // Extensions cannot be installed.
        assert!(conn.execute_batch("INSTALL httpfs").is_err());
        // Ordinary work still runs.
        let n: i64 = conn
            .query_row("SELECT count(*) FROM range(10)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
        let limit: String = conn
            .query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0))
            .unwrap();
        assert!(limit.contains("256") || limit.contains("268"), "{limit}");
    }
}

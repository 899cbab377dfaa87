//! Opening DuckDB databases the way airlock needs them: hardened.
//!
//! DuckDB calls running untrusted SQL "unsafe by design". airlock never lets
//! agent text reach DuckDB (DataFusion plans it and we generate the SQL), so
//! these settings are defence in depth: no extension can be installed or
//! loaded, no file outside the data directory can be touched, and the
//! configuration is locked so that nothing later can loosen it. The order
//! matters: `allowed_directories` must be set before external access is
//! turned off, and the lock must come last.

use std::path::Path;

use bytesize::ByteSize;
use duckdb::{Config, Connection};

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

/// Opens (creating if needed) the DuckDB file at `path`, hardened and
/// confined to `allowed_dir`.
pub(crate) fn open_hardened(
    path: &Path,
    allowed_dir: &Path,
    resources: &DuckDbResources,
) -> Result<Connection, OpenError> {
    std::fs::create_dir_all(&resources.temp_directory).map_err(|source| OpenError::TempDir {
        path: resources.temp_directory.clone(),
        source,
    })?;
    // Startup-only settings go through Config; the rest are SET below.
    let config = Config::default()
        .enable_autoload_extension(false)?
        .with("autoinstall_known_extensions", "false")?
        .with("allow_community_extensions", "false")?
        .threads(resources.threads.max(1) as i64)?;
    let conn = Connection::open_with_flags(path, config)?;
    let allowed = sql_string(&allowed_dir.to_string_lossy());
    conn.execute_batch(&format!(
        "SET memory_limit = {memory};
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
    Ok(conn)
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
        let conn = open_hardened(
            &dir.path().join("t.duckdb"),
            dir.path(),
            &resources(dir.path()),
        )
        .unwrap();
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

use super::*;

/// A replica in a temp dir with small resource settings.
pub(crate) fn replica(dir: &Path) -> Arc<Replica> {
    let config = DuckDbConfig {
        threads: 2,
        memory_limit: bytesize::ByteSize::mib(512),
        max_temp_directory_size: bytesize::ByteSize::mib(512),
    };
    Replica::open(dir, &config).unwrap()
}

/// Creates tables directly with DuckDB SQL (tests only) and reopens the
/// replica so its catalog sees them.
pub(crate) fn create(dir: &Path, replica: Arc<Replica>, sql: &str) -> Arc<Replica> {
    replica.connect().unwrap().execute_batch(sql).unwrap();
    drop(replica);
    self::replica(dir)
}

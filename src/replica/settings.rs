//! The replica's settings: DuckDB resources, read from `[duckdb]`.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// DuckDB replica settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DuckDbConfig {
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// DuckDB's memory limit.
    pub memory_limit: ByteSize,
    /// Most disk DuckDB may spill to under `<data_dir>/tmp`.
    pub max_temp_directory_size: ByteSize,
}

impl Default for DuckDbConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            memory_limit: ByteSize::gib(4),
            max_temp_directory_size: ByteSize::gib(20),
        }
    }
}

//! Query settings: `[query]` bounds every query; `[limits]` are the
//! defaults for agents and swarms where their grant sets none.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Limits on each query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer is interrupted and fails with DEADLINE_EXCEEDED.
    #[serde(with = "crate::duration_text")]
    pub timeout: Duration,
    /// Memory pool shared by DataFusion operators of all running queries.
    pub memory_limit: ByteSize,
    /// Longest SQL text accepted, in bytes.
    pub max_sql_length: usize,
    /// Deepest expression nesting accepted (`a OR b OR …` nests one level
    /// per term); deeper ones are refused before planning.
    pub max_expression_depth: usize,
    /// Largest batch an operator computing values may produce; a query
    /// building values past it (huge strings, doubling) is stopped.
    pub max_batch_bytes: ByteSize,
    /// Runs each largest part of a plan DuckDB can evaluate exactly
    /// (filters, joins, aggregates, sorts) as one generated DuckDB query;
    /// `false` leaves all of it to DataFusion.
    pub pushdown: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_limit: ByteSize::gib(2),
            max_sql_length: 256 * 1024,
            max_expression_depth: 250,
            max_batch_bytes: ByteSize::mib(256),
            pushdown: true,
        }
    }
}

/// Default limits for restricted principals (agents and swarm tokens);
/// a grant's `limits` override them. Admins are bound only by `[query]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitDefaults {
    /// Rows a query returns at most; the stream stops there and its last
    /// message says it was truncated.
    pub max_rows: u64,
    /// Queries one agent may run at once.
    pub max_concurrent: u32,
    /// Queries one agent may start per minute.
    pub per_minute: u32,
}

impl Default for LimitDefaults {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_concurrent: 4,
            per_minute: 600,
        }
    }
}

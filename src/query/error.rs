//! Query errors: [`QueryError`], every way a query can fail to be
//! planned or run, and [`describe`], which turns DataFusion's errors into
//! messages a user can act on.

use std::time::Duration;

use datafusion::common::DataFusionError;

/// Why a query could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Longer than `query.max_sql_length`.
    #[error("SQL text is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Expressions nested deeper than `query.max_expression_depth`.
    #[error(
        "expression nested deeper than {0} levels; simplify it (an IN list instead of a chain of ORs, say)"
    )]
    TooDeep(usize),
    /// No statement at all.
    #[error("empty query: send one SELECT statement")]
    Empty,
    /// Does not parse.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// Several statements in one text.
    #[error("{0} statements in one request; airlock runs exactly one query per request")]
    MultipleStatements(usize),
    /// Parses, but is not a query.
    #[error("{0} is not allowed: airlock is read-only and runs only SELECT queries")]
    NotAQuery(String),
    /// A `TABLESAMPLE` clause airlock does not support.
    #[error("unsupported sample: {0}")]
    Sample(String),
    /// A restricted principal called a table function.
    #[error("table function '{0}' is not available: agents read only the tables granted to them")]
    TableFunction(String),
    /// A referenced table is not visible.
    #[error(
        "table '{0}' does not exist or is not visible to you; list tables with GetTables or the table.list action"
    )]
    UnknownTable(String),
    /// Planning failed (unknown column, type error, unsupported feature, …).
    #[error("{}", describe(.0))]
    Plan(DataFusionError),
    /// Parameter binding failed.
    #[error("parameters: {0}")]
    Parameters(String),
    /// Execution failed.
    #[error("{}", describe(.0))]
    Execution(DataFusionError),
    /// Ran past `query.timeout`.
    #[error("query exceeded the time limit of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Cancelled by CancelFlightInfo.
    #[error("query cancelled")]
    Cancelled,
    /// Over a concurrency or rate limit.
    #[error("{0}")]
    Overloaded(String),
    /// A cancel named a query that is not running (or not the caller's).
    #[error("query {0} is not running (it finished, never started, or belongs to someone else)")]
    NotRunning(String),
    /// The limits shared by a cluster's nodes could not be counted.
    #[error("cannot count this agent's limits across the cluster: {0}; retry shortly")]
    SharedLimits(crate::meta::MetaError),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// DataFusion's message without its wrapper prefixes, plus the position of
/// the problem in the SQL text when DataFusion knows it.
pub(super) fn describe(error: &DataFusionError) -> String {
    let root = error.find_root();
    let mut message = match root {
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m) => m.clone(),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::SQL(e, _) => e.to_string(),
        DataFusionError::ResourcesExhausted(m) => format!("out of query memory: {m}"),
        other => other.to_string(),
    };
    if let Some(span) = error.diagnostic().and_then(|d| d.span) {
        message.push_str(&format!(
            " (at line {}, column {})",
            span.start.line, span.start.column
        ));
    }
    message
}

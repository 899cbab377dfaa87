//! `table.sample`: a sample of the rows the caller may see, as a query the
//! caller then runs like any other (so its row filter and masks apply, its
//! limits count, and the rows are audited).
//!
//! Plain samples become `TABLESAMPLE` clauses; a stratified one spreads up to
//! `rows` across the values of a column: each value's rows are ranked by the
//! seeded sample key, and rows are taken rank by rank — the first of every
//! value, then the second of every value, and so on.

use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::query::{QueryEngine, sample_key_sql};
use crate::table_name::{TableName, quote_ident};

/// Sampling failures.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The request is inconsistent.
    #[error("invalid sample request: {0}")]
    BadRequest(String),
    /// The table is not one the caller may see.
    #[error(
        "table '{0}' does not exist or is not visible to you; list tables with GetTables or the table.list action"
    )]
    UnknownTable(String),
}

/// How rows are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SampleMethod {
    /// Exactly `rows` rows (fewer if there are fewer).
    Reservoir,
    /// Each row with probability `fraction`.
    Bernoulli,
    /// Like bernoulli (airlock samples row by row).
    System,
}

/// The body of `table.sample`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleRequest {
    /// `schema.table`.
    pub table: String,
    /// Rows to return (reservoir).
    #[serde(default)]
    pub rows: Option<u64>,
    /// Share of rows to return, 0 to 1 (bernoulli, system).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Default: reservoir with `rows`, bernoulli with `fraction`.
    #[serde(default)]
    pub method: Option<SampleMethod>,
    /// Same seed, same table version: same sample. Default: a random one
    /// (returned, so the sample can be drawn again).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Spread the rows across this column's values.
    #[serde(default)]
    pub stratify_by: Option<String>,
}

/// A sample, ready to run as the caller.
#[derive(Debug, Clone, Serialize)]
pub struct SamplePlan {
    /// The table sampled.
    pub table: String,
    /// The method used.
    pub method: SampleMethod,
    /// The seed used.
    pub seed: u64,
    /// The query that draws it.
    pub sql: String,
}

/// Turns a request into the query that draws the sample.
pub fn plan_sample(
    query: &QueryEngine,
    principal: &Principal,
    request: SampleRequest,
) -> Result<SamplePlan, SampleError> {
    let bad = |m: &str| Err(SampleError::BadRequest(m.to_string()));
    let name = TableName::parse(&request.table)
        .map_err(|_| SampleError::UnknownTable(request.table.clone()))?;
    let visible = query.visible_tables(principal);
    let schema = visible
        .get(&name)
        .ok_or_else(|| SampleError::UnknownTable(request.table.clone()))?;
    let method = match (request.method, request.rows, request.fraction) {
        (None | Some(SampleMethod::Reservoir), Some(_), None) => SampleMethod::Reservoir,
        (None, None, Some(_)) => SampleMethod::Bernoulli,
        (Some(m @ (SampleMethod::Bernoulli | SampleMethod::System)), None, Some(_)) => m,
        (_, Some(_), Some(_)) | (_, None, None) => {
            return bad("give exactly one of \"rows\" or \"fraction\"");
        }
        (Some(SampleMethod::Reservoir), None, Some(_)) => {
            return bad("reservoir sampling takes \"rows\"; use bernoulli for a fraction");
        }
        (Some(_), Some(_), None) => {
            return bad("bernoulli and system sampling take \"fraction\"; use reservoir for rows");
        }
    };
    let seed = request.seed.unwrap_or_else(|| rand::random::<u64>() >> 1);
    let table = format!(
        "{}.{}",
        quote_ident(name.schema()),
        quote_ident(name.table())
    );
    let sql = match (&request.stratify_by, request.rows, request.fraction) {
        (Some(column), Some(rows), None) => {
            let Some(field) = schema.fields().iter().find(|f| f.name() == column) else {
                return Err(SampleError::BadRequest(format!(
                    "stratify_by: '{}' has no column '{column}' you may see",
                    request.table
                )));
            };
            let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let listed = columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let key = sample_key_sql(&columns, seed);
            format!(
                "SELECT {listed} FROM (SELECT *, {key} AS __airlock_key, row_number() OVER \
                 (PARTITION BY {by} ORDER BY {key}) AS __airlock_rank FROM {table}) AS s \
                 ORDER BY __airlock_rank, __airlock_key LIMIT {rows}",
                by = quote_ident(field.name())
            )
        }
        (Some(_), _, _) => return bad("stratify_by takes \"rows\""),
        (None, Some(rows), None) => {
            format!("SELECT * FROM {table} TABLESAMPLE ({rows} ROWS) REPEATABLE ({seed})")
        }
        (None, None, Some(fraction)) => {
            if !(0.0..=1.0).contains(&fraction) {
                return bad("fraction must be between 0 and 1");
            }
            let method = match method {
                SampleMethod::System => "SYSTEM",
                _ => "BERNOULLI",
            };
            format!(
                "SELECT * FROM {table} TABLESAMPLE {method} ({} PERCENT) REPEATABLE ({seed})",
                fraction * 100.0
            )
        }
        _ => return bad("give exactly one of \"rows\" or \"fraction\""),
    };
    Ok(SamplePlan {
        table: name.to_string(),
        method,
        seed,
        sql,
    })
}

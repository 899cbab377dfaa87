//! What a profile says: the request, and per column its statistics, top
//! values and histogram, as actions and tools return them.

use serde::{Deserialize, Serialize};

/// What to profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// `schema.table`.
    pub table: String,
    /// Only these columns (default: every visible column).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Profile a reservoir sample of this many rows instead of every row.
    #[serde(default)]
    pub sample: Option<u64>,
    /// How many top values to report for low-cardinality columns (default
    /// 10, at most 100: all of them).
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// A statistic that is a number for numeric columns and a value rendered
/// as text for others (dates, timestamps, strings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Stat {
    /// A number.
    Number(f64),
    /// A value as text.
    Text(String),
}

impl Stat {
    pub fn text(&self) -> String {
        match self {
            Stat::Number(n) => n.to_string(),
            Stat::Text(t) => t.clone(),
        }
    }
}

/// One frequent value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopValue {
    /// The value as text (null for NULL).
    pub value: Option<String>,
    /// Rows holding it.
    pub count: u64,
}

/// One histogram bucket: `[lower, upper)` (the last one includes `upper`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Rows in it.
    pub count: u64,
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnProfile {
    /// Column name.
    pub column: String,
    /// Arrow type.
    pub data_type: String,
    /// Non-null values.
    pub count: u64,
    /// Null values.
    pub null_count: u64,
    /// `null_count / rows` (0 for an empty table).
    pub null_fraction: f64,
    /// Distinct non-null values, estimated (HyperLogLog).
    pub approx_distinct: Option<u64>,
    /// Smallest value.
    pub min: Option<Stat>,
    /// Largest value.
    pub max: Option<Stat>,
    /// Mean (numbers and times).
    pub mean: Option<Stat>,
    /// Standard deviation (numbers; seconds for times).
    pub stddev: Option<f64>,
    /// Quartiles, approximate (numbers and times).
    pub p25: Option<Stat>,
    /// Median, approximate.
    pub p50: Option<Stat>,
    /// Third quartile, approximate.
    pub p75: Option<Stat>,
    /// Shortest string, in characters.
    pub min_length: Option<u64>,
    /// Longest string, in characters.
    pub max_length: Option<u64>,
    /// Mean string length, in characters.
    pub avg_length: Option<f64>,
    /// Most frequent values, for columns with few distinct values.
    pub top_values: Option<Vec<TopValue>>,
    /// Equi-width histogram, for numeric columns.
    pub histogram: Option<Vec<Bucket>>,
}

/// The profile of a table as one principal sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableProfile {
    /// The table.
    pub table: String,
    /// Rows profiled.
    pub rows: u64,
    /// Whether a sample was profiled rather than every row.
    pub sampled: bool,
    /// One entry per profiled column, in table order.
    pub columns: Vec<ColumnProfile>,
}

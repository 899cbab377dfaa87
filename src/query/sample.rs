//! `TABLESAMPLE`: read from the statement before planning (DataFusion parses
//! the clause and ignores it, which would return the whole table), and
//! planned as an ordinary query over the caller's own (governed) table:
//!
//! ```text
//!  t TABLESAMPLE (100 ROWS) REPEATABLE (7)
//!    → (SELECT * FROM t ORDER BY __airlock_sample_key(7, c1, c2, …) LIMIT 100) AS t
//!  t TABLESAMPLE BERNOULLI (1 PERCENT) REPEATABLE (7)
//!    → (SELECT * FROM t WHERE __airlock_sample_key(7, c1, c2, …) < 2^63 · 0.01) AS t
//! ```
//!
//! The key is a seeded hash of a row's visible values, so the row filter and
//! masks apply before the sample (the sample is drawn from what the caller
//! may see, never from hidden rows), and the same seed on the same table
//! version gives the same sample whatever the partitioning. `SYSTEM` is
//! sampled row by row as well (a block sample may be that random; it is
//! never less). Every other form is refused by name.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result as DfResult, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Query, SetExpr, Statement, TableAlias, TableFactor, TableSample, TableSampleKind,
    TableSampleMethod, TableSampleModifier, TableSampleUnit, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::catalog::VisibleTables;
use super::error::QueryError;
use super::session::resolve;
use crate::table_name::quote_ident;

/// The hash that orders and selects sampled rows. Callable, but harmless:
/// it only hashes values the caller already sees.
pub(crate) const SAMPLE_KEY: &str = "__airlock_sample_key";

/// Rows a `TABLESAMPLE (n ROWS)` may ask for at most.
const MAX_SAMPLE_ROWS: u64 = 10_000_000;

/// How rows are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SampleSize {
    /// Exactly this many rows (fewer if the table has fewer): reservoir.
    Rows(u64),
    /// Each row with this probability (0 to 1): Bernoulli.
    Fraction(f64),
}

/// Whether a statement samples a table (`TABLESAMPLE`).
pub(crate) fn has_samples(statement: &DFStatement) -> bool {
    struct Finder;
    impl datafusion::sql::sqlparser::ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::Table {
                    sample: Some(_), ..
                } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let DFStatement::Statement(inner) = statement else {
        return false;
    };
    datafusion::sql::sqlparser::ast::Visit::visit(inner.as_ref(), &mut Finder).is_break()
}

/// Rewrites every `TABLESAMPLE` of a statement into a sampling subquery
/// over the same table; refuses forms it does not support.
pub(crate) fn rewrite_samples(
    statement: &mut DFStatement,
    visible: &VisibleTables,
) -> Result<(), QueryError> {
    let DFStatement::Statement(inner) = statement else {
        return Ok(());
    };
    let mut rewriter = Rewriter { visible };
    match inner.visit(&mut rewriter) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Rewriter<'a> {
    visible: &'a VisibleTables,
}

impl VisitorMut for Rewriter<'_> {
    type Break = QueryError;

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<QueryError> {
        let result = match factor {
            TableFactor::Table {
                name,
                alias,
                sample: Some(sample),
                ..
            } => {
                let sample = match sample {
                    TableSampleKind::BeforeTableAlias(s) | TableSampleKind::AfterTableAlias(s) => s,
                };
                sample_spec(sample).and_then(|(size, seed)| {
                    let reference = object_name_to_table_reference(name.clone(), true)
                        .map_err(QueryError::Plan)?;
                    let table = resolve(&reference, self.visible)?
                        .ok_or_else(|| QueryError::UnknownTable(reference.to_string()))?;
                    let schema = self
                        .visible
                        .get(&table)
                        .ok_or_else(|| QueryError::UnknownTable(reference.to_string()))?;
                    let columns: Vec<String> =
                        schema.fields().iter().map(|f| f.name().clone()).collect();
                    let subquery = sampling_query(&name.to_string(), &columns, size, seed)?;
                    let alias = alias.clone().unwrap_or_else(|| TableAlias {
                        explicit: true,
                        name: Ident::new(reference.table()),
                        columns: vec![],
                        at: None,
                    });
                    Ok(TableFactor::Derived {
                        lateral: false,
                        subquery: Box::new(subquery),
                        alias: Some(alias),
                        sample: None,
                    })
                })
            }
            TableFactor::Derived {
                sample: Some(_), ..
            } => Err(QueryError::Sample(
                "TABLESAMPLE applies to a table, not to a subquery".into(),
            )),
            _ => return ControlFlow::Continue(()),
        };
        match result {
            Ok(replacement) => {
                *factor = replacement;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

const FORMS: &str = "use TABLESAMPLE (n ROWS), TABLESAMPLE BERNOULLI (p PERCENT) or \
                     TABLESAMPLE SYSTEM (p PERCENT), each with an optional REPEATABLE (seed)";

/// The size and seed of a supported sample clause.
fn sample_spec(sample: &TableSample) -> Result<(SampleSize, u64), QueryError> {
    let refuse = |what: &str| {
        Err(QueryError::Sample(format!(
            "{what} is not supported; {FORMS}"
        )))
    };
    if sample.modifier != TableSampleModifier::TableSample {
        return refuse("SAMPLE");
    }
    if sample.bucket.is_some() || sample.offset.is_some() {
        return refuse("a bucket sample");
    }
    let Some(quantity) = &sample.quantity else {
        return refuse("a sample without a size");
    };
    let number = match &quantity.value {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.clone(),
            _ => return refuse(&format!("a sample size of {}", quantity.value)),
        },
        other => return refuse(&format!("a sample size of {other}")),
    };
    let size = match (sample.name, quantity.unit) {
        (None, Some(TableSampleUnit::Rows)) => {
            let rows: u64 = number.parse().map_err(|_| {
                QueryError::Sample(format!(
                    "TABLESAMPLE ({number} ROWS): rows must be a whole number"
                ))
            })?;
            if rows > MAX_SAMPLE_ROWS {
                return Err(QueryError::Sample(format!(
                    "TABLESAMPLE ({rows} ROWS): at most {MAX_SAMPLE_ROWS} rows"
                )));
            }
            SampleSize::Rows(rows)
        }
        (
            Some(TableSampleMethod::Bernoulli | TableSampleMethod::System),
            None | Some(TableSampleUnit::Percent),
        ) => {
            let percent: f64 = number.parse().map_err(|_| {
                QueryError::Sample(format!("TABLESAMPLE ({number} PERCENT): not a number"))
            })?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(QueryError::Sample(format!(
                    "TABLESAMPLE ({number} PERCENT): the percentage must be between 0 and 100"
                )));
            }
            SampleSize::Fraction(percent / 100.0)
        }
        (name, unit) => {
            let method = name.map(|n| format!("{n} ")).unwrap_or_default();
            let unit = unit.map(|u| format!(" {u}")).unwrap_or_default();
            return refuse(&format!("TABLESAMPLE {method}({number}{unit})"));
        }
    };
    let seed = match &sample.seed {
        None => rand::random::<u64>() >> 1,
        Some(seed) => match &seed.value.value {
            Value::Number(n, _) => n.parse::<u64>().map_err(|_| {
                QueryError::Sample(format!(
                    "REPEATABLE ({n}): the seed must be a whole number from 0 to {}",
                    u64::MAX
                ))
            })?,
            other => return refuse(&format!("REPEATABLE ({other})")),
        },
    };
    Ok((size, seed))
}

/// The subquery that draws the sample, as SQL over the table as written.
pub(crate) fn sampling_sql(table: &str, columns: &[String], size: SampleSize, seed: u64) -> String {
    let key = sample_key_sql(columns, seed);
    match size {
        SampleSize::Rows(rows) => format!("SELECT * FROM {table} ORDER BY {key} LIMIT {rows}"),
        SampleSize::Fraction(fraction) => {
            // The key is uniform on [0, 2^63): a row is kept with
            // probability `fraction`.
            let threshold = (fraction * 2f64.powi(63)).min(i64::MAX as f64) as i64;
            let keep = if fraction >= 1.0 {
                "TRUE".to_string()
            } else {
                format!("{key} < {threshold}")
            };
            format!("SELECT * FROM {table} WHERE {keep}")
        }
    }
}

/// `__airlock_sample_key(seed, "c1", "c2", …)`: a seeded hash of a row's
/// values, for SQL that orders or picks rows reproducibly.
pub fn sample_key_sql(columns: &[String], seed: u64) -> String {
    let mut args = vec![seed.to_string()];
    args.extend(columns.iter().map(|c| quote_ident(c)));
    format!("{SAMPLE_KEY}({})", args.join(", "))
}

fn sampling_query(
    table: &str,
    columns: &[String],
    size: SampleSize,
    seed: u64,
) -> Result<Query, QueryError> {
    let sql = sampling_sql(table, columns, size, seed);
    let mut statements = DFParser::parse_sql_with_dialect(&sql, &GenericDialect {})
        .map_err(|e| QueryError::Internal(format!("sampling query {sql}: {e}")))?;
    match statements.pop_front() {
        Some(DFStatement::Statement(statement)) => match *statement {
            Statement::Query(query) if matches!(*query.body, SetExpr::Select(_)) => Ok(*query),
            other => Err(QueryError::Internal(format!(
                "sampling query parsed as {other}"
            ))),
        },
        other => Err(QueryError::Internal(format!(
            "sampling query parsed as {other:?}"
        ))),
    }
}

/// `__airlock_sample_key(seed, …columns)`: xxHash64 of a row's values in
/// Arrow's row format, seeded, as a non-negative Int64.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct SampleKey {
    signature: Signature,
}

impl SampleKey {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::from(Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for SampleKey {
    fn name(&self) -> &str {
        SAMPLE_KEY
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let Some((seed, values)) = args.args.split_first() else {
            return plan_err!("{SAMPLE_KEY} takes a seed and columns");
        };
        let seed = match seed {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::UInt64)? {
                datafusion::common::ScalarValue::UInt64(Some(seed)) => seed,
                _ => return plan_err!("{SAMPLE_KEY}: the seed must be a number"),
            },
            ColumnarValue::Array(_) => return plan_err!("{SAMPLE_KEY}: the seed must be constant"),
        };
        let arrays: Vec<ArrayRef> = values
            .iter()
            .map(|v| v.to_array(rows))
            .collect::<DfResult<_>>()?;
        let converter = RowConverter::new(
            arrays
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let converted = converter.convert_columns(&arrays)?;
        let keys: Int64Array = (0..rows)
            .map(|i| {
                let bytes: &[u8] = if arrays.is_empty() {
                    &[]
                } else {
                    converted.row(i).data()
                };
                Some((twox_hash::XxHash64::oneshot(seed, bytes) >> 1) as i64)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(keys)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::statement::{StatementLimits, parse_query};

    const LIMITS: StatementLimits = StatementLimits {
        max_length: 10_000,
        max_depth: 100,
    };

    fn spec(sql: &str) -> Result<(SampleSize, u64), QueryError> {
        let statement = parse_query(sql, LIMITS)?;
        let DFStatement::Statement(inner) = statement else {
            panic!("not a statement");
        };
        struct Find(Option<TableSample>);
        impl datafusion::sql::sqlparser::ast::Visitor for Find {
            type Break = ();
            fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
                if let TableFactor::Table {
                    sample:
                        Some(
                            TableSampleKind::AfterTableAlias(s)
                            | TableSampleKind::BeforeTableAlias(s),
                        ),
                    ..
                } = f
                {
                    self.0 = Some((**s).clone());
                }
                ControlFlow::Continue(())
            }
        }
        let mut find = Find(None);
        let _ = datafusion::sql::sqlparser::ast::Visit::visit(&*inner, &mut find);
        sample_spec(&find.0.expect("a sample clause"))
    }

    #[test]
    fn the_three_forms_parse_with_their_seed() {
        assert_eq!(
            spec("SELECT * FROM t TABLESAMPLE (100 ROWS) REPEATABLE (7)").unwrap(),
            (SampleSize::Rows(100), 7)
        );
        assert_eq!(
            spec("SELECT * FROM t TABLESAMPLE BERNOULLI (1 PERCENT) REPEATABLE (3)").unwrap(),
            (SampleSize::Fraction(0.01), 3)
        );
        assert_eq!(
            spec("SELECT * FROM t AS x TABLESAMPLE SYSTEM (50) REPEATABLE (9)").unwrap(),
            (SampleSize::Fraction(0.5), 9)
        );
    }

    #[test]
    fn every_other_form_is_refused_by_name() {
        for (sql, named) in [
            ("SELECT * FROM t TABLESAMPLE (10 PERCENT)", "(10 PERCENT)"),
            (
                "SELECT * FROM t TABLESAMPLE BERNOULLI (10 ROWS)",
                "BERNOULLI (10 ROWS)",
            ),
            ("SELECT * FROM t TABLESAMPLE (10)", "(10)"),
            (
                "SELECT * FROM t TABLESAMPLE BERNOULLI (150 PERCENT)",
                "between 0 and 100",
            ),
            ("SELECT * FROM t TABLESAMPLE (1.5 ROWS)", "whole number"),
            (
                "SELECT * FROM t TABLESAMPLE (100 ROWS) REPEATABLE (99999999999999999999999)",
                "seed must be",
            ),
        ] {
            let err = spec(sql).unwrap_err().to_string();
            assert!(err.contains(named), "{sql}: {err}");
        }
    }

    #[test]
    fn fractions_become_thresholds_on_the_key() {
        let sql = sampling_sql(
            "s.t",
            &["a".into(), "B".into()],
            SampleSize::Fraction(0.5),
            42,
        );
        assert_eq!(
            sql,
            "SELECT * FROM s.t WHERE __airlock_sample_key(42, \"a\", \"B\") < 4611686018427387904"
        );
        let all = sampling_sql("s.t", &["a".into()], SampleSize::Fraction(1.0), 1);
        assert_eq!(all, "SELECT * FROM s.t WHERE TRUE");
    }
}

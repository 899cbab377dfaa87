//! `SELECT * FROM airlock.profile('schema.table')`: the one table function
//! agents may call. Before the table-function gate and before planning,
//! each call is replaced by the rows of the table's profile (computed by
//! [`super::profile`] through the caller's policy) as a `VALUES` derived
//! table, one row per column; the generated text holds only values the
//! caller may read, and DataFusion (never DuckDB) parses it.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, Ident, Query, Statement, TableAlias, TableFactor, Value,
    Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::error::QueryError;
use super::profile::{Stat, TableProfile};

/// The tables named by `airlock.profile('schema.table')` calls in a
/// statement, in order. Any other use of that name is refused.
pub(super) fn profile_calls(statement: &DFStatement) -> Result<Vec<String>, QueryError> {
    struct Finder(Vec<String>);
    impl Visitor for Finder {
        type Break = QueryError;
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
            if let Some(call) = profile_call(factor) {
                match call {
                    Ok(table) => self.0.push(table),
                    Err(e) => return ControlFlow::Break(e),
                }
            }
            ControlFlow::Continue(())
        }
    }
    let DFStatement::Statement(inner) = statement else {
        return Ok(vec![]);
    };
    let mut finder = Finder(vec![]);
    match inner.visit(&mut finder) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(finder.0),
    }
}

/// Replaces each `airlock.profile('t')` with the rows of its profile
/// (`values` holds the SQL of each, by table as written in the call).
pub(super) fn replace_profile_calls(
    statement: &mut DFStatement,
    values: &HashMap<String, String>,
) -> Result<(), QueryError> {
    struct Replacer<'a>(&'a HashMap<String, String>);
    impl VisitorMut for Replacer<'_> {
        type Break = QueryError;
        fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<QueryError> {
            let Some(Ok(table)) = profile_call(factor) else {
                return ControlFlow::Continue(());
            };
            let alias = match factor {
                TableFactor::Table { alias, .. } => alias.clone(),
                _ => None,
            };
            let Some(sql) = self.0.get(&table) else {
                return ControlFlow::Break(QueryError::Internal(format!("no profile of {table}")));
            };
            match parse_select(sql) {
                Ok(subquery) => {
                    *factor = TableFactor::Derived {
                        lateral: false,
                        subquery: Box::new(subquery),
                        alias: Some(alias.unwrap_or_else(|| TableAlias {
                            explicit: true,
                            name: Ident::new("profile"),
                            columns: vec![],
                            at: None,
                        })),
                        sample: None,
                    };
                    ControlFlow::Continue(())
                }
                Err(e) => ControlFlow::Break(e),
            }
        }
    }
    let DFStatement::Statement(inner) = statement else {
        return Ok(());
    };
    match inner.visit(&mut Replacer(values)) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `Some` when a table factor calls `airlock.profile`: `Ok(table)` for the
/// one accepted form, one string literal argument.
fn profile_call(factor: &TableFactor) -> Option<Result<String, QueryError>> {
    let TableFactor::Table {
        name,
        args: Some(args),
        ..
    } = factor
    else {
        return None;
    };
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect();
    if parts != ["airlock", "profile"] {
        return None;
    }
    let usage = || {
        QueryError::Plan(datafusion::error::DataFusionError::Plan(
            "airlock.profile takes one table name as a string: airlock.profile('schema.table')"
                .into(),
        ))
    };
    Some(match args.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => match &v.value {
            Value::SingleQuotedString(table) => Ok(table.clone()),
            _ => Err(usage()),
        },
        _ => Err(usage()),
    })
}

fn parse_select(sql: &str) -> Result<Query, QueryError> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| QueryError::Internal(format!("profile rows {sql}: {e}")))?;
    match statements.pop_front() {
        Some(DFStatement::Statement(statement)) => match *statement {
            Statement::Query(query) => Ok(*query),
            other => Err(QueryError::Internal(format!(
                "profile rows parsed as {other}"
            ))),
        },
        other => Err(QueryError::Internal(format!(
            "profile rows parsed as {other:?}"
        ))),
    }
}

/// A profile as rows, one per column, for `airlock.profile('t')`.
pub(crate) fn profile_values_sql(profile: &TableProfile) -> String {
    let text = |v: Option<String>| match v {
        Some(v) => format!("'{}'", v.replace('\'', "''")),
        None => "NULL".to_string(),
    };
    let number = |v: Option<f64>| match v {
        Some(v) if v.is_finite() => format!("{v:e}"),
        _ => "NULL".to_string(),
    };
    let rows: Vec<String> = profile
        .columns
        .iter()
        .map(|c| {
            let fields = [
                text(Some(c.column.clone())),
                text(Some(c.data_type.clone())),
                format!("CAST({} AS BIGINT)", profile.rows),
                format!("CAST({} AS BIGINT)", c.count),
                format!("CAST({} AS BIGINT)", c.null_count),
                format!("CAST({} AS DOUBLE)", number(Some(c.null_fraction))),
                format!(
                    "CAST({} AS BIGINT)",
                    c.approx_distinct.map_or("NULL".into(), |d| d.to_string())
                ),
                format!("CAST({} AS VARCHAR)", text(c.min.as_ref().map(Stat::text))),
                format!("CAST({} AS VARCHAR)", text(c.max.as_ref().map(Stat::text))),
                format!("CAST({} AS VARCHAR)", text(c.mean.as_ref().map(Stat::text))),
                format!("CAST({} AS DOUBLE)", number(c.stddev)),
                format!("CAST({} AS VARCHAR)", text(c.p25.as_ref().map(Stat::text))),
                format!("CAST({} AS VARCHAR)", text(c.p50.as_ref().map(Stat::text))),
                format!("CAST({} AS VARCHAR)", text(c.p75.as_ref().map(Stat::text))),
                format!(
                    "CAST({} AS BIGINT)",
                    c.min_length.map_or("NULL".into(), |d| d.to_string())
                ),
                format!(
                    "CAST({} AS BIGINT)",
                    c.max_length.map_or("NULL".into(), |d| d.to_string())
                ),
                format!("CAST({} AS DOUBLE)", number(c.avg_length)),
                format!(
                    "CAST({} AS VARCHAR)",
                    text(
                        c.top_values
                            .as_ref()
                            .and_then(|v| serde_json::to_string(v).ok())
                    )
                ),
                format!(
                    "CAST({} AS VARCHAR)",
                    text(
                        c.histogram
                            .as_ref()
                            .and_then(|v| serde_json::to_string(v).ok())
                    )
                ),
            ];
            format!("({})", fields.join(", "))
        })
        .collect();
    let names = "column_name, data_type, row_count, non_null_count, null_count, null_fraction, \
                 approx_distinct, min, max, mean, stddev, p25, p50, p75, min_length, max_length, \
                 avg_length, top_values, histogram";
    if rows.is_empty() {
        // No visible column: an empty table with the same columns.
        return format!(
            "SELECT * FROM (VALUES ({})) AS p({names}) WHERE FALSE",
            ["CAST(NULL AS VARCHAR)"; 19].join(", ")
        );
    }
    format!("SELECT * FROM (VALUES {}) AS p({names})", rows.join(", "))
}

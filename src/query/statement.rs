//! Parsing SQL text into exactly one read-only query statement.
//!
//! airlock is read-only: before anything is planned, the text must parse as
//! exactly one `SELECT`-style query (`SELECT`, `WITH`, `VALUES`, set
//! operations) or a discovery statement answered from the caller's own
//! catalog (`SHOW TABLES`, `SHOW COLUMNS FROM t`, `DESCRIBE t`). Everything else — DDL, DML, `COPY`, `SET`, `EXPLAIN`,
//! `PRAGMA`, `ATTACH`, stacked statements — is refused with an error naming
//! what was refused. `?` placeholders are numbered here (`$1`, `$2`, … in
//! the order they appear), because DataFusion only understands `$n`.

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    DescribeAlias, Expr, Statement, TableFactor, Value, Visit, Visitor, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use std::ops::ControlFlow;

use super::QueryError;

/// Limits on what a statement may look like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatementLimits {
    /// Longest SQL text, in bytes.
    pub(crate) max_length: usize,
    /// Deepest nesting of expressions (`1 + 1 + …` nests one level per term).
    pub(crate) max_depth: usize,
}

/// Parses `sql` into one query statement, or says why not.
///
/// Planning walks expression trees recursively, so a deep one (a long chain
/// of `+` or `OR`) would overflow the stack and kill the process; it is
/// refused here. Run this on a thread with a large stack: the parser itself
/// builds such chains without recursing, and refusing one means dropping it.
pub(crate) fn parse_query(sql: &str, limits: StatementLimits) -> Result<DFStatement, QueryError> {
    let max_len = limits.max_length;
    if sql.len() > max_len {
        return Err(QueryError::TooLong {
            len: sql.len(),
            max: max_len,
        });
    }
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| {
            // Statements the parser does not know (EXPORT DATABASE, DuckDB's
            // CREATE MACRO…) are still named as refused, not as typos.
            if let Some(kind) = leading_non_query_keywords(sql) {
                return QueryError::NotAQuery(kind);
            }
            let message = e.to_string();
            // The parser gives no position for a query that stops too early.
            if message.contains("found: EOF") {
                QueryError::Syntax(format!("{message} (the query ends too early)"))
            } else {
                QueryError::Syntax(message)
            }
        })?;
    let statement = match statements.len() {
        0 => return Err(QueryError::Empty),
        1 => statements.pop_front().ok_or(QueryError::Empty)?,
        n => return Err(QueryError::MultipleStatements(n)),
    };
    match statement {
        DFStatement::Statement(mut inner) => {
            if !is_read_only(&inner) {
                return Err(QueryError::NotAQuery(statement_kind(&inner.to_string())));
            }
            check_depth(&inner, limits.max_depth)?;
            number_placeholders(&mut inner)?;
            Ok(DFStatement::Statement(inner))
        }
        DFStatement::Explain(_) => Err(QueryError::NotAQuery("EXPLAIN".into())),
        DFStatement::CreateExternalTable(_) => {
            Err(QueryError::NotAQuery("CREATE EXTERNAL TABLE".into()))
        }
        DFStatement::CopyTo(_) => Err(QueryError::NotAQuery("COPY".into())),
        other => Err(QueryError::NotAQuery(statement_kind(&other.to_string()))),
    }
}

/// Queries, and the discovery statements answered from the caller's own
/// catalog: `SHOW TABLES`, `SHOW COLUMNS FROM t`, `DESCRIBE t`. Everything
/// else is refused by name, `SHOW ALL`, `SHOW <variable>` and `SET` included.
fn is_read_only(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_)
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ExplainTable {
                describe_alias: DescribeAlias::Describe | DescribeAlias::Desc,
                ..
            }
    )
}

/// Words that start a statement other than a query, in any dialect a
/// client may speak (DuckDB's included).
const STATEMENT_KEYWORDS: &[&str] = &[
    "ALTER",
    "ANALYZE",
    "ATTACH",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DESCRIBE",
    "DETACH",
    "DROP",
    "EXECUTE",
    "EXPLAIN",
    "EXPORT",
    "FORCE",
    "GRANT",
    "IMPORT",
    "INSERT",
    "INSTALL",
    "LOAD",
    "MERGE",
    "PRAGMA",
    "PREPARE",
    "REPLACE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SET",
    "SHOW",
    "START",
    "SUMMARIZE",
    "TRUNCATE",
    "UPDATE",
    "UPSERT",
    "USE",
    "VACUUM",
];

/// The first two words of `sql`, comments skipped, when they start a
/// statement other than a query; `None` otherwise.
fn leading_non_query_keywords(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let mut words = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_)));
    let Some(Token::Word(first)) = words.next() else {
        return None;
    };
    let first = first.value.to_ascii_uppercase();
    if !STATEMENT_KEYWORDS.contains(&first.as_str()) {
        return None;
    }
    Some(match words.next() {
        Some(Token::Word(second)) => format!("{first} {}", second.value.to_ascii_uppercase()),
        _ => first,
    })
}

/// The leading keywords of a statement, e.g. `DROP TABLE`, for messages.
fn statement_kind(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect();
    if words.is_empty() {
        "this statement".to_string()
    } else {
        words.join(" ").to_ascii_uppercase()
    }
}

/// Refuses expressions nested deeper than `max`. The walk stops at the
/// limit, so it never recurses deeper than `max` itself.
fn check_depth(statement: &Statement, max: usize) -> Result<(), QueryError> {
    struct Depth {
        current: usize,
        max: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.current += 1;
            if self.current > self.max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.current -= 1;
            ControlFlow::Continue(())
        }
    }
    match statement.visit(&mut Depth { current: 0, max }) {
        ControlFlow::Break(()) => Err(QueryError::TooDeep(max)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The first table function the statement calls (`range(…)`,
/// `read_csv(…)`, `TABLE(…)`), if any. Restricted principals may read only
/// granted tables, so for them any table function is refused by name
/// before planning.
pub(crate) fn first_table_function(statement: &DFStatement) -> Option<String> {
    struct Finder;
    impl Visitor for Finder {
        type Break = String;
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                }
                | TableFactor::Function { name, .. } => ControlFlow::Break(name.to_string()),
                TableFactor::TableFunction { expr, .. } => ControlFlow::Break(expr.to_string()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match statement {
        DFStatement::Statement(inner) => match inner.visit(&mut Finder) {
            ControlFlow::Break(name) => Some(name),
            ControlFlow::Continue(()) => None,
        },
        _ => None,
    }
}

/// Rewrites `?` placeholders into `$1`, `$2`, … in textual order.
fn number_placeholders(statement: &mut Statement) -> Result<(), QueryError> {
    let mut question_marks = Vec::new();
    let mut numbered = false;
    let _ = visit_expressions_mut(statement, |expr| {
        if let datafusion::sql::sqlparser::ast::Expr::Value(v) = expr
            && let Value::Placeholder(p) = &v.value
        {
            if p == "?" {
                let start = v.span.start;
                question_marks.push((start.line, start.column));
            } else {
                numbered = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if question_marks.is_empty() {
        return Ok(());
    }
    if numbered {
        return Err(QueryError::Syntax(
            "mix of '?' and '$n' placeholders; use one style".into(),
        ));
    }
    question_marks.sort_unstable();
    let _ = visit_expressions_mut(statement, |expr| {
        if let datafusion::sql::sqlparser::ast::Expr::Value(v) = expr
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            let start = v.span.start;
            if let Ok(i) = question_marks.binary_search(&(start.line, start.column)) {
                *p = format!("${}", i + 1);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StatementLimits = StatementLimits {
        max_length: 10_000,
        max_depth: 100,
    };

    fn refused(sql: &str) -> String {
        match parse_query(sql, LIMITS) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("accepted {sql:?} as {s}"),
        }
    }

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select * from s.t where a > 1",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "VALUES (1), (2)",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT 1;",
            "SHOW TABLES",
            "SHOW COLUMNS FROM s.t",
            "DESCRIBE s.t",
            "DESC s.t",
        ] {
            assert!(parse_query(sql, LIMITS).is_ok(), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        assert!(refused("DROP TABLE s.t").contains("DROP TABLE"));
        assert!(refused("INSERT INTO s.t VALUES (1)").contains("INSERT INTO"));
        assert!(refused("DELETE FROM s.t").contains("DELETE FROM"));
        assert!(refused("UPDATE s.t SET a = 1").contains("UPDATE"));
        assert!(refused("CREATE TABLE x (a int)").contains("CREATE TABLE"));
        assert!(refused("SET x = 1").contains("SET"));
        assert!(refused("SHOW ALL").contains("SHOW ALL"));
        assert!(refused("SHOW search_path").contains("SHOW"));
        assert!(refused("SHOW FUNCTIONS").contains("SHOW FUNCTIONS"));
        assert!(refused("EXPLAIN SELECT 1").contains("EXPLAIN"));
        assert!(refused("COPY s.t TO 'x.csv'").contains("COPY"));
        assert!(
            refused("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'")
                .contains("CREATE EXTERNAL TABLE")
        );
        assert!(refused("SELECT 1; DROP TABLE s.t").contains("2 statements"));
        // Statements the parser does not know are named too.
        assert!(refused("EXPORT DATABASE '/tmp/x'").contains("EXPORT DATABASE is not allowed"));
        assert!(refused("/* hi */ CREATE MACRO m(x) AS x").contains("CREATE MACRO is not allowed"));
        assert!(refused("SELEC 1").contains("syntax error"));
        assert!(refused("SELECT 1; SELECT 2").contains("2 statements"));
        assert!(refused("").contains("empty"));
        assert!(refused("-- only a comment").contains("empty"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let message = refused("SELECT * FROM t WHERE x = = 1");
        assert!(message.contains("Line: 1, Column: 27"), "{message}");
        let message = refused("SELECT * FROM t WHERE");
        assert!(message.contains("ends too early"), "{message}");
    }

    #[test]
    fn length_is_capped() {
        let limits = StatementLimits {
            max_length: 50,
            ..LIMITS
        };
        let err = parse_query(&format!("SELECT '{}'", "x".repeat(100)), limits).unwrap_err();
        assert!(matches!(err, QueryError::TooLong { max: 50, .. }), "{err}");
    }

    #[test]
    fn deep_expressions_are_refused_before_planning() {
        let chain = |n: usize| format!("SELECT {}", vec!["1"; n].join(" + "));
        assert!(parse_query(&chain(90), LIMITS).is_ok());
        let err = parse_query(&chain(150), LIMITS).unwrap_err();
        assert!(matches!(err, QueryError::TooDeep(100)), "{err}");
        let ors = format!("SELECT 1 WHERE {}", vec!["a = 1"; 150].join(" OR "));
        assert!(matches!(
            parse_query(&ors, LIMITS),
            Err(QueryError::TooDeep(100))
        ));
    }

    #[test]
    fn table_functions_are_found_in_any_position() {
        let found = |sql: &str| first_table_function(&parse_query(sql, LIMITS).unwrap());
        assert_eq!(found("SELECT * FROM range(10)").as_deref(), Some("range"));
        assert_eq!(
            found("SELECT * FROM t WHERE a IN (SELECT * FROM read_csv('/etc/passwd'))").as_deref(),
            Some("read_csv")
        );
        assert_eq!(
            found("WITH x AS (SELECT * FROM generate_series(1, 5)) SELECT * FROM x").as_deref(),
            Some("generate_series")
        );
        assert_eq!(found("SELECT * FROM s.t JOIN u USING (a)"), None);
        assert_eq!(found("SELECT * FROM UNNEST([1, 2])"), None);
    }

    #[test]
    fn question_marks_become_numbered_in_text_order() {
        let statement = parse_query(
            "SELECT ? AS a, x FROM t WHERE y = ? AND z IN (?, ?) LIMIT ?",
            LIMITS,
        )
        .unwrap();
        let text = statement.to_string();
        assert!(
            text.contains("$1 AS a")
                && text.contains("y = $2")
                && text.contains("($3, $4)")
                && text.contains("LIMIT $5"),
            "{text}"
        );
        assert!(matches!(
            parse_query("SELECT ?, $1", LIMITS),
            Err(QueryError::Syntax(_))
        ));
    }
}

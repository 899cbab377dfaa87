//! Plan nodes as one DuckDB query.
//!
//! Every node becomes its own `SELECT … AS c0, … FROM (<child>) AS tN`:
//! columns are found by position in the child's schema, so no name a
//! query wrote (aliases, qualifiers, quoted identifiers that DuckDB would
//! match case-insensitively) reaches DuckDB, and no unparser rule can fold
//! a filter into the wrong join side. DuckDB flattens the nesting when it
//! plans, except between joins: a tree of inner joins renders as one
//! SELECT over its leaves (see `joins`), so that DuckDB orders the joins.
//!
//! Leaves are replica scans. A governed table becomes a derived table that
//! applies its row filter and masks first; a predicate anywhere above it
//! that could fail is refused, so an error can never come from a hidden
//! row (DuckDB may move predicates below the derived table).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Distinct, Expr, FetchType, Limit, LogicalPlan, SkipType, Sort};

use crate::replica::sql_expr::{
    Exprs, Input, Rendered, Scope, is_ordered_alike, refuse, uses_all_params,
};
use crate::replica::{PhysicalTable, Replica};

/// A rendered sub-plan: the query, its parameters, the tables it reads.
#[derive(Debug)]
pub(crate) struct Pushed {
    pub(crate) sql: String,
    pub(crate) params: Vec<ScalarValue>,
    pub(crate) replica: Arc<Replica>,
    pub(crate) tables: Vec<Arc<PhysicalTable>>,
    /// `schema.table.column` of every stored column read.
    pub(crate) columns: Vec<String>,
    /// What DataFusion computes from the query's columns, when they are
    /// not the node's own (a decimal average from its sum and count).
    pub(crate) finish: Option<Vec<Output>>,
}

/// One output column of a pushed aggregate.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    /// Query column `index`, as is.
    Column { index: usize, data_type: DataType },
    /// `avg` of a decimal: query columns `sum` (DECIMAL(38, scale)) and
    /// `count`, finished as DataFusion does.
    DecimalAvg {
        sum: usize,
        count: usize,
        sum_scale: i8,
        precision: u8,
        scale: i8,
    },
}

/// A rendered node.
pub(super) struct Rel {
    /// A SELECT (without its LIMIT).
    pub(super) select: String,
    /// `(skip, fetch)` applying to `select`.
    pub(super) limit: Option<(usize, Option<usize>)>,
    /// Whether `select` ends in an ORDER BY the result must keep.
    pub(super) ordered: bool,
    pub(super) finish: Option<Vec<Output>>,
    /// Per output column: computed by an expression that can fail.
    pub(super) failing: Vec<bool>,
}

impl Rel {
    pub(super) fn plain(select: String, failing: Vec<bool>) -> Self {
        Self {
            select,
            limit: None,
            ordered: false,
            finish: None,
            failing,
        }
    }

    pub(super) fn sql(&self) -> String {
        match self.limit {
            None => self.select.clone(),
            Some((skip, fetch)) => {
                let mut sql = self.select.clone();
                if let Some(fetch) = fetch {
                    sql.push_str(&format!(" LIMIT {fetch}"));
                }
                if skip > 0 {
                    sql.push_str(&format!(" OFFSET {skip}"));
                }
                sql
            }
        }
    }
}

/// Renders `plan` as one DuckDB query, or says why it cannot be. Only the
/// root of the whole plan may be ordered by DuckDB: above a pushed node,
/// DataFusion does not know DuckDB's order and may not keep it.
pub(crate) fn render(plan: &LogicalPlan, is_root: bool) -> Rendered<Pushed> {
    let mut renderer = Renderer::default();
    let rel = renderer.node(plan)?;
    if rel.ordered && !is_root {
        return refuse("an ORDER BY with DataFusion operators above it");
    }
    if renderer.barrier && renderer.failing_predicates > 0 {
        return refuse("a predicate that can fail would run beside a row filter");
    }
    let Some(replica) = renderer.replica else {
        return refuse("no replica table");
    };
    let sql = rel.sql();
    if !uses_all_params(&sql, renderer.params.len()) {
        return refuse("a parameter is missing from the generated SQL");
    }
    Ok(Pushed {
        sql,
        params: renderer.params,
        replica,
        tables: renderer.tables,
        columns: renderer.columns,
        finish: rel.finish,
    })
}

#[derive(Default)]
pub(super) struct Renderer {
    pub(super) params: Vec<ScalarValue>,
    pub(super) aliases: usize,
    pub(super) replica: Option<Arc<Replica>>,
    pub(super) tables: Vec<Arc<PhysicalTable>>,
    pub(super) columns: Vec<String>,
    /// A governed table with a row filter is read.
    pub(super) barrier: bool,
    /// Predicates (WHERE, ON, HAVING) that can raise an error.
    pub(super) failing_predicates: usize,
}

impl Renderer {
    pub(super) fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    pub(super) fn exprs<'a>(&'a mut self, scope: &'a Scope) -> Exprs<'a> {
        Exprs {
            scope,
            params: &mut self.params,
        }
    }

    pub(super) fn predicate(&mut self, scope: &Scope, expr: &Expr) -> Rendered<String> {
        let sql = self.exprs(scope).boolean(expr)?;
        if sql.can_fail {
            self.failing_predicates += 1;
        }
        Ok(sql.text)
    }

    fn node(&mut self, plan: &LogicalPlan) -> Rendered<Rel> {
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::SubqueryAlias(alias) => self.node(&alias.input),
            LogicalPlan::Projection(projection) => {
                let (t, child, scope) = self.unordered_child(&projection.input)?;
                let mut columns = Vec::with_capacity(projection.expr.len());
                let mut failing = Vec::with_capacity(projection.expr.len());
                for (i, expr) in projection.expr.iter().enumerate() {
                    let sql = self.exprs(&scope).render(expr)?;
                    columns.push(format!("{} AS c{i}", sql.text));
                    failing.push(sql.can_fail);
                }
                Ok(Rel::plain(select_from(&columns, &child, &t), failing))
            }
            LogicalPlan::Filter(filter) => {
                let (t, child, scope) = self.unordered_child(&filter.input)?;
                let predicate = self.predicate(&scope, &filter.predicate)?;
                let columns = passthrough(&t, filter.input.schema(), 0);
                let select = format!("{} WHERE {predicate}", select_from(&columns, &child, &t));
                Ok(Rel::plain(select, child.failing))
            }
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            LogicalPlan::Sort(sort) => self.sort(sort),
            LogicalPlan::Limit(limit) => self.limit(limit),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                if input
                    .schema()
                    .fields()
                    .iter()
                    .any(|f| !is_ordered_alike(f.data_type()))
                {
                    return refuse("DISTINCT over a type whose equality differs");
                }
                let (t, child, _) = self.child(input)?;
                let columns = non_empty(passthrough(&t, input.schema(), 0));
                let select = format!(
                    "SELECT DISTINCT {} FROM ({}) AS {t}",
                    columns.join(", "),
                    child.sql()
                );
                Ok(Rel::plain(select, child.failing))
            }
            LogicalPlan::Union(union) => {
                if union.schema.fields().is_empty() {
                    return refuse("UNION without columns");
                }
                let mut parts = Vec::with_capacity(union.inputs.len());
                let mut failing = vec![false; union.schema.fields().len()];
                for input in &union.inputs {
                    let types_match = input
                        .schema()
                        .fields()
                        .iter()
                        .zip(union.schema.fields())
                        .all(|(a, b)| a.data_type() == b.data_type());
                    if !types_match {
                        return refuse("UNION inputs of other types");
                    }
                    let child = self.plain(input)?;
                    parts.push(format!("({})", child.sql()));
                    for (any, one) in failing
                        .iter_mut()
                        .zip(child.failing.iter().chain(std::iter::repeat(&true)))
                    {
                        *any |= *one;
                    }
                }
                Ok(Rel::plain(parts.join(" UNION ALL "), failing))
            }
            other => refuse(format!("{} is not pushed", node_name(other))),
        }
    }

    /// A child with no finishing step.
    pub(super) fn plain(&mut self, plan: &LogicalPlan) -> Rendered<Rel> {
        let rel = self.node(plan)?;
        if rel.finish.is_some() {
            return refuse("an average finished above DuckDB");
        }
        Ok(rel)
    }

    /// A child as derived table `tN`, with a scope over its columns.
    pub(super) fn child(&mut self, plan: &Arc<LogicalPlan>) -> Rendered<(String, Rel, Scope)> {
        let rel = self.plain(plan)?;
        let t = self.alias();
        let scope = Scope::derived(vec![Input {
            alias: t.clone(),
            schema: Arc::clone(plan.schema()),
            failing: rel.failing.clone(),
        }])?;
        Ok((t, rel, scope))
    }

    /// A child whose order need not survive: DuckDB does not promise to
    /// keep a derived table's ORDER BY through a projection or filter, so
    /// an ordered child ends the pushed plan there.
    pub(super) fn unordered_child(
        &mut self,
        plan: &Arc<LogicalPlan>,
    ) -> Rendered<(String, Rel, Scope)> {
        let (t, rel, scope) = self.child(plan)?;
        if rel.ordered {
            return refuse("a projection or filter over ORDER BY");
        }
        Ok((t, rel, scope))
    }

    fn sort(&mut self, sort: &Sort) -> Rendered<Rel> {
        let (t, child, scope) = self.child(&sort.input)?;
        let mut keys = Vec::with_capacity(sort.expr.len());
        for key in &sort.expr {
            if !is_ordered_alike(&scope.data_type(&key.expr)?) {
                return refuse("a sort key whose order differs");
            }
            let sql = self.exprs(&scope).render(&key.expr)?;
            keys.push(format!(
                "{} {} NULLS {}",
                sql.text,
                if key.asc { "ASC" } else { "DESC" },
                if key.nulls_first { "FIRST" } else { "LAST" }
            ));
        }
        let columns = passthrough(&t, sort.input.schema(), 0);
        let select = format!(
            "{} ORDER BY {}",
            select_from(&columns, &child, &t),
            keys.join(", ")
        );
        Ok(Rel {
            limit: sort.fetch.map(|f| (0, Some(f))),
            ordered: true,
            ..Rel::plain(select, child.failing)
        })
    }

    fn limit(&mut self, limit: &Limit) -> Rendered<Rel> {
        let (Ok(SkipType::Literal(skip)), Ok(FetchType::Literal(fetch))) =
            (limit.get_skip_type(), limit.get_fetch_type())
        else {
            return refuse("a LIMIT that is not a constant");
        };
        // DuckDB's LIMIT and OFFSET are BIGINTs.
        let too_big = |n: usize| i64::try_from(n).is_err();
        if too_big(skip) || fetch.is_some_and(too_big) {
            return refuse("a LIMIT or OFFSET past BIGINT");
        }
        let child = self.plain(&limit.input)?;
        // A limit over ORDER BY joins its SELECT (the order holds there).
        if child.ordered {
            let limited = match child.limit {
                None => (skip, fetch),
                Some((inner_skip, inner_fetch)) => {
                    let rest = inner_fetch.map(|f| f.saturating_sub(skip));
                    let fetch = match (rest, fetch) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let Some(skip) = inner_skip.checked_add(skip).filter(|s| !too_big(*s)) else {
                        return refuse("an OFFSET past BIGINT");
                    };
                    (skip, fetch)
                }
            };
            return Ok(Rel {
                limit: Some(limited),
                ..child
            });
        }
        let t = self.alias();
        let columns = passthrough(&t, limit.input.schema(), 0);
        let select = select_from(&columns, &child, &t);
        Ok(Rel {
            limit: Some((skip, fetch)),
            ..Rel::plain(select, child.failing)
        })
    }
}

/// `tN.c0 AS c<first>, …` for every column of `schema`.
pub(super) fn passthrough(t: &str, schema: &DFSchema, first: usize) -> Vec<String> {
    (0..schema.fields().len())
        .map(|i| format!("{t}.c{i} AS c{}", first + i))
        .collect()
}

/// A select list DuckDB accepts even when the node has no columns.
pub(super) fn non_empty(columns: Vec<String>) -> Vec<String> {
    if columns.is_empty() {
        vec!["NULL AS c0".into()]
    } else {
        columns
    }
}

pub(super) fn select_from(columns: &[String], child: &Rel, t: &str) -> String {
    format!(
        "SELECT {} FROM ({}) AS {t}",
        non_empty(columns.to_vec()).join(", "),
        child.sql()
    )
}

fn node_name(plan: &LogicalPlan) -> String {
    plan.display().to_string()
}

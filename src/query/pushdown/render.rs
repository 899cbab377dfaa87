//! Plan nodes as one DuckDB query.
//!
//! Every node becomes its own `SELECT … AS c0, … FROM (<child>) AS tN`:
//! columns are found by position in the child's schema, so no name a
//! query wrote (aliases, qualifiers, quoted identifiers that DuckDB would
//! match case-insensitively) reaches DuckDB, and no unparser rule can fold
//! a filter into the wrong join side. DuckDB flattens the nesting when it
//! plans.
//!
//! Leaves are replica scans. A governed table becomes a derived table that
//! applies its row filter and masks first; a predicate anywhere above it
//! that could fail is refused, so an error can never come from a hidden
//! row (DuckDB may move predicates below the derived table).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DFSchema, DFSchemaRef, NullEquality, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, FetchType, Join, JoinType, Limit, LogicalPlan, SkipType, Sort,
    TableScan, col,
};

use crate::query::governed::GovernedTable;
use crate::replica::sql_expr::{
    Exprs, Refusal, Rendered, Scope, duck_type, is_ordered_alike, refuse, uses_all_params,
};
use crate::replica::{PhysicalTable, Replica, ReplicaTable};

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
struct Rel {
    /// A SELECT (without its LIMIT).
    select: String,
    /// `(skip, fetch)` applying to `select`.
    limit: Option<(usize, Option<usize>)>,
    /// Whether `select` ends in an ORDER BY the result must keep.
    ordered: bool,
    finish: Option<Vec<Output>>,
}

impl Rel {
    fn plain(select: String) -> Self {
        Self {
            select,
            limit: None,
            ordered: false,
            finish: None,
        }
    }

    fn sql(&self) -> String {
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

/// Renders `plan` as one DuckDB query, or says why it cannot be.
pub(crate) fn render(plan: &LogicalPlan) -> Rendered<Pushed> {
    let mut renderer = Renderer::default();
    let rel = renderer.node(plan)?;
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
struct Renderer {
    params: Vec<ScalarValue>,
    aliases: usize,
    replica: Option<Arc<Replica>>,
    tables: Vec<Arc<PhysicalTable>>,
    columns: Vec<String>,
    /// A governed table with a row filter is read.
    barrier: bool,
    /// Predicates (WHERE, ON, HAVING) that can raise an error.
    failing_predicates: usize,
}

impl Renderer {
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    fn exprs<'a>(&'a mut self, scope: &'a Scope) -> Exprs<'a> {
        Exprs {
            scope,
            params: &mut self.params,
        }
    }

    fn predicate(&mut self, scope: &Scope, expr: &Expr) -> Rendered<String> {
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
                for (i, expr) in projection.expr.iter().enumerate() {
                    let sql = self.exprs(&scope).render(expr)?;
                    columns.push(format!("{} AS c{i}", sql.text));
                }
                Ok(Rel::plain(select_from(&columns, &child, &t)))
            }
            LogicalPlan::Filter(filter) => {
                let (t, child, scope) = self.unordered_child(&filter.input)?;
                let predicate = self.predicate(&scope, &filter.predicate)?;
                let columns = passthrough(&t, filter.input.schema(), 0);
                Ok(Rel::plain(format!(
                    "{} WHERE {predicate}",
                    select_from(&columns, &child, &t)
                )))
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
                let columns = passthrough(&t, input.schema(), 0);
                Ok(Rel::plain(format!(
                    "SELECT DISTINCT {} FROM ({}) AS {t}",
                    columns.join(", "),
                    child.sql()
                )))
            }
            LogicalPlan::Union(union) => {
                if union.schema.fields().is_empty() {
                    return refuse("UNION without columns");
                }
                let mut parts = Vec::with_capacity(union.inputs.len());
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
                }
                Ok(Rel::plain(parts.join(" UNION ALL ")))
            }
            other => refuse(format!("{} is not pushed", node_name(other))),
        }
    }

    /// A child with no finishing step.
    fn plain(&mut self, plan: &LogicalPlan) -> Rendered<Rel> {
        let rel = self.node(plan)?;
        if rel.finish.is_some() {
            return refuse("an average finished above DuckDB");
        }
        Ok(rel)
    }

    /// A child as derived table `tN`, with a scope over its columns.
    fn child(&mut self, plan: &Arc<LogicalPlan>) -> Rendered<(String, Rel, Scope)> {
        let rel = self.plain(plan)?;
        let t = self.alias();
        let scope = Scope::derived(vec![(t.clone(), Arc::clone(plan.schema()))])?;
        Ok((t, rel, scope))
    }

    /// A child whose order need not survive: DuckDB does not promise to
    /// keep a derived table's ORDER BY through a projection or filter, so
    /// an ordered child ends the pushed plan there.
    fn unordered_child(&mut self, plan: &Arc<LogicalPlan>) -> Rendered<(String, Rel, Scope)> {
        let (t, rel, scope) = self.child(plan)?;
        if rel.ordered {
            return refuse("a projection or filter over ORDER BY");
        }
        Ok((t, rel, scope))
    }

    fn scan(&mut self, scan: &TableScan) -> Rendered<Rel> {
        let provider = source_as_provider(&scan.source).map_err(|e| Refusal(e.to_string()))?;
        let (table, governed) = if let Some(governed) = provider.downcast_ref::<GovernedTable>() {
            (governed.inner(), Some(governed))
        } else if let Some(table) = provider.downcast_ref::<ReplicaTable>() {
            (table, None)
        } else {
            return refuse(format!("{} is not a replica table", scan.table_name));
        };
        match &self.replica {
            Some(replica) if !Arc::ptr_eq(replica, table.replica()) => {
                return refuse("tables of two replicas");
            }
            _ => self.replica = Some(Arc::clone(table.replica())),
        }
        let stored = datafusion::catalog::TableProvider::schema(table);
        let scope = Scope::table(&stored)?;
        let (visible, outputs, mut filters) = match governed {
            Some(governed) => {
                if governed.remaining_filter().is_some() {
                    return refuse("a row filter DuckDB cannot evaluate");
                }
                let policy = governed.policy();
                self.barrier |= policy.row_filter.is_some();
                let outputs: Vec<Expr> = policy
                    .outputs
                    .iter()
                    .map(|e| match e {
                        Expr::Alias(alias) => alias.expr.as_ref().clone(),
                        other => other.clone(),
                    })
                    .collect();
                (
                    Arc::clone(&policy.schema),
                    outputs,
                    governed.pushed_filter().to_vec(),
                )
            }
            None => {
                let outputs = stored
                    .fields()
                    .iter()
                    .map(|f| col(datafusion::common::Column::from_name(f.name())))
                    .collect();
                (Arc::clone(&stored), outputs, Vec::new())
            }
        };
        // The user's predicates DataFusion pushed into the scan: leakproof
        // ones for governed tables (the provider accepts only those).
        filters.extend(scan.filters.iter().cloned().map(unnormalize_col));
        let projection: Vec<usize> = match &scan.projection {
            Some(p) => p.clone(),
            None => (0..visible.fields().len()).collect(),
        };

        let mut columns = Vec::with_capacity(projection.len());
        let mut read: Vec<String> = Vec::new();
        for (i, &index) in projection.iter().enumerate() {
            let Some(output) = outputs.get(index) else {
                return refuse("projection out of range");
            };
            let sql = self.exprs(&scope).render(output)?;
            columns.push(format!("{} AS c{i}", sql.text));
            read.extend(output.column_refs().into_iter().map(|c| c.name.clone()));
        }
        if columns.is_empty() {
            // count(*) and the like: DuckDB must still produce the rows.
            columns.push("NULL AS c0".into());
        }
        let mut predicates = Vec::with_capacity(filters.len());
        for filter in &filters {
            predicates.push(self.exprs(&scope).boolean(filter)?.text);
            read.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
        }

        let physical = table.physical();
        let mut select = format!("SELECT {} FROM {}", columns.join(", "), physical.quoted());
        if !predicates.is_empty() {
            select.push_str(&format!(" WHERE {}", predicates.join(" AND ")));
        }
        for column in read {
            let name = format!("{}.{column}", physical.logical());
            if !self.columns.contains(&name) {
                self.columns.push(name);
            }
        }
        if !self.tables.iter().any(|t| Arc::ptr_eq(t, physical)) {
            self.tables.push(Arc::clone(physical));
        }
        Ok(Rel {
            limit: scan.fetch.map(|f| (0, Some(f))),
            ..Rel::plain(select)
        })
    }

    fn aggregate(&mut self, aggregate: &Aggregate) -> Rendered<Rel> {
        let (t, child, scope) = self.child(&aggregate.input)?;
        let input = aggregate.input.schema();
        // Keys DuckDB would treat as positions (`GROUP BY 1`) or group
        // differently than Arrow (floats) stay in DataFusion.
        for key in &aggregate.group_expr {
            if matches!(key, Expr::GroupingSet(_)) || key.column_refs().is_empty() {
                return refuse("grouping sets or constant keys");
            }
            if !is_ordered_alike(&scope.data_type(key)?) {
                return refuse("a group key whose equality differs");
            }
        }
        // Keys are computed once, in an inner SELECT, so that a key with
        // parameters is not written (and numbered) twice.
        let plain_keys = aggregate
            .group_expr
            .iter()
            .all(|k| matches!(k, Expr::Column(_)));
        let (from, keys) = if plain_keys {
            let mut keys = Vec::new();
            for key in &aggregate.group_expr {
                keys.push(self.exprs(&scope).render(key)?.text);
            }
            (format!("({}) AS {t}", child.sql()), keys)
        } else {
            let mut inner = passthrough(&t, input, 0);
            for (i, key) in aggregate.group_expr.iter().enumerate() {
                let sql = self.exprs(&scope).render(key)?;
                inner.push(format!("{} AS k{i}", sql.text));
            }
            let keys = (0..aggregate.group_expr.len())
                .map(|i| format!("{t}.k{i}"))
                .collect();
            (
                format!("({}) AS {t}", select_from(&inner, &child, &t)),
                keys,
            )
        };

        let mut columns: Vec<String> = Vec::new();
        let mut outputs: Vec<Output> = Vec::new();
        let mut finished = false;
        let fields = aggregate.schema.fields();
        for (i, key) in keys.iter().enumerate() {
            outputs.push(Output::Column {
                index: columns.len(),
                data_type: fields[i].data_type().clone(),
            });
            columns.push(format!("{key} AS c{}", columns.len()));
        }
        for (j, expr) in aggregate.aggr_expr.iter().enumerate() {
            let data_type = fields[keys.len() + j].data_type().clone();
            match self.aggregate_call(&scope, expr, &data_type)? {
                Call::One(sql) => {
                    outputs.push(Output::Column {
                        index: columns.len(),
                        data_type,
                    });
                    columns.push(format!("{sql} AS c{}", columns.len()));
                }
                Call::DecimalAvg {
                    sum,
                    count,
                    sum_scale,
                } => {
                    let DataType::Decimal128(precision, scale) = data_type else {
                        return refuse("decimal average of another type");
                    };
                    finished = true;
                    outputs.push(Output::DecimalAvg {
                        sum: columns.len(),
                        count: columns.len() + 1,
                        sum_scale,
                        precision,
                        scale,
                    });
                    columns.push(format!("{sum} AS c{}", columns.len()));
                    columns.push(format!("{count} AS c{}", columns.len()));
                }
            }
        }
        if columns.is_empty() {
            return refuse("an aggregate without outputs");
        }
        let mut select = format!("SELECT {} FROM {from}", columns.join(", "));
        if !keys.is_empty() {
            select.push_str(&format!(" GROUP BY {}", keys.join(", ")));
        }
        Ok(Rel {
            finish: finished.then_some(outputs),
            ..Rel::plain(select)
        })
    }

    fn aggregate_call(
        &mut self,
        scope: &Scope,
        expr: &Expr,
        data_type: &DataType,
    ) -> Rendered<Call> {
        let expr = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction {
            func,
            params:
                AggregateFunctionParams {
                    args,
                    distinct,
                    filter,
                    order_by,
                    null_treatment,
                },
        }) = expr
        else {
            return refuse("an aggregate that is not a plain call");
        };
        if filter.is_some() || !order_by.is_empty() || null_treatment.is_some() {
            return refuse("aggregate FILTER, ORDER BY or null treatment");
        }
        let [arg] = args.as_slice() else {
            return refuse("aggregate arity");
        };
        let arg_type = scope.data_type(arg)?;
        let name = func.name();
        let distinct_kw = if *distinct { "DISTINCT " } else { "" };
        let ty = duck_type(data_type)?;
        if name == "count" {
            if let Expr::Literal(value, _) = arg
                && !value.is_null()
                && !distinct
            {
                return Ok(Call::One("count(*)".into()));
            }
            if *distinct && !is_ordered_alike(&arg_type) {
                return refuse("count(DISTINCT) of a type whose equality differs");
            }
        }
        let arg = self.exprs(scope).render(arg)?.text;
        Ok(match (name, &arg_type) {
            ("count", _) => Call::One(format!("count({distinct_kw}{arg})")),
            ("sum", DataType::Decimal128(_, _)) | ("sum", DataType::Float64) => {
                Call::One(format!("CAST(sum({distinct_kw}{arg}) AS {ty})"))
            }
            // DataFusion sums integers into an Int64 that wraps on
            // overflow; DuckDB sums into a HUGEINT, wrapped here the same way.
            ("sum", t) if t.is_signed_integer() && *data_type == DataType::Int64 => {
                Call::One(format!(
                    "CAST((((sum({distinct_kw}{arg}) % {TWO_64}) + {TWO_64_PLUS_63}) % {TWO_64}) - {TWO_63} AS BIGINT)"
                ))
            }
            ("min" | "max", t) if is_ordered_alike(t) && !*distinct => {
                Call::One(format!("CAST({name}({arg}) AS {ty})"))
            }
            ("avg", DataType::Float64) => Call::One(format!("avg({distinct_kw}{arg})")),
            ("avg", DataType::Decimal128(_, s)) => Call::DecimalAvg {
                sum: format!("CAST(sum({distinct_kw}{arg}) AS DECIMAL(38,{s}))"),
                count: format!("count({distinct_kw}{arg})"),
                sum_scale: *s,
            },
            _ => return refuse(format!("aggregate {name} of {arg_type}")),
        })
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
        Ok(Rel {
            limit: sort.fetch.map(|f| (0, Some(f))),
            ordered: true,
            ..Rel::plain(format!(
                "{} ORDER BY {}",
                select_from(&columns, &child, &t),
                keys.join(", ")
            ))
        })
    }

    fn limit(&mut self, limit: &Limit) -> Rendered<Rel> {
        let (Ok(SkipType::Literal(skip)), Ok(FetchType::Literal(fetch))) =
            (limit.get_skip_type(), limit.get_fetch_type())
        else {
            return refuse("a LIMIT that is not a constant");
        };
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
                    (inner_skip + skip, fetch)
                }
            };
            return Ok(Rel {
                limit: Some(limited),
                ..child
            });
        }
        let t = self.alias();
        let columns = passthrough(&t, limit.input.schema(), 0);
        Ok(Rel {
            limit: Some((skip, fetch)),
            ..Rel::plain(select_from(&columns, &child, &t))
        })
    }

    fn join(&mut self, join: &Join) -> Rendered<Rel> {
        if join.null_aware || join.null_equality != NullEquality::NullEqualsNothing {
            return refuse("a null-aware join (NOT IN) or one matching NULLs");
        }
        let (ta, left, _) = self.child(&join.left)?;
        let (tb, right, _) = self.child(&join.right)?;
        let scope = Scope::derived(vec![
            (ta.clone(), Arc::clone(join.left.schema())),
            (tb.clone(), Arc::clone(join.right.schema())),
        ])?;
        let mut conditions = Vec::new();
        for (l, r) in &join.on {
            let t = scope.data_type(l)?;
            if t != scope.data_type(r)? || t.is_floating() || !is_ordered_alike(&t) {
                return refuse("join keys whose equality differs");
            }
            let l = self.exprs(&scope).render(l)?;
            let r = self.exprs(&scope).render(r)?;
            if l.can_fail || r.can_fail {
                self.failing_predicates += 1;
            }
            conditions.push(format!("({} = {})", l.text, r.text));
        }
        if let Some(filter) = &join.filter {
            conditions.push(self.predicate(&scope, filter)?);
        }
        let condition = if conditions.is_empty() {
            "TRUE".to_string()
        } else {
            conditions.join(" AND ")
        };
        let (l_sql, r_sql) = (left.sql(), right.sql());
        let (nl, nr) = (
            join.left.schema().fields().len(),
            join.right.schema().fields().len(),
        );
        let kind = match join.join_type {
            JoinType::Inner => "INNER",
            JoinType::Left => "LEFT",
            JoinType::Right => "RIGHT",
            JoinType::Full => "FULL",
            JoinType::LeftSemi | JoinType::LeftAnti => {
                let not = if join.join_type == JoinType::LeftAnti {
                    "NOT "
                } else {
                    ""
                };
                let columns = passthrough(&ta, join.left.schema(), 0);
                return Ok(Rel::plain(format!(
                    "SELECT {} FROM ({l_sql}) AS {ta} WHERE {not}EXISTS (SELECT 1 FROM ({r_sql}) AS {tb} WHERE {condition})",
                    non_empty(columns).join(", ")
                )));
            }
            JoinType::RightSemi | JoinType::RightAnti => {
                let not = if join.join_type == JoinType::RightAnti {
                    "NOT "
                } else {
                    ""
                };
                let columns = passthrough(&tb, join.right.schema(), 0);
                return Ok(Rel::plain(format!(
                    "SELECT {} FROM ({r_sql}) AS {tb} WHERE {not}EXISTS (SELECT 1 FROM ({l_sql}) AS {ta} WHERE {condition})",
                    non_empty(columns).join(", ")
                )));
            }
            _ => return refuse("a mark join"),
        };
        let mut columns = passthrough(&ta, join.left.schema(), 0);
        columns.extend(passthrough(&tb, join.right.schema(), nl));
        debug_assert_eq!(columns.len(), nl + nr);
        Ok(Rel::plain(format!(
            "SELECT {} FROM ({l_sql}) AS {ta} {kind} JOIN ({r_sql}) AS {tb} ON {condition}",
            non_empty(columns).join(", ")
        )))
    }
}

// Integer literals past BIGINT are HUGEINTs in DuckDB.
const TWO_64: &str = "18446744073709551616";
const TWO_63: &str = "9223372036854775808";
const TWO_64_PLUS_63: &str = "27670116110564327424";

enum Call {
    One(String),
    DecimalAvg {
        sum: String,
        count: String,
        sum_scale: i8,
    },
}

/// `tN.c0 AS c<first>, …` for every column of `schema`.
fn passthrough(t: &str, schema: &DFSchema, first: usize) -> Vec<String> {
    (0..schema.fields().len())
        .map(|i| format!("{t}.c{i} AS c{}", first + i))
        .collect()
}

/// A select list DuckDB accepts even when the node has no columns.
fn non_empty(columns: Vec<String>) -> Vec<String> {
    if columns.is_empty() {
        vec!["NULL AS c0".into()]
    } else {
        columns
    }
}

fn select_from(columns: &[String], child: &Rel, t: &str) -> String {
    format!(
        "SELECT {} FROM ({}) AS {t}",
        non_empty(columns.to_vec()).join(", "),
        child.sql()
    )
}

fn node_name(plan: &LogicalPlan) -> String {
    plan.display().to_string()
}

/// The schema of a pushed query's own columns, when DataFusion finishes
/// them (`outputs` of a root aggregate).
pub(crate) fn query_schema(outputs: &[Output]) -> Rendered<DFSchemaRef> {
    let mut fields = Vec::new();
    for output in outputs {
        match output {
            Output::Column { data_type, .. } => {
                fields.push(Field::new(
                    format!("c{}", fields.len()),
                    data_type.clone(),
                    true,
                ));
            }
            Output::DecimalAvg { sum_scale, .. } => {
                fields.push(Field::new(
                    format!("c{}", fields.len()),
                    DataType::Decimal128(38, *sum_scale),
                    true,
                ));
                fields.push(Field::new(
                    format!("c{}", fields.len()),
                    DataType::Int64,
                    true,
                ));
            }
        }
    }
    let schema = datafusion::arrow::datatypes::Schema::new(fields);
    DFSchema::try_from(schema)
        .map(Arc::new)
        .map_err(|e| Refusal(e.to_string()))
}

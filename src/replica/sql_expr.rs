//! DataFusion expressions as DuckDB SQL: a whitelist that fails closed.
//! Scan predicates ([`super::filter_sql`]) and pushed sub-plans
//! (`query::pushdown`) both render through it.
//!
//! Each accepted expression has the same value, type and NULL behaviour in
//! DuckDB as in DataFusion for every input; anything else is a
//! [`Refusal`] and the node holding it stays in DataFusion. Where DuckDB
//! would pick another result type (decimal arithmetic, `date_part`, CASE)
//! the SQL casts to DataFusion's type, which cannot change the value.
//!
//! Literals become typed parameters (`CAST($3 AS DECIMAL(15,2))`) and
//! columns become generated names (`t2.c0`) or the table's own column
//! names, so the SQL holds no text a query wrote. Keyword arguments
//! (`date_part('year', …)`) come from this file's constants.
//!
//! Kept out on purpose, because the two engines differ:
//! - integer and float arithmetic (DataFusion wraps on overflow, DuckDB
//!   raises; DuckDB raises on float overflow), division and modulo
//!   (DuckDB's integer and decimal division rules and division by zero);
//! - float comparisons between columns or with ±0.0/NaN, float grouping,
//!   sorting and DISTINCT (Arrow orders by `total_cmp`, so -0.0 < 0.0;
//!   DuckDB treats them as equal);
//! - `LIKE` patterns with `_` or `\`, `ILIKE`, case folding, and narrowing
//!   or text casts (their failure and rounding rules differ).

use chrono::DateTime;
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::format::DEFAULT_FORMAT_OPTIONS;
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::logical_expr::expr::{Case, Cast, InList, TryCast};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, ExprSchemable, Like, Operator};

pub(crate) use super::sql_values::{bind_value, duck_type};
use super::sql_values::{integer_digits, timestamp_text};
use crate::table_name::quote_ident;

/// Why an expression or plan stays in DataFusion (for the debug log).
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

pub(crate) type Rendered<T> = Result<T, Refusal>;

pub(crate) fn refuse<T>(why: impl Into<String>) -> Rendered<T> {
    Err(Refusal(why.into()))
}

/// A rendered expression.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) text: String,
    /// Whether evaluating it can raise an error (a cast, an overflow): such
    /// a predicate must never run where hidden rows could reach it.
    pub(crate) can_fail: bool,
}

impl Sql {
    fn safe(text: String) -> Self {
        Self {
            text,
            can_fail: false,
        }
    }
}

/// A derived table in scope.
pub(crate) struct Input {
    pub(crate) alias: String,
    pub(crate) schema: DFSchemaRef,
    /// Per column: computed by an expression that can fail.
    pub(crate) failing: Vec<bool>,
}

/// Where an expression's columns come from.
pub(crate) struct Scope {
    /// Each derived input: its alias, its schema (columns are named `c0,
    /// c1, …` in schema order), and which of its columns are computed by
    /// an expression that can fail. A predicate over such a column can fail
    /// too: DuckDB may substitute the expression when it moves the
    /// predicate down. Empty for a stored table.
    inputs: Vec<Input>,
    /// Or, when not empty, how each column of `typing` renders (a flat
    /// join's columns come from several derived tables).
    mapped: Vec<Sql>,
    /// All columns in reach, for typing expressions.
    typing: DFSchema,
}

impl Scope {
    /// A stored table: columns render as their own quoted names.
    pub(crate) fn table(schema: &Schema) -> Rendered<Self> {
        Ok(Self {
            inputs: Vec::new(),
            mapped: Vec::new(),
            typing: DFSchema::try_from(schema.clone()).map_err(|e| Refusal(e.to_string()))?,
        })
    }

    /// The columns of `schema`, column `i` rendering as `columns[i]`.
    pub(crate) fn mapped(schema: &DFSchema, columns: Vec<Sql>) -> Rendered<Self> {
        if columns.is_empty() || columns.len() != schema.fields().len() {
            return refuse("a column mapping that does not match its schema");
        }
        Ok(Self {
            inputs: Vec::new(),
            mapped: columns,
            typing: schema.clone(),
        })
    }

    /// Derived tables, each under its alias.
    pub(crate) fn derived(inputs: Vec<Input>) -> Rendered<Self> {
        let mut typing = DFSchema::empty();
        for input in &inputs {
            typing = typing
                .join(&input.schema)
                .map_err(|e| Refusal(e.to_string()))?;
        }
        Ok(Self {
            inputs,
            mapped: Vec::new(),
            typing,
        })
    }

    /// How `column` renders.
    pub(crate) fn column(&self, column: &Column) -> Rendered<Sql> {
        if !self.mapped.is_empty() {
            return match self.typing.maybe_index_of_column(column) {
                Some(i) => self
                    .mapped
                    .get(i)
                    .cloned()
                    .map_or_else(|| refuse(format!("no column {column}")), Ok),
                None => refuse(format!("no column {column}")),
            };
        }
        if self.inputs.is_empty() {
            return match self.typing.field_with_unqualified_name(&column.name) {
                Ok(field) => Ok(Sql::safe(quote_ident(field.name()))),
                Err(_) => refuse(format!("no column {column}")),
            };
        }
        let mut found = self.inputs.iter().filter_map(|input| {
            input.schema.maybe_index_of_column(column).map(|i| Sql {
                text: format!("{}.c{i}", input.alias),
                // Unknown lineage counts as failing.
                can_fail: input.failing.get(i).copied().unwrap_or(true),
            })
        });
        match (found.next(), found.next()) {
            (Some(sql), None) => Ok(sql),
            _ => refuse(format!("column {column} is missing or ambiguous")),
        }
    }

    pub(crate) fn data_type(&self, expr: &Expr) -> Rendered<DataType> {
        expr.get_type(&self.typing)
            .map_err(|e| Refusal(format!("typing {expr}: {e}")))
    }
}

/// Whether `sql` uses each of `count` parameters: every literal renders as
/// `CAST($k AS …)`, so a parameter missing from the text means a rendering
/// slip, and DuckDB would refuse (or misnumber) the bindings.
pub(crate) fn uses_all_params(sql: &str, count: usize) -> bool {
    (1..=count).all(|k| sql.contains(&format!("CAST(${k} AS ")))
}

/// Renders expressions in one scope, collecting parameters.
pub(crate) struct Exprs<'a> {
    pub(crate) scope: &'a Scope,
    pub(crate) params: &'a mut Vec<ScalarValue>,
}

impl Exprs<'_> {
    pub(crate) fn render(&mut self, expr: &Expr) -> Rendered<Sql> {
        match expr {
            Expr::Alias(alias) => self.render(&alias.expr),
            Expr::Column(column) => self.scope.column(column),
            Expr::Literal(value, _) => self.literal(value),
            Expr::BinaryExpr(binary) => self.binary(binary),
            Expr::Not(inner) => {
                let inner = self.boolean(inner)?;
                Ok(self.wrap(format!("(NOT {})", inner.text), &[&inner]))
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let inner = self.render(inner)?;
                let not = if matches!(expr, Expr::IsNotNull(_)) {
                    "NOT "
                } else {
                    ""
                };
                Ok(self.wrap(format!("({} IS {not}NULL)", inner.text), &[&inner]))
            }
            Expr::Between(Between {
                expr: target,
                negated,
                low,
                high,
            }) => {
                self.check_comparable(target, low)?;
                let (t, l) = self.comparable(target, low)?;
                self.check_comparable(target, high)?;
                let h = self.render(high)?;
                let not = if *negated { "NOT " } else { "" };
                Ok(self.wrap(
                    format!("({} {not}BETWEEN {} AND {})", t.text, l.text, h.text),
                    &[&t, &l, &h],
                ))
            }
            Expr::InList(InList {
                expr: target,
                list,
                negated,
            }) => {
                if list.is_empty() {
                    return refuse("empty IN list");
                }
                for item in list {
                    self.check_comparable(target, item)?;
                }
                // The target once: its literals are parameters too.
                let mut parts = Vec::with_capacity(list.len() + 1);
                parts.push(self.render(target)?);
                for item in list {
                    parts.push(self.render(item)?);
                }
                let items: Vec<&str> = parts[1..].iter().map(|s| s.text.as_str()).collect();
                let not = if *negated { "NOT " } else { "" };
                let text = format!("({} {not}IN ({}))", parts[0].text, items.join(", "));
                let refs: Vec<&Sql> = parts.iter().collect();
                Ok(self.wrap(text, &refs))
            }
            Expr::Like(like) => self.like(like),
            Expr::Cast(Cast { expr: inner, field }) => self.cast(inner, field.data_type()),
            // Masks are wrapped in a TRY_CAST to their column's type.
            // Between string types it keeps every value as it is; of a
            // constant, DataFusion's own cast gives the value (NULL when
            // it does not fit).
            Expr::TryCast(TryCast { expr: inner, field })
                if is_string(field.data_type()) && is_string(&self.scope.data_type(inner)?) =>
            {
                self.render(inner)
            }
            Expr::TryCast(TryCast { expr: inner, field }) => match inner.as_ref() {
                Expr::Literal(value, _) => {
                    // As DataFusion's TRY_CAST evaluates it (a value that
                    // does not fit is NULL; a cast it refuses is an error).
                    let target = field.data_type();
                    let options = CastOptions {
                        safe: true,
                        format_options: DEFAULT_FORMAT_OPTIONS,
                    };
                    match value.cast_to_with_options(target, &options) {
                        Ok(value) => self.literal(&value),
                        Err(_) => refuse(format!("TRY_CAST to {target}")),
                    }
                }
                _ => refuse("TRY_CAST of a non-constant"),
            },
            Expr::Case(case) => self.case(expr, case),
            Expr::ScalarFunction(function) => self.function(expr, function),
            other => refuse(format!("{} is not pushed", other.variant_name())),
        }
    }

    /// A boolean expression (a predicate).
    pub(crate) fn boolean(&mut self, expr: &Expr) -> Rendered<Sql> {
        if self.scope.data_type(expr)? != DataType::Boolean {
            return refuse(format!("{expr} is not a boolean"));
        }
        self.render(expr)
    }

    pub(super) fn wrap(&self, text: String, parts: &[&Sql]) -> Sql {
        Sql {
            text,
            can_fail: parts.iter().any(|p| p.can_fail),
        }
    }

    fn literal(&mut self, value: &ScalarValue) -> Rendered<Sql> {
        let data_type = value.data_type();
        if data_type == DataType::Null {
            return Ok(Sql::safe("NULL".into()));
        }
        let ty = duck_type(&data_type)?;
        if value.is_null() {
            return Ok(Sql::safe(format!("CAST(NULL AS {ty})")));
        }
        // A decimal literal is typed by its own digits, as DuckDB types
        // constants: `1 - price` then stays in DuckDB's 64-bit arithmetic
        // rather than DataFusion's DECIMAL(20,0) widening everything.
        let (value, ty) = match value {
            ScalarValue::Decimal128(Some(v), _, s) if *s >= 0 => {
                let digits = v.unsigned_abs().checked_ilog10().map_or(1, |d| d + 1);
                let width = u8::try_from(digits).unwrap_or(38).max(*s as u8).max(1);
                (
                    ScalarValue::Decimal128(Some(*v), width, *s),
                    format!("DECIMAL({width},{s})"),
                )
            }
            // Timestamps are bound as text we format, read back by the
            // cast: exact for every unit, and an instant (`+00`) does not
            // depend on DuckDB's session time zone.
            ScalarValue::TimestampSecond(Some(v), tz) => (
                timestamp_text(DateTime::from_timestamp(*v, 0), tz.is_some()),
                ty,
            ),
            ScalarValue::TimestampMillisecond(Some(v), tz) => (
                timestamp_text(DateTime::from_timestamp_millis(*v), tz.is_some()),
                ty,
            ),
            ScalarValue::TimestampMicrosecond(Some(v), tz) => (
                timestamp_text(DateTime::from_timestamp_micros(*v), tz.is_some()),
                ty,
            ),
            ScalarValue::TimestampNanosecond(Some(v), tz) => (
                timestamp_text(Some(DateTime::from_timestamp_nanos(*v)), tz.is_some()),
                ty,
            ),
            other => (other.clone(), ty),
        };
        if bind_value(&value).is_none() {
            return refuse(format!("a {data_type} value cannot be bound"));
        }
        self.params.push(value);
        Ok(Sql::safe(format!("CAST(${} AS {ty})", self.params.len())))
    }

    fn binary(&mut self, binary: &BinaryExpr) -> Rendered<Sql> {
        let BinaryExpr { left, op, right } = binary;
        match op {
            Operator::And | Operator::Or => {
                let l = self.boolean(left)?;
                let r = self.boolean(right)?;
                let op = if *op == Operator::And { "AND" } else { "OR" };
                Ok(self.wrap(format!("({} {op} {})", l.text, r.text), &[&l, &r]))
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                let (l, r) = self.comparable(left, right)?;
                let op = match op {
                    Operator::Eq => "=",
                    Operator::NotEq => "<>",
                    Operator::Lt => "<",
                    Operator::LtEq => "<=",
                    Operator::Gt => ">",
                    _ => ">=",
                };
                Ok(self.wrap(format!("({} {op} {})", l.text, r.text), &[&l, &r]))
            }
            Operator::Plus | Operator::Minus | Operator::Multiply => {
                let (lt, rt) = (self.scope.data_type(left)?, self.scope.data_type(right)?);
                let (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) = (&lt, &rt)
                else {
                    return refuse(format!("{op} on {lt} and {rt}"));
                };
                let (p1, s1, p2, s2) = (
                    i32::from(*p1),
                    i32::from(*s1),
                    i32::from(*p2),
                    i32::from(*s2),
                );
                if s1 < 0 || s2 < 0 {
                    return refuse("negative decimal scale");
                }
                // Digits the exact result can need: when they fit in 38,
                // neither engine can overflow.
                let digits = if *op == Operator::Multiply {
                    p1 + p2
                } else {
                    (p1 - s1).max(p2 - s2) + s1.max(s2) + 1
                };
                let l = self.render(left)?;
                let r = self.render(right)?;
                // DuckDB's result type may be narrower than DataFusion's but
                // holds the same exact value (scales agree; literals are
                // typed by their digits). A product DuckDB computes in 64
                // bits raises "Out of Range" if it outgrows them, and the
                // query is then run again without pushdown (`fallback`).
                let mut out = self.wrap(format!("({} {op} {})", l.text, r.text), &[&l, &r]);
                out.can_fail |= digits > 18;
                Ok(out)
            }
            Operator::StringConcat => {
                let (lt, rt) = (self.scope.data_type(left)?, self.scope.data_type(right)?);
                if !is_string(&lt) || !is_string(&rt) {
                    return refuse("|| on non-strings");
                }
                let l = self.render(left)?;
                let r = self.render(right)?;
                Ok(self.wrap(format!("({} || {})", l.text, r.text), &[&l, &r]))
            }
            other => refuse(format!("operator {other}")),
        }
    }

    /// Two operands compared with each other: one type, with DuckDB's
    /// order equal to Arrow's for it.
    fn comparable(&mut self, left: &Expr, right: &Expr) -> Rendered<(Sql, Sql)> {
        self.check_comparable(left, right)?;
        Ok((self.render(left)?, self.render(right)?))
    }

    /// Refuses two operands whose comparison differs between the engines.
    fn check_comparable(&self, left: &Expr, right: &Expr) -> Rendered<()> {
        let lt = self.scope.data_type(left)?;
        let rt = self.scope.data_type(right)?;
        if lt != rt {
            return refuse(format!("comparing {lt} with {rt}"));
        }
        // Never floats: Arrow orders them totally (-0.0 < 0.0, -NaN first,
        // NaN last), DuckDB by IEEE with every NaN greatest.
        if !is_ordered_alike(&lt) {
            return refuse(format!("comparing {lt}"));
        }
        Ok(())
    }

    fn like(&mut self, like: &Like) -> Rendered<Sql> {
        let Like {
            negated,
            expr,
            pattern,
            escape_char,
            case_insensitive,
        } = like;
        if escape_char.is_some() || *case_insensitive {
            return refuse("LIKE with ESCAPE or ILIKE");
        }
        if !is_string(&self.scope.data_type(expr)?) {
            return refuse("LIKE on a non-string");
        }
        // `_` is one character in DataFusion and one byte in some DuckDB
        // paths, and `\` escapes by default in one engine only.
        let safe = matches!(
            pattern.as_ref(),
            Expr::Literal(
                ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)),
                _,
            ) if !p.contains(['_', '\\', '\0'])
        );
        if !safe {
            return refuse("LIKE pattern");
        }
        let target = self.render(expr)?;
        let pattern = self.render(pattern)?;
        let not = if *negated { "NOT " } else { "" };
        Ok(self.wrap(
            format!("({} {not}LIKE {})", target.text, pattern.text),
            &[&target, &pattern],
        ))
    }

    /// Casts that cannot fail and keep every value exactly.
    fn cast(&mut self, inner: &Expr, to: &DataType) -> Rendered<Sql> {
        let from = self.scope.data_type(inner)?;
        let exact = match (&from, to) {
            (a, b) if a == b => true,
            (a, b) if is_string(a) && is_string(b) => true,
            (a, b) if a.is_integer() && b.is_integer() => integer_digits(a)
                .zip(integer_digits(b))
                .is_some_and(|(x, y)| x < y && (a.is_signed_integer() <= b.is_signed_integer())),
            (a, DataType::Float64) if a.is_integer() => true,
            (a, DataType::Decimal128(p, s)) if a.is_integer() => {
                *s >= 0 && integer_digits(a).is_some_and(|d| d <= i32::from(*p) - i32::from(*s))
            }
            (DataType::Decimal128(p1, s1), DataType::Decimal128(p2, s2)) => {
                *s1 >= 0
                    && s2 >= s1
                    && i32::from(*p2) - i32::from(*s2) >= i32::from(*p1) - i32::from(*s1)
            }
            (DataType::Date32, DataType::Timestamp(TimeUnit::Microsecond, None)) => true,
            _ => false,
        };
        if !exact {
            return refuse(format!("cast from {from} to {to}"));
        }
        let inner = self.render(inner)?;
        let ty = duck_type(to)?;
        let mut out = self.wrap(format!("CAST({} AS {ty})", inner.text), &[&inner]);
        // Exact, but DuckDB refuses dates past its timestamps' range.
        out.can_fail |= from == DataType::Date32;
        Ok(out)
    }

    fn case(&mut self, whole: &Expr, case: &Case) -> Rendered<Sql> {
        let ty = duck_type(&self.scope.data_type(whole)?)?;
        let mut parts = Vec::new();
        let mut text = String::from("CASE");
        if let Some(operand) = &case.expr {
            let t = self.scope.data_type(operand)?;
            if t.is_floating() || !is_ordered_alike(&t) {
                return refuse("CASE operand type");
            }
            let operand = self.render(operand)?;
            text.push(' ');
            text.push_str(&operand.text);
            parts.push(operand);
        }
        for (when, then) in &case.when_then_expr {
            let when = if case.expr.is_some() {
                self.render(when)?
            } else {
                self.boolean(when)?
            };
            let then = self.render(then)?;
            text.push_str(&format!(" WHEN {} THEN {}", when.text, then.text));
            parts.push(when);
            parts.push(then);
        }
        if let Some(other) = &case.else_expr {
            let other = self.render(other)?;
            text.push_str(&format!(" ELSE {}", other.text));
            parts.push(other);
        }
        let refs: Vec<&Sql> = parts.iter().collect();
        Ok(self.wrap(format!("CAST({text} END AS {ty})"), &refs))
    }
}

pub(crate) fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Types whose `<`, `=` and sort order are the same in both engines
/// (strings compare as bytes in both).
pub(crate) fn is_ordered_alike(data_type: &DataType) -> bool {
    data_type.is_integer()
        || is_string(data_type)
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Decimal128(_, _)
                | DataType::Date32
                | DataType::Timestamp(_, None)
                | DataType::Timestamp(TimeUnit::Microsecond, Some(_))
        )
}

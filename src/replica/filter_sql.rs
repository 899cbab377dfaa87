//! Translating DataFusion filter expressions into DuckDB SQL for pushdown.
//!
//! Only a small, boring subset is translated: column references, typed
//! literals, comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `IN` lists,
//! `BETWEEN` and simple `LIKE` patterns — shapes whose meaning is the same
//! in DuckDB and DataFusion for every input. Everything else returns `None`
//! and DataFusion evaluates it after the scan, so a gap here costs speed,
//! never correctness. The SQL is built from DataFusion's typed expression
//! tree; no text from the query is copied into it except through
//! [`sql_literal`], which renders values, never syntax.
//!
//! Known semantic traps kept out on purpose:
//! - float comparisons with ±0.0 or NaN literals (Arrow orders with
//!   `total_cmp`, so `-0.0 < 0.0`; DuckDB follows IEEE, where they are equal);
//! - `LIKE` with `_` or `\` (character vs byte matching and escape
//!   defaults differ), and `ILIKE` (case folding beyond ASCII differs);
//! - casts and arithmetic (overflow and division rules differ).

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, DecimalType, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator, expr::InList};

use crate::table_name::quote_ident;

/// The DuckDB SQL for a filter over a table with `schema`, or `None` if the
/// filter is outside the translatable subset.
pub fn filter_to_sql(expr: &Expr, schema: &Schema) -> Option<String> {
    Translator { schema }.boolean(expr)
}

struct Translator<'a> {
    schema: &'a Schema,
}

/// A translated operand and its Arrow type.
struct Operand {
    sql: String,
    data_type: DataType,
    /// A float literal that is ±0.0 or NaN.
    unsafe_float: bool,
}

impl Translator<'_> {
    fn boolean(&self, expr: &Expr) -> Option<String> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And | Operator::Or => {
                    let l = self.boolean(left)?;
                    let r = self.boolean(right)?;
                    let op = if *op == Operator::And { "AND" } else { "OR" };
                    Some(format!("({l} {op} {r})"))
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
                    Some(format!("({l} {op} {r})"))
                }
                _ => None,
            },
            Expr::Not(inner) => Some(format!("(NOT {})", self.boolean(inner)?)),
            Expr::IsNull(inner) => Some(format!("({} IS NULL)", self.operand(inner)?.sql)),
            Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", self.operand(inner)?.sql)),
            Expr::Column(_) => {
                let column = self.operand(expr)?;
                (column.data_type == DataType::Boolean).then_some(column.sql)
            }
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                if list.is_empty() {
                    return None;
                }
                let target = self.operand(expr)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let item = self.operand(item)?;
                    if item.data_type != target.data_type || item.unsafe_float {
                        return None;
                    }
                    items.push(item.sql);
                }
                let not = if *negated { "NOT " } else { "" };
                Some(format!("({} {not}IN ({}))", target.sql, items.join(", ")))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let (e, l) = self.comparable(expr, low)?;
                let (_, h) = self.comparable(expr, high)?;
                let not = if *negated { "NOT " } else { "" };
                Some(format!("({e} {not}BETWEEN {l} AND {h})"))
            }
            Expr::Like(Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                case_insensitive: false,
            }) => {
                let target = self.operand(expr)?;
                if !is_string(&target.data_type) || !matches!(**expr, Expr::Column(_)) {
                    return None;
                }
                let pattern = match pattern.as_ref() {
                    Expr::Literal(value, _) => string_value(value)?,
                    _ => return None,
                };
                if pattern.contains('_') || pattern.contains('\\') {
                    return None;
                }
                let not = if *negated { "NOT " } else { "" };
                Some(format!(
                    "({} {not}LIKE {})",
                    target.sql,
                    quote_string(pattern)?
                ))
            }
            _ => None,
        }
    }

    /// Two operands of the same type, neither an unsafe float literal, and
    /// not two float columns (either could hold -0.0 or NaN).
    fn comparable(&self, left: &Expr, right: &Expr) -> Option<(String, String)> {
        let l = self.operand(left)?;
        let r = self.operand(right)?;
        let both_columns = matches!((left, right), (Expr::Column(_), Expr::Column(_)));
        if l.data_type != r.data_type
            || l.unsafe_float
            || r.unsafe_float
            || (both_columns && l.data_type.is_floating())
        {
            return None;
        }
        Some((l.sql, r.sql))
    }

    fn operand(&self, expr: &Expr) -> Option<Operand> {
        match expr {
            Expr::Column(column) => {
                let field = self.schema.field_with_name(&column.name).ok()?;
                Some(Operand {
                    sql: quote_ident(field.name()),
                    data_type: field.data_type().clone(),
                    unsafe_float: false,
                })
            }
            Expr::Literal(value, _) => {
                let sql = sql_literal(value)?;
                let unsafe_float = match value {
                    ScalarValue::Float32(Some(v)) => *v == 0.0 || v.is_nan(),
                    ScalarValue::Float64(Some(v)) => *v == 0.0 || v.is_nan(),
                    _ => false,
                };
                Some(Operand {
                    sql,
                    data_type: value.data_type(),
                    unsafe_float,
                })
            }
            _ => None,
        }
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn string_value(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        _ => None,
    }
}

fn quote_string(value: &str) -> Option<String> {
    // DuckDB strings cannot hold NUL; such a literal is left to DataFusion.
    if value.contains('\0') {
        return None;
    }
    Some(format!("'{}'", value.replace('\'', "''")))
}

/// Renders a non-null value as a DuckDB literal of the matching type:
/// `CAST('<text>' AS <TYPE>)`, so the type is explicit and no value can be
/// read as syntax. `None` for nulls and types outside the subset.
pub(crate) fn sql_literal(value: &ScalarValue) -> Option<String> {
    let cast = |text: String, ty: &str| Some(format!("CAST('{text}' AS {ty})"));
    match value {
        ScalarValue::Boolean(Some(b)) => Some(if *b { "TRUE" } else { "FALSE" }.to_string()),
        ScalarValue::Int8(Some(v)) => cast(v.to_string(), "TINYINT"),
        ScalarValue::Int16(Some(v)) => cast(v.to_string(), "SMALLINT"),
        ScalarValue::Int32(Some(v)) => cast(v.to_string(), "INTEGER"),
        ScalarValue::Int64(Some(v)) => cast(v.to_string(), "BIGINT"),
        ScalarValue::UInt8(Some(v)) => cast(v.to_string(), "UTINYINT"),
        ScalarValue::UInt16(Some(v)) => cast(v.to_string(), "USMALLINT"),
        ScalarValue::UInt32(Some(v)) => cast(v.to_string(), "UINTEGER"),
        ScalarValue::UInt64(Some(v)) => cast(v.to_string(), "UBIGINT"),
        ScalarValue::Float32(Some(v)) => cast(float_text(f64::from(*v)), "FLOAT"),
        ScalarValue::Float64(Some(v)) => cast(float_text(*v), "DOUBLE"),
        ScalarValue::Decimal128(Some(v), p, s) if *s >= 0 => cast(
            Decimal128Type::format_decimal(*v, *p, *s),
            &format!("DECIMAL({p},{s})"),
        ),
        ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Utf8View(_) => {
            quote_string(string_value(value)?)
        }
        ScalarValue::Date32(Some(days)) => {
            let date = NaiveDate::from_num_days_from_ce_opt(719_163_i32.checked_add(*days)?)?;
            cast(date.format("%Y-%m-%d").to_string(), "DATE")
        }
        ScalarValue::TimestampSecond(Some(v), tz) => timestamp(*v, TimeUnit::Second, tz.is_some()),
        ScalarValue::TimestampMillisecond(Some(v), tz) => {
            timestamp(*v, TimeUnit::Millisecond, tz.is_some())
        }
        ScalarValue::TimestampMicrosecond(Some(v), tz) => {
            timestamp(*v, TimeUnit::Microsecond, tz.is_some())
        }
        ScalarValue::TimestampNanosecond(Some(v), tz) => {
            timestamp(*v, TimeUnit::Nanosecond, tz.is_some())
        }
        _ => None,
    }
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // Rust prints the shortest text that parses back to the same float.
        format!("{v:?}")
    }
}

/// A timestamp literal. With a time zone the value is a UTC instant and
/// becomes `TIMESTAMPTZ` (DuckDB stores those as UTC instants too).
fn timestamp(value: i64, unit: TimeUnit, with_tz: bool) -> Option<String> {
    let (datetime, ty) = match unit {
        TimeUnit::Second => (DateTime::from_timestamp(value, 0)?, "TIMESTAMP_S"),
        TimeUnit::Millisecond => (DateTime::from_timestamp_millis(value)?, "TIMESTAMP_MS"),
        TimeUnit::Microsecond => (DateTime::from_timestamp_micros(value)?, "TIMESTAMP"),
        TimeUnit::Nanosecond => (DateTime::from_timestamp_nanos(value), "TIMESTAMP_NS"),
    };
    let text = datetime
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.9f")
        .to_string();
    if with_tz {
        Some(format!("CAST('{text}+00' AS TIMESTAMPTZ)"))
    } else {
        Some(format!("CAST('{text}' AS {ty})"))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use datafusion::arrow::datatypes::Field;
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::{ExprSchemable, col, lit};

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("score", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ])
    }

    fn sql(expr: Expr) -> Option<String> {
        filter_to_sql(&expr, &schema())
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(
            sql(col("id").gt(lit(5i64)).and(col("name").eq(lit("x")))).unwrap(),
            "((\"id\" > CAST('5' AS BIGINT)) AND (\"name\" = 'x'))"
        );
        assert_eq!(
            sql(col("flag").not().or(col("id").is_null())).unwrap(),
            "((NOT \"flag\") OR (\"id\" IS NULL))"
        );
        assert_eq!(
            sql(col("id").in_list(vec![lit(1i64), lit(2i64)], true)).unwrap(),
            "(\"id\" NOT IN (CAST('1' AS BIGINT), CAST('2' AS BIGINT)))"
        );
        assert_eq!(
            sql(col("price").between(
                lit(ScalarValue::Decimal128(Some(500), 15, 2)),
                lit(ScalarValue::Decimal128(Some(70000), 15, 2))
            ))
            .unwrap(),
            "(\"price\" BETWEEN CAST('5.00' AS DECIMAL(15,2)) AND CAST('700.00' AS DECIMAL(15,2)))"
        );
    }

    #[test]
    fn literals_cannot_become_syntax() {
        assert_eq!(
            sql(col("name").eq(lit("x' OR 1=1 --"))).unwrap(),
            "(\"name\" = 'x'' OR 1=1 --')"
        );
        assert_eq!(sql(col("name").eq(lit("a\0b"))), None);
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(
            sql(col("day").gt_eq(lit(ScalarValue::Date32(Some(10957))))).unwrap(),
            "(\"day\" >= CAST('2000-01-01' AS DATE))"
        );
        assert_eq!(
            sql(col("ts").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(1_500_000),
                None
            ))))
            .unwrap(),
            "(\"ts\" < CAST('1970-01-01 00:00:01.500000000' AS TIMESTAMP))"
        );
    }

    #[test]
    fn untranslatable_shapes_stay_in_datafusion() {
        // Type mismatch (DataFusion would have coerced with a cast).
        assert_eq!(sql(col("id").eq(lit(5i32))), None);
        // Arithmetic and casts.
        assert_eq!(sql((col("id") + lit(1i64)).eq(lit(5i64))), None);
        let df_schema = DFSchema::try_from(schema()).unwrap();
        assert_eq!(
            sql(col("id")
                .cast_to(&DataType::Utf8, &df_schema)
                .unwrap()
                .eq(lit("5"))),
            None
        );
        // Float traps.
        assert_eq!(sql(col("score").eq(col("score"))), None);
        assert!(sql(col("id").eq(col("id"))).is_some());
        assert_eq!(sql(col("score").lt(lit(0.0f64))), None);
        assert_eq!(sql(col("score").lt(lit(-0.0f64))), None);
        assert_eq!(sql(col("score").eq(lit(f64::NAN))), None);
        assert!(sql(col("score").lt(lit(1.5f64))).is_some());
        // LIKE with '_' or an escape, and ILIKE.
        assert!(sql(col("name").like(lit("ab%"))).is_some());
        assert_eq!(sql(col("name").like(lit("a_b"))), None);
        assert_eq!(sql(col("name").ilike(lit("ab%"))), None);
        // Unknown columns.
        assert_eq!(sql(col("nope").eq(lit(1i64))), None);
        // Non-boolean column as a predicate.
        assert_eq!(sql(col("id")), None);
    }
}

//! Scan predicates as DuckDB SQL: the predicates a table scan may hand
//! to DuckDB, rendered by [`sql_expr`](super::sql_expr) with literals as
//! bound parameters.
//!
//! A predicate is pushed into a scan only if it renders exactly and cannot
//! raise an error (no cast that narrows, no arithmetic that can overflow):
//! a scan's predicates run beside a governed table's row filter, where a
//! failing one could report on rows the caller may not see. Everything else
//! stays in DataFusion above the scan, so a gap here costs speed, never
//! correctness.

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;

use super::sql_expr::{Exprs, Scope};

/// The DuckDB SQL for a predicate over a table with `schema`, its literals
/// appended to `params` (as `$n` for the n-th parameter); `None` if the
/// predicate cannot be pushed (then `params` is unchanged).
pub fn filter_sql(expr: &Expr, schema: &Schema, params: &mut Vec<ScalarValue>) -> Option<String> {
    let scope = Scope::table(schema).ok()?;
    let mut rendered = params.clone();
    let sql = Exprs {
        scope: &scope,
        params: &mut rendered,
    }
    .boolean(&unnormalize_col(expr.clone()))
    .ok()?;
    if sql.can_fail {
        return None;
    }
    *params = rendered;
    Some(sql.text)
}

/// Whether [`filter_sql`] pushes `expr`.
pub fn is_pushable_filter(expr: &Expr, schema: &Schema) -> bool {
    filter_sql(expr, schema, &mut Vec::new()).is_some()
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
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
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ])
    }

    fn sql(expr: Expr) -> Option<String> {
        filter_sql(&expr, &schema(), &mut Vec::new())
    }

    fn with_params(expr: Expr) -> (String, Vec<ScalarValue>) {
        let mut params = Vec::new();
        let sql = filter_sql(&expr, &schema(), &mut params).unwrap();
        (sql, params)
    }

    #[test]
    fn comparisons_and_logic() {
        assert_eq!(
            with_params(col("id").gt(lit(5i64)).and(col("name").eq(lit("x")))),
            (
                r#"(("id" > CAST($1 AS BIGINT)) AND ("name" = CAST($2 AS VARCHAR)))"#.into(),
                vec![ScalarValue::Int64(Some(5)), ScalarValue::from("x")]
            )
        );
        assert_eq!(
            sql(col("flag").not().or(col("id").is_null())).unwrap(),
            r#"((NOT "flag") OR ("id" IS NULL))"#
        );
        assert_eq!(
            sql(col("id").in_list(vec![lit(1i64), lit(2i64)], true)).unwrap(),
            r#"("id" NOT IN (CAST($1 AS BIGINT), CAST($2 AS BIGINT)))"#
        );
        // Decimal literals are typed by their digits.
        assert_eq!(
            with_params(col("price").between(
                lit(ScalarValue::Decimal128(Some(500), 15, 2)),
                lit(ScalarValue::Decimal128(Some(70000), 15, 2))
            )),
            (
                r#"("price" BETWEEN CAST($1 AS DECIMAL(3,2)) AND CAST($2 AS DECIMAL(5,2)))"#.into(),
                vec![
                    ScalarValue::Decimal128(Some(500), 3, 2),
                    ScalarValue::Decimal128(Some(70000), 5, 2)
                ]
            )
        );
    }

    #[test]
    fn literals_are_parameters_never_syntax() {
        let (text, params) = with_params(col("name").eq(lit("x' OR 1=1 --")));
        assert_eq!(text, r#"("name" = CAST($1 AS VARCHAR))"#);
        assert_eq!(params, vec![ScalarValue::from("x' OR 1=1 --")]);
        // DuckDB strings cannot hold NUL.
        assert_eq!(sql(col("name").eq(lit("a\0b"))), None);
        // Numbering continues after the parameters already taken.
        let mut params = vec![ScalarValue::Int64(Some(1))];
        let text = filter_sql(&col("id").eq(lit(7i64)), &schema(), &mut params).unwrap();
        assert_eq!(text, r#"("id" = CAST($2 AS BIGINT))"#);
        // A refused filter leaves the parameters alone.
        assert_eq!(
            filter_sql(&col("score").eq(lit(0.0)), &schema(), &mut params),
            None
        );
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn an_expression_compared_several_times_binds_its_literals_once() {
        let prefix = datafusion::functions::expr_fn::substring(col("name"), lit(1i64), lit(2i64));
        // DataFusion's substr of Utf8 is a Utf8View.
        let view = |v: &str| lit(ScalarValue::Utf8View(Some(v.into())));
        let (text, params) =
            with_params(prefix.clone().in_list(vec![view("ab"), view("cd")], false));
        assert_eq!(params.len(), 4, "{text}");
        assert!(
            crate::replica::sql_expr::uses_all_params(&text, 4),
            "{text}"
        );
        let (text, params) = with_params(prefix.between(view("aa"), view("zz")));
        assert_eq!(params.len(), 4, "{text}");
        assert!(
            crate::replica::sql_expr::uses_all_params(&text, 4),
            "{text}"
        );
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(
            with_params(col("day").gt_eq(lit(ScalarValue::Date32(Some(10957))))),
            (
                r#"("day" >= CAST($1 AS DATE))"#.into(),
                vec![ScalarValue::Date32(Some(10957))]
            )
        );
        assert_eq!(
            with_params(col("ts").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(1_500_000),
                None
            )))),
            (
                r#"("ts" < CAST($1 AS TIMESTAMP))"#.into(),
                vec![ScalarValue::from("1970-01-01 00:00:01.500000000")]
            )
        );
        // An instant is bound with its offset, whatever DuckDB's time zone.
        assert_eq!(
            with_params(col("at").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(1_500_000),
                Some("UTC".into())
            )))),
            (
                r#"("at" < CAST($1 AS TIMESTAMPTZ))"#.into(),
                vec![ScalarValue::from("1970-01-01 00:00:01.500000000+00")]
            )
        );
    }

    #[test]
    fn shapes_that_differ_or_can_fail_stay_in_datafusion() {
        // Type mismatch (DataFusion would have coerced with a cast).
        assert_eq!(sql(col("id").eq(lit(5i32))), None);
        // Integer arithmetic (DataFusion wraps, DuckDB raises) and text casts.
        assert_eq!(sql((col("id") + lit(1i64)).eq(lit(5i64))), None);
        let df_schema = DFSchema::try_from(schema()).unwrap();
        assert_eq!(
            sql(col("id")
                .cast_to(&DataType::Utf8, &df_schema)
                .unwrap()
                .eq(lit("5"))),
            None
        );
        // A decimal product that can outgrow DuckDB's 64 bits can fail.
        let product = col("price") * col("price");
        assert_eq!(
            sql(product.gt(lit(ScalarValue::Decimal128(Some(1), 31, 4)))),
            None
        );
        // Floats compare differently (-0.0, NaN and -NaN): never pushed.
        assert_eq!(sql(col("score").eq(col("score"))), None);
        assert!(sql(col("id").eq(col("id"))).is_some());
        assert_eq!(sql(col("score").lt(lit(0.0f64))), None);
        assert_eq!(sql(col("score").eq(lit(f64::NAN))), None);
        assert_eq!(sql(col("score").lt(lit(1.5f64))), None);
        // Timestamps past year 9999 do not bind.
        assert_eq!(
            sql(col("ts").lt(lit(ScalarValue::TimestampMicrosecond(
                Some(253_402_300_800_000_000),
                None
            )))),
            None
        );
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

//! Scalar functions DuckDB evaluates exactly as DataFusion does: each
//! arm names the argument shapes on which the two engines agree and
//! refuses the rest.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::ScalarFunction;

use super::sql_expr::{Exprs, Rendered, Sql, duck_type, is_string, refuse};

impl Exprs<'_> {
    pub(super) fn function(&mut self, whole: &Expr, function: &ScalarFunction) -> Rendered<Sql> {
        let args = &function.args;
        let ty = duck_type(&self.scope.data_type(whole)?)?;
        match function.name() {
            "date_part" => {
                let [part, value] = args.as_slice() else {
                    return refuse("date_part arity");
                };
                // Parts whose numbering is the same in both engines.
                let part = match part {
                    Expr::Literal(v, _) => {
                        match v.try_as_str().flatten().map(str::to_ascii_lowercase) {
                            Some(p) if p == "year" => "year",
                            Some(p) if p == "month" => "month",
                            Some(p) if p == "day" => "day",
                            _ => return refuse("date_part part"),
                        }
                    }
                    _ => return refuse("date_part part"),
                };
                if !matches!(
                    self.scope.data_type(value)?,
                    DataType::Date32 | DataType::Timestamp(_, None)
                ) {
                    return refuse("date_part argument type");
                }
                let value = self.render(value)?;
                Ok(self.wrap(
                    format!("CAST(date_part('{part}', {}) AS {ty})", value.text),
                    &[&value],
                ))
            }
            "substr" => {
                // Positive start and non-negative length: both engines count
                // characters from 1 and clip at the end.
                // DuckDB refuses positions past 32 bits; DataFusion takes them.
                let positive = |e: &Expr, min: i64| {
                    matches!(e, Expr::Literal(ScalarValue::Int64(Some(n)), _)
                        if *n >= min && *n <= i64::from(i32::MAX))
                };
                let (value, rest) = match args.as_slice() {
                    [v, start] if positive(start, 1) => (v, vec![start]),
                    [v, start, len] if positive(start, 1) && positive(len, 0) => {
                        (v, vec![start, len])
                    }
                    _ => return refuse("substr arguments"),
                };
                if !is_string(&self.scope.data_type(value)?) {
                    return refuse("substr of a non-string");
                }
                let value = self.render(value)?;
                let mut parts = vec![value];
                for arg in rest {
                    parts.push(self.render(arg)?);
                }
                let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
                let refs: Vec<&Sql> = parts.iter().collect();
                Ok(self.wrap(
                    format!("CAST(substring({}) AS {ty})", texts.join(", ")),
                    &refs,
                ))
            }
            "left" => {
                // A count from 0 to 2^31 - 1: both engines take that many
                // characters from the start (they differ on negative ones).
                let [value, Expr::Literal(ScalarValue::Int64(Some(n)), _)] = args.as_slice() else {
                    return refuse("left arguments");
                };
                if *n < 0 || *n > i64::from(i32::MAX) || !is_string(&self.scope.data_type(value)?) {
                    return refuse("left arguments");
                }
                let value = self.render(value)?;
                let count = self.render(&args[1])?;
                Ok(self.wrap(
                    format!("CAST(substring({}, 1, {}) AS {ty})", value.text, count.text),
                    &[&value, &count],
                ))
            }
            "coalesce" => {
                let first = args.first().map(|a| self.scope.data_type(a)).transpose()?;
                let mut parts = Vec::with_capacity(args.len());
                for arg in args {
                    if Some(self.scope.data_type(arg)?) != first {
                        return refuse("coalesce of mixed types");
                    }
                    parts.push(self.render(arg)?);
                }
                if parts.is_empty() {
                    return refuse("coalesce()");
                }
                let texts: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
                let refs: Vec<&Sql> = parts.iter().collect();
                Ok(self.wrap(format!("coalesce({})", texts.join(", ")), &refs))
            }
            name => refuse(format!("function {name}")),
        }
    }
}

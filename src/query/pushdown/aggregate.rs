//! Aggregates of a pushed plan: keys and calls, and what DataFusion
//! finishes above DuckDB (decimal averages).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{Aggregate, Expr};

use super::render::{Output, Rel, Renderer, passthrough, select_from};
use crate::replica::sql_expr::{Refusal, Rendered, Scope, duck_type, is_ordered_alike, refuse};

impl Renderer {
    pub(super) fn aggregate(&mut self, aggregate: &Aggregate) -> Rendered<Rel> {
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
        // A key computed by an expression that can fail makes a HAVING on
        // it fail too (DuckDB moves such a filter below the aggregate).
        let mut failing = Vec::new();
        let (from, keys) = if plain_keys {
            let mut keys = Vec::new();
            for key in &aggregate.group_expr {
                let sql = self.exprs(&scope).render(key)?;
                failing.push(sql.can_fail);
                keys.push(sql.text);
            }
            (format!("({}) AS {t}", child.sql()), keys)
        } else {
            let mut inner = passthrough(&t, input, 0);
            for (i, key) in aggregate.group_expr.iter().enumerate() {
                let sql = self.exprs(&scope).render(key)?;
                failing.push(sql.can_fail);
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
        // Aggregate results are computed from rows the derived tables
        // emitted; no filter moves below them.
        failing.resize(columns.len(), false);
        Ok(Rel {
            finish: finished.then_some(outputs),
            ..Rel::plain(select, failing)
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
        // Arrow tells -0.0 from 0.0 (and orders NaNs) where DuckDB does not.
        if *distinct && !is_ordered_alike(&arg_type) {
            return refuse(format!("{name}(DISTINCT) of {arg_type}"));
        }
        if name == "count"
            && let Expr::Literal(value, _) = arg
            && !value.is_null()
            && !distinct
        {
            return Ok(Call::One("count(*)".into()));
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

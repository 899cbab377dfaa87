//! Finishing a decimal average above DuckDB, bit for bit as DataFusion.
//!
//! DuckDB's `avg(DECIMAL)` is a DOUBLE; DataFusion's is a decimal four
//! digits finer, truncated. So DuckDB computes `sum` and `count` and this
//! function divides them with DataFusion's own [`DecimalAverager`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Int64Type};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_functions_aggregate_common::utils::DecimalAverager;

/// `avg` of a `DECIMAL(38, sum_scale)` sum and an Int64 count, as
/// `Decimal128(precision, scale)`; NULL when the count is zero.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct DecimalAvg {
    signature: Signature,
    sum_scale: i8,
    precision: u8,
    scale: i8,
}

impl DecimalAvg {
    pub(crate) fn udf(sum_scale: i8, precision: u8, scale: i8) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::from(Self {
            signature: Signature::any(2, Volatility::Immutable),
            sum_scale,
            precision,
            scale,
        }))
    }
}

impl ScalarUDFImpl for DecimalAvg {
    fn name(&self) -> &str {
        "__airlock_decimal_avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Decimal128(self.precision, self.scale))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let [sum, count] = args.args.as_slice() else {
            return exec_err!("{} takes a sum and a count", self.name());
        };
        let (sum, count) = (sum.to_array(rows)?, count.to_array(rows)?);
        let (Some(sum), Some(count)) = (
            sum.as_primitive_opt::<Decimal128Type>(),
            count.as_primitive_opt::<Int64Type>(),
        ) else {
            return exec_err!("{} takes a decimal sum and an Int64 count", self.name());
        };
        let averager =
            DecimalAverager::<Decimal128Type>::try_new(self.sum_scale, self.precision, self.scale)?;
        let mut out = Decimal128Builder::with_capacity(rows);
        for i in 0..rows {
            if sum.is_null(i) || count.is_null(i) || count.value(i) == 0 {
                out.append_null();
            } else {
                out.append_value(averager.avg(sum.value(i), i128::from(count.value(i)))?);
            }
        }
        let array: ArrayRef = Arc::new(
            out.finish()
                .with_precision_and_scale(self.precision, self.scale)?,
        );
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Decimal128Array, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::config::ConfigOptions;

    use super::*;

    #[test]
    fn averages_truncate_like_datafusion() {
        // sum 10.00 over 3 rows at scale 2, to scale 6: 3.333333 (truncated);
        // -10.00 / 3 truncates toward zero; a zero count is NULL.
        let udf = DecimalAvg::udf(2, 19, 6);
        let sum = Decimal128Array::from(vec![Some(1000), Some(-1000), Some(5), None])
            .with_precision_and_scale(38, 2)
            .unwrap();
        let count = Int64Array::from(vec![3, 3, 0, 1]);
        let result = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::new(sum)),
                    ColumnarValue::Array(Arc::new(count)),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("s", DataType::Decimal128(38, 2), true)),
                    Arc::new(Field::new("c", DataType::Int64, true)),
                ],
                number_rows: 4,
                return_field: Arc::new(Field::new("a", DataType::Decimal128(19, 6), true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .to_array(4)
            .unwrap();
        let result = result.as_primitive::<Decimal128Type>();
        assert_eq!(result.value(0), 3_333_333);
        assert_eq!(result.value(1), -3_333_333);
        assert!(result.is_null(2));
        assert!(result.is_null(3));
    }
}

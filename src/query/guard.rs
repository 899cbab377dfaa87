//! Guards against queries that build enormous values.
//!
//! Memory for joins, sorts and aggregates is accounted by DataFusion's
//! memory pool, and time by the query deadline; but some functions allocate
//! straight from their arguments — `repeat('x', 1e12)`, `lpad(s, 1e12)`,
//! `range(1e12)` — and a chain of CTEs can double a string at each step.
//! Either would exhaust the process's memory long before a time limit.
//!
//! - [`capped_functions`] wraps the functions whose output size is their
//!   argument: they refuse a batch whose output would pass a cap, before
//!   allocating it.
//! - [`BatchGuard`] puts a check above every operator that computes new
//!   values or multiplies rows: a batch larger than the cap ends the query.
//!   Values can at most double per step, so no allocation gets far past
//!   the cap. The check is also a yield point: a join emits many batches
//!   per input batch without touching a Tokio resource, so an aggregate
//!   over a cross join would otherwise never return to the scheduler, and
//!   neither the deadline nor a cancel could stop it (it held a query
//!   thread forever).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// Most bytes (or list elements) one call of a capped function may
/// produce for one batch.
const MAX_GENERATED: u64 = 64 * 1024 * 1024;

/// What a capped function's output size is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rule {
    /// `repeat(s, n)`: Σ len(s)·n bytes.
    Repeat,
    /// `lpad(s, n, …)`, `rpad(s, n, …)`: Σ n characters (up to 4 bytes each).
    Pad,
    /// `array_repeat(x, n)`, `array_resize(a, n, …)`: Σ n elements.
    Count,
    /// `range(…)`, `generate_series(…)` over integers: Σ (stop − start) / step.
    Range,
}

const CAPPED: &[(&str, Rule)] = &[
    ("repeat", Rule::Repeat),
    ("lpad", Rule::Pad),
    ("rpad", Rule::Pad),
    ("array_repeat", Rule::Count),
    ("array_resize", Rule::Count),
    ("range", Rule::Range),
    ("generate_series", Rule::Range),
];

/// The registered functions of `state` that need a cap, wrapped.
pub(crate) fn capped_functions(state: &SessionState) -> Vec<Arc<ScalarUDF>> {
    CAPPED
        .iter()
        .filter_map(|(name, rule)| {
            let inner = state.scalar_functions().get(*name)?;
            Some(Arc::new(ScalarUDF::new_from_impl(Capped {
                inner: Arc::clone(inner),
                rule: *rule,
            })))
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Capped {
    inner: Arc<ScalarUDF>,
    rule: Rule,
}

fn too_big(name: &str, size: u64) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{name} would produce about {size} bytes or elements in one batch, over the limit of {MAX_GENERATED}"
    ))
}

impl Capped {
    fn check(&self, args: &ScalarFunctionArgs) -> DfResult<()> {
        let rows = args.number_rows.max(1);
        let name = self.inner.name();
        let size = match self.rule {
            Rule::Repeat => {
                let lengths = string_lengths(args.args.first(), rows);
                let counts = ints(args.args.get(1), rows);
                lengths
                    .iter()
                    .zip(&counts)
                    .map(|(l, n)| (*l as u64).saturating_mul((*n).max(0) as u64))
                    .fold(0u64, u64::saturating_add)
            }
            Rule::Pad => ints(args.args.get(1), rows)
                .iter()
                .map(|n| ((*n).max(0) as u64).saturating_mul(4))
                .fold(0u64, u64::saturating_add),
            Rule::Count => ints(args.args.get(1), rows)
                .iter()
                .map(|n| (*n).max(0) as u64)
                .fold(0u64, u64::saturating_add),
            Rule::Range => self.range_size(args, rows)?,
        };
        if size > MAX_GENERATED {
            return Err(too_big(name, size));
        }
        Ok(())
    }

    fn range_size(&self, args: &ScalarFunctionArgs, rows: usize) -> DfResult<u64> {
        if args
            .args
            .iter()
            .any(|a| !matches!(a.data_type(), DataType::Int64 | DataType::Null))
        {
            return Err(DataFusionError::Plan(format!(
                "{} is available over integers only",
                self.inner.name()
            )));
        }
        let (start, stop, step) = match args.args.len() {
            1 => (vec![0; rows], ints(args.args.first(), rows), vec![1; rows]),
            2 => (
                ints(args.args.first(), rows),
                ints(args.args.get(1), rows),
                vec![1; rows],
            ),
            _ => (
                ints(args.args.first(), rows),
                ints(args.args.get(1), rows),
                ints(args.args.get(2), rows),
            ),
        };
        Ok(start
            .iter()
            .zip(&stop)
            .zip(&step)
            .map(|((a, b), s)| {
                let span = (i128::from(*b) - i128::from(*a)).unsigned_abs();
                let step = i128::from(*s).unsigned_abs().max(1);
                u64::try_from(span / step).unwrap_or(u64::MAX)
            })
            .fold(0u64, u64::saturating_add))
    }
}

/// Integer argument values, one per row (nulls as 0).
fn ints(value: Option<&ColumnarValue>, rows: usize) -> Vec<i64> {
    match value {
        Some(ColumnarValue::Scalar(ScalarValue::Int64(v))) => vec![v.unwrap_or(0); rows],
        Some(ColumnarValue::Array(array)) if array.data_type() == &DataType::Int64 => {
            let array = array.as_primitive::<Int64Type>();
            (0..array.len())
                .map(|i| if array.is_null(i) { 0 } else { array.value(i) })
                .collect()
        }
        _ => vec![0; rows],
    }
}

/// String argument lengths in bytes, one per row (nulls as 0).
fn string_lengths(value: Option<&ColumnarValue>, rows: usize) -> Vec<usize> {
    match value {
        Some(ColumnarValue::Scalar(scalar)) => {
            let len = match scalar {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)) => s.len(),
                _ => 0,
            };
            vec![len; rows]
        }
        Some(ColumnarValue::Array(array)) => match array.data_type() {
            DataType::Utf8 => array
                .as_string::<i32>()
                .iter()
                .map(|s| s.map_or(0, str::len))
                .collect(),
            DataType::LargeUtf8 => array
                .as_string::<i64>()
                .iter()
                .map(|s| s.map_or(0, str::len))
                .collect(),
            DataType::Utf8View => array
                .as_string_view()
                .iter()
                .map(|s| s.map_or(0, str::len))
                .collect(),
            _ => vec![0; rows],
        },
        None => vec![0; rows],
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }
}

/// Most memory one batch may take anywhere in a plan.
#[derive(Debug)]
pub(crate) struct BatchGuard {
    pub(crate) max_bytes: usize,
}

/// Operators that compute new values or multiply rows (the rest only move
/// them around).
const COMPUTING: &[&str] = &[
    "ProjectionExec",
    "AggregateExec",
    "WindowAggExec",
    "BoundedWindowAggExec",
    "UnnestExec",
    "RecursiveQueryExec",
];

fn guarded(node: &dyn ExecutionPlan) -> bool {
    let name = node.name();
    COMPUTING.contains(&name) || name.ends_with("JoinExec")
}

impl PhysicalOptimizerRule for BatchGuard {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let max_bytes = self.max_bytes;
        plan.transform_up(|node| {
            if guarded(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(BatchGuardExec::new(node, max_bytes)) as Arc<dyn ExecutionPlan>,
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "airlock_batch_guard"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes batches through, failing the query on one over `max_bytes`, and
/// spends a unit of the task's Tokio budget per batch so the task yields.
#[derive(Debug)]
pub(crate) struct BatchGuardExec {
    input: Arc<dyn ExecutionPlan>,
    max_bytes: usize,
}

impl BatchGuardExec {
    fn new(input: Arc<dyn ExecutionPlan>, max_bytes: usize) -> Self {
        Self { input, max_bytes }
    }
}

impl DisplayAs for BatchGuardExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchGuardExec: max_bytes={}", self.max_bytes)
    }
}

impl ExecutionPlan for BatchGuardExec {
    fn name(&self) -> &str {
        "BatchGuardExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(Self::new(input, self.max_bytes))),
            _ => Err(DataFusionError::Internal(
                "BatchGuardExec takes one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let max = self.max_bytes;
        let guarded = input.map(move |batch| {
            let batch: RecordBatch = batch?;
            let size = batch.get_array_memory_size();
            if size > max {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the query built a batch of {size} bytes, over the limit of {max}; \
                     it makes values too large (repeated doubling, huge strings or lists)"
                )));
            }
            Ok(batch)
        });
        Ok(datafusion::physical_plan::coop::make_cooperative(Box::pin(
            RecordBatchStreamAdapter::new(schema, guarded),
        )))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize, String> {
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok(batches.iter().map(RecordBatch::num_rows).sum())
    }

    fn guarded() -> SessionContext {
        let ctx = SessionContext::new();
        for udf in capped_functions(&ctx.state()) {
            ctx.register_udf(ScalarUDF::clone(&udf));
        }
        ctx
    }

    #[tokio::test]
    async fn capped_functions_refuse_huge_outputs_and_allow_normal_ones() {
        let ctx = guarded();
        for sql in [
            "SELECT repeat('x', 1000000000000)",
            "SELECT lpad('x', 1000000000000)",
            "SELECT rpad('x', 100000000, 'y')",
            "SELECT range(1000000000000)",
            "SELECT generate_series(1, 1000000000000)",
            "SELECT array_repeat(1, 1000000000000)",
            "SELECT repeat(repeat('x', 1000000), 1000000)",
        ] {
            let err = run(&ctx, sql).await.unwrap_err();
            assert!(err.contains("over the limit"), "{sql}: {err}");
        }
        assert_eq!(
            run(&ctx, "SELECT repeat('ab', 3), lpad('x', 5), range(10)").await,
            Ok(1)
        );
        let err = run(
            &ctx,
            "SELECT range(DATE '2000-01-01', DATE '3000-01-01', INTERVAL '1' DAY)",
        )
        .await
        .unwrap_err();
        assert!(err.contains("integers only"), "{err}");
    }

    #[tokio::test]
    async fn doubling_values_stop_at_the_batch_limit() {
        let ctx = guarded();
        let state = ctx.state();
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_physical_optimizer_rule(Arc::new(BatchGuard { max_bytes: 8 << 20 }))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Each CTE doubles the string: 1 MiB, 2, 4, … — the guard stops it.
        let mut sql = String::from("WITH s0 AS (SELECT repeat('x', 1048576) AS v)");
        for i in 1..=12 {
            sql.push_str(&format!(
                ", s{i} AS (SELECT concat(v, v) AS v FROM s{})",
                i - 1
            ));
        }
        sql.push_str(" SELECT length(v) FROM s12");
        let err = run(&ctx, &sql).await.unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        assert_eq!(run(&ctx, "SELECT concat('a', 'b')").await, Ok(1));
    }

    /// An aggregate over a cross join of in-memory data never meets a
    /// Tokio resource; without the guard's yield points, aborting its task
    /// would wait for the whole join (hours), holding the thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_cross_join_stops_promptly() {
        let ctx = guarded();
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
            .with_physical_optimizer_rule(Arc::new(BatchGuard { max_bytes: 8 << 20 }))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let n = datafusion::arrow::array::Int64Array::from_iter_values(0..20_000);
        let batch = RecordBatch::try_from_iter([("n", Arc::new(n) as _)]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let df = ctx
            .sql("SELECT max(a.n + b.n + c.n) FROM t a, t b, t c")
            .await
            .unwrap();
        let task = tokio::spawn(df.collect());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        task.abort();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        assert!(
            matches!(ended, Ok(Err(ref e)) if e.is_cancelled()),
            "the join kept running after abort: {ended:?}"
        );
    }
}

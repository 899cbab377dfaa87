//! Compiling one table's rules for one principal into DataFusion
//! expressions.
//!
//! The airlock functions are constants for a given principal, so they are
//! substituted in the SQL expression before planning: `current_agent()` and
//! `current_swarm()` become the principal's names (NULL where it has none)
//! and `agent_attr('k')` its attribute `k` (NULL if absent, so a filter on
//! a missing attribute matches nothing). Masks may name their own column as
//! `col` (unless the table has a real `col`); a second mask (an agent's on
//! top of its swarm's) sees the first one's result there.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, TryCast, col};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, Value, visit_expressions_mut};

use super::grant::{check_expression, literal_argument};
use super::{PolicyError, TableAccess};
use crate::principal::{Principal, TokenKind};
use crate::table_name::TableName;

/// A table as one principal may read it.
#[derive(Debug, Clone)]
pub struct CompiledTable {
    /// What the principal sees: denied columns gone; masked columns keep
    /// their names and types.
    pub schema: SchemaRef,
    /// Rows the principal may see, over the full table (conjunction of all
    /// filters); `None` when every row is visible.
    pub row_filter: Option<Expr>,
    /// One expression per column of `schema`, over the full table: the
    /// column itself, or its mask cast back to the column's type.
    pub outputs: Vec<Expr>,
    /// Visible columns whose values are masks, not the stored values.
    pub masked: BTreeSet<String>,
}

/// Compiles `access` on table `name` (full schema `schema`) for `principal`.
pub fn compile_table(
    state: &SessionState,
    name: &TableName,
    schema: &SchemaRef,
    access: &TableAccess,
    principal: &Principal,
) -> Result<CompiledTable, PolicyError> {
    let df_schema = DFSchema::try_from(Arc::clone(schema)).map_err(|e| PolicyError::Compile {
        what: "schema".into(),
        table: name.clone(),
        message: e.to_string(),
    })?;
    let compile_error = |what: &str, message: String| PolicyError::Compile {
        what: what.to_string(),
        table: name.clone(),
        message,
    };

    let mut filters = Vec::with_capacity(access.row_filters.len());
    for filter in &access.row_filters {
        let mut ast = check_expression("row filter", filter)?;
        substitute_principal(&mut ast, principal);
        let expr = plan(state, &ast, &df_schema).map_err(|m| compile_error("row filter", m))?;
        let data_type = expr
            .get_type(&df_schema)
            .map_err(|e| compile_error("row filter", e.to_string()))?;
        if data_type != DataType::Boolean {
            return Err(compile_error(
                "row filter",
                format!("'{filter}' is {data_type}, not a boolean"),
            ));
        }
        filters.push(expr);
    }
    let row_filter = match filters.into_iter().reduce(Expr::and) {
        Some(filter) => {
            let filter = simplifier(&df_schema)
                .simplify(filter)
                .map_err(|e| compile_error("row filter", e.to_string()))?;
            // A filter that is always true filters nothing.
            (filter != datafusion::logical_expr::lit(true)).then_some(filter)
        }
        None => None,
    };

    let has_col_column = schema.field_with_name("col").is_ok();
    let mut fields = Vec::new();
    let mut outputs = Vec::new();
    let mut masked = BTreeSet::new();
    for field in schema.fields() {
        if access.denied.contains(field.name()) {
            continue;
        }
        let output = match access.masks.get(field.name()) {
            None => col(datafusion::common::Column::from_name(field.name())),
            Some(masks) => {
                // Compose: each mask sees the previous result as its column.
                let mut current = SqlExpr::Identifier(Ident::with_quote('"', field.name()));
                for mask in masks {
                    let mut ast = check_expression("mask", mask)?;
                    substitute_principal(&mut ast, principal);
                    substitute_column(&mut ast, field.name(), !has_col_column, &current);
                    current = SqlExpr::Nested(Box::new(ast));
                }
                let what = format!("mask of {}", field.name());
                let expr =
                    plan(state, &current, &df_schema).map_err(|m| compile_error(&what, m))?;
                let data_type = expr
                    .get_type(&df_schema)
                    .map_err(|e| compile_error(&what, e.to_string()))?;
                masked.insert(field.name().clone());
                // Names and types never change: a mask that does not fit the
                // column's type becomes NULL, which still hides the value.
                let expr = if &data_type == field.data_type() {
                    expr
                } else {
                    Expr::TryCast(TryCast::new(Box::new(expr), field.data_type().clone()))
                };
                expr.alias(field.name())
            }
        };
        fields.push(Field::new(field.name(), field.data_type().clone(), true));
        outputs.push(output);
    }
    if fields.is_empty() {
        return Err(compile_error(
            "column rules",
            "every column is denied; leave the table out of the grant instead".into(),
        ));
    }
    Ok(CompiledTable {
        schema: Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        row_filter,
        outputs,
        masked,
    })
}

/// Plans a SQL expression against the table, with types coerced and
/// constants folded.
fn plan(state: &SessionState, ast: &SqlExpr, schema: &DFSchema) -> Result<Expr, String> {
    // The AST came from our own parse; its text form parses back the same.
    let expr = state
        .create_logical_expr(&ast.to_string(), schema)
        .map_err(|e| e.to_string())?;
    let simplifier = simplifier(schema);
    let expr = simplifier.coerce(expr, schema).map_err(|e| e.to_string())?;
    simplifier.simplify(expr).map_err(|e| e.to_string())
}

fn simplifier(schema: &DFSchema) -> ExprSimplifier {
    ExprSimplifier::new(
        SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .build(),
    )
}

/// Replaces the airlock functions by this principal's constants.
fn substitute_principal(ast: &mut SqlExpr, principal: &Principal) {
    let agent = (principal.kind == TokenKind::Agent).then(|| principal.name.clone());
    let swarm = principal.swarm.clone();
    let _ = visit_expressions_mut(ast, |expr| {
        if let SqlExpr::Function(function) = expr {
            let name = function.name.to_string().to_ascii_lowercase();
            let value = match name.as_str() {
                "current_agent" => Some(agent.clone()),
                "current_swarm" => Some(swarm.clone()),
                "agent_attr" => Some(
                    literal_argument(function)
                        .and_then(|key| principal.attributes.get(&key).cloned()),
                ),
                _ => None,
            };
            if let Some(value) = value {
                *expr = SqlExpr::value(match value {
                    Some(text) => Value::SingleQuotedString(text),
                    None => Value::Null,
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// In a mask, the masked column (by its name, or as `col`) stands for
/// `current`: the stored value, or the result of an earlier mask.
fn substitute_column(ast: &mut SqlExpr, column: &str, col_alias: bool, current: &SqlExpr) {
    let _ = visit_expressions_mut(ast, |expr| {
        if let SqlExpr::Identifier(ident) = expr {
            let is_self =
                ident.value == column || (col_alias && ident.value.eq_ignore_ascii_case("col"));
            if is_self {
                *expr = current.clone();
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::DataType;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("ssn", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ]))
    }

    fn agent(attributes: &[(&str, &str)]) -> Principal {
        Principal {
            kind: TokenKind::Agent,
            token_id: "t".into(),
            name: "a1".into(),
            swarm: Some("emea".into()),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expires_at: chrono::Utc::now(),
        }
    }

    fn compile(access: &TableAccess, principal: &Principal) -> Result<CompiledTable, PolicyError> {
        let state = SessionContext::new().state();
        compile_table(
            &state,
            &TableName::parse("s.t").unwrap(),
            &schema(),
            access,
            principal,
        )
    }

    #[test]
    fn functions_become_the_principals_constants() {
        let access = TableAccess {
            row_filters: vec![
                "region = agent_attr('region')".into(),
                "current_swarm() = 'emea' AND current_agent() IS NOT NULL".into(),
            ],
            ..TableAccess::default()
        };
        let compiled = compile(&access, &agent(&[("region", "EU")])).unwrap();
        let filter = compiled.row_filter.unwrap().to_string();
        assert_eq!(
            filter,
            "t.region = Utf8(\"EU\")".replace("t.", ""),
            "{filter}"
        );
        // A missing attribute is NULL: the filter matches nothing.
        let compiled = compile(&access, &agent(&[])).unwrap();
        let filter = compiled.row_filter.unwrap().to_string();
        assert!(
            filter.contains("NULL") || filter == "Boolean(NULL)",
            "{filter}"
        );
    }

    #[test]
    fn denied_columns_vanish_and_masks_keep_name_and_type() {
        let access = TableAccess {
            denied: ["ssn".to_string()].into(),
            masks: BTreeMap::from([
                (
                    "email".to_string(),
                    vec!["left(col, 2) || '***'".to_string()],
                ),
                ("amount".to_string(), vec!["'hidden'".to_string()]),
            ]),
            ..TableAccess::default()
        };
        let compiled = compile(&access, &agent(&[])).unwrap();
        let names: Vec<&str> = compiled
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", "region", "email", "amount"]);
        assert_eq!(
            compiled.schema.field(3).data_type(),
            &DataType::Decimal128(12, 2)
        );
        assert_eq!(
            compiled.masked,
            ["amount".to_string(), "email".to_string()].into()
        );
        let email = compiled.outputs[2].to_string();
        assert!(
            email.contains("left(email, Int64(2))") && email.ends_with("AS email"),
            "{email}"
        );
        let amount = compiled.outputs[3].to_string();
        assert!(
            amount.starts_with("TRY_CAST(") && amount.ends_with("AS amount"),
            "{amount}"
        );
    }

    #[test]
    fn a_second_mask_sees_the_first_ones_result() {
        let access = TableAccess {
            masks: BTreeMap::from([(
                "email".to_string(),
                vec!["upper(col)".to_string(), "left(email, 3)".to_string()],
            )]),
            ..TableAccess::default()
        };
        let compiled = compile(&access, &agent(&[])).unwrap();
        let email = compiled.outputs[2].to_string();
        assert!(email.contains("left(upper(email)"), "{email}");
    }

    #[test]
    fn rules_that_do_not_fit_the_table_are_refused() {
        let bad_column = TableAccess {
            row_filters: vec!["nope = 1".into()],
            ..TableAccess::default()
        };
        let err = compile(&bad_column, &agent(&[])).unwrap_err().to_string();
        assert!(err.contains("row filter") && err.contains("nope"), "{err}");
        let not_boolean = TableAccess {
            row_filters: vec!["id + 1".into()],
            ..TableAccess::default()
        };
        let err = compile(&not_boolean, &agent(&[])).unwrap_err().to_string();
        assert!(err.contains("not a boolean"), "{err}");
        let everything = TableAccess {
            denied: ["id", "region", "email", "ssn", "amount"]
                .map(String::from)
                .into(),
            ..TableAccess::default()
        };
        assert!(compile(&everything, &agent(&[])).is_err());
    }
}

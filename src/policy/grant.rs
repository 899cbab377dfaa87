//! Grants: what a swarm (or one of its agents) may read.
//!
//! ```json
//! {"swarm": "emea", "agent": null,
//!  "tables": {"sales.orders": {"row_filter": "region = agent_attr('region')",
//!                              "columns": {"email": {"mask": "'***'"}, "ssn": "deny"}},
//!             "sales.*": {}},
//!  "limits": {"max_rows": 10000, "timeout_s": 30, "max_concurrent": 4, "per_minute": 600}}
//! ```
//!
//! The same shape is read from TOML (`[[grants]]`). A grant is parsed and
//! checked once, here; nothing downstream sees unvalidated text except the
//! filter and mask expressions, which [`super::compile`] plans against the
//! table they apply to.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Value, Visit,
    Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

use super::PolicyError;
use crate::table_name::TableName;

/// Longest filter or mask expression accepted, in bytes.
const MAX_EXPRESSION_LEN: usize = 4096;

/// Access for one swarm, or narrowed for one agent of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The swarm.
    pub swarm: String,
    /// Narrows the swarm's grant for this agent only.
    #[serde(default)]
    pub agent: Option<String>,
    /// Table patterns (`schema.table` or `schema.*`) and their rules.
    #[serde(default)]
    pub tables: BTreeMap<String, TableRule>,
    /// Limits on the grantee's queries.
    #[serde(default)]
    pub limits: Limits,
}

/// Rules for the tables one pattern matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    /// A boolean SQL expression over the table's columns; rows where it is
    /// not true do not exist for the grantee. May use `current_agent()`,
    /// `current_swarm()` and `agent_attr('name')`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
    /// Per-column rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnRule>,
}

/// What happens to one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRule {
    /// The column does not exist for the grantee.
    Deny,
    /// The column's values are replaced by this SQL expression (over the
    /// table's columns; `col` names the masked column itself), cast back to
    /// the column's type.
    Mask(String),
}

/// Limits on a grantee's queries; absent values fall back to the server's.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Rows a result may have; the stream stops there and says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// Seconds a query may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Queries one agent may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Queries one agent may start per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
}

impl Serialize for ColumnRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ColumnRule::Deny => serializer.serialize_str("deny"),
            ColumnRule::Mask(mask) => {
                let mut map = BTreeMap::new();
                map.insert("mask", mask);
                map.serialize(serializer)
            }
        }
    }
}

impl schemars::JsonSchema for ColumnRule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ColumnRule".into()
    }

    // As the wire has it (see the serde impls): a word or a one-key object.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "\"deny\" hides the column; {\"mask\": \"<SQL expression>\"} replaces its values",
            "oneOf": [
                {"const": "deny"},
                {
                    "type": "object",
                    "properties": {"mask": {"type": "string"}},
                    "required": ["mask"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ColumnRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Mask { mask: String },
        }
        const EXPECTED: &str = "a column rule is \"deny\" or {\"mask\": \"<SQL expression>\"}";
        match Raw::deserialize(deserializer).map_err(|_| de::Error::custom(EXPECTED))? {
            Raw::Word(word) if word == "deny" => Ok(ColumnRule::Deny),
            Raw::Word(word) => Err(de::Error::custom(format!("'{word}': {EXPECTED}"))),
            Raw::Mask { mask } => Ok(ColumnRule::Mask(mask)),
        }
    }
}

/// A table pattern: one table or every table of a schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TablePattern {
    /// `schema.table`.
    Exact(TableName),
    /// `schema.*`.
    Schema(String),
}

impl TablePattern {
    /// Parses `schema.table` or `schema.*`.
    pub fn parse(pattern: &str) -> Result<Self, PolicyError> {
        match pattern.trim().strip_suffix(".*") {
            Some(schema) => {
                let name = TableName::from_parts(schema, "x")
                    .map_err(|e| PolicyError::Invalid(format!("table pattern '{pattern}': {e}")))?;
                Ok(TablePattern::Schema(name.schema().to_string()))
            }
            None => TableName::parse(pattern)
                .map(TablePattern::Exact)
                .map_err(|e| PolicyError::Invalid(format!("table pattern '{pattern}': {e}"))),
        }
    }

    /// Whether the pattern covers `table`.
    pub fn matches(&self, table: &TableName) -> bool {
        match self {
            TablePattern::Exact(name) => name == table,
            TablePattern::Schema(schema) => schema == table.schema(),
        }
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TablePattern::Exact(name) => write!(f, "{name}"),
            TablePattern::Schema(schema) => write!(f, "{schema}.*"),
        }
    }
}

impl Grant {
    /// The store key: `swarm` or `swarm/agent`.
    pub fn key(&self) -> String {
        grant_key(&self.swarm, self.agent.as_deref())
    }

    /// Checks names, patterns, expression syntax and limits. Table patterns
    /// are normalized (lowercase), so `Sales.Orders` and `sales.orders` are
    /// one rule.
    pub fn validate(mut self) -> Result<Self, PolicyError> {
        validate_name("swarm", &self.swarm)?;
        if let Some(agent) = &self.agent {
            validate_name("agent", agent)?;
        }
        let mut tables = BTreeMap::new();
        for (pattern, rule) in std::mem::take(&mut self.tables) {
            let parsed = TablePattern::parse(&pattern)?;
            if let Some(filter) = &rule.row_filter {
                check_expression(&format!("row_filter of '{pattern}'"), filter)?;
            }
            for (column, column_rule) in &rule.columns {
                if column.is_empty() {
                    return Err(PolicyError::Invalid(format!(
                        "an empty column name in '{pattern}'"
                    )));
                }
                if let ColumnRule::Mask(mask) = column_rule {
                    check_expression(&format!("mask of '{pattern}'.{column}"), mask)?;
                }
            }
            if tables.insert(parsed.to_string(), rule).is_some() {
                return Err(PolicyError::Invalid(format!(
                    "table pattern '{pattern}' appears twice"
                )));
            }
        }
        self.tables = tables;
        let limits = &self.limits;
        if limits.max_rows == Some(0)
            || limits.timeout_s == Some(0)
            || limits.max_concurrent == Some(0)
            || limits.per_minute == Some(0)
        {
            return Err(PolicyError::Invalid(
                "limits must be positive; omit a limit to use the server's".into(),
            ));
        }
        Ok(self)
    }

    /// The rule for `table`: an exact pattern wins over `schema.*`.
    pub fn rule_for(&self, table: &TableName) -> Option<&TableRule> {
        let exact = table.to_string();
        self.tables
            .get(&exact)
            .or_else(|| self.tables.get(&format!("{}.*", table.schema())))
    }
}

/// The store key for a swarm's or an agent's grant.
pub fn grant_key(swarm: &str, agent: Option<&str>) -> String {
    match agent {
        Some(agent) => format!("{swarm}/{agent}"),
        None => swarm.to_string(),
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), PolicyError> {
    crate::principal::check_name(what, name).map_err(PolicyError::Invalid)
}

/// Parses an expression and checks the airlock functions in it are called
/// right: `current_agent()`, `current_swarm()`, `agent_attr('<literal>')`.
pub(crate) fn check_expression(what: &str, sql: &str) -> Result<SqlExpr, PolicyError> {
    if sql.len() > MAX_EXPRESSION_LEN {
        return Err(PolicyError::Invalid(format!(
            "{what} is longer than {MAX_EXPRESSION_LEN} bytes"
        )));
    }
    let expr = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| {
            let expr = p.parse_expr()?;
            p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(expr)
        })
        .map_err(|e| PolicyError::Invalid(format!("{what}: {e}")))?;
    struct Check(Option<String>);
    impl Visitor for Check {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &SqlExpr) -> ControlFlow<()> {
            if let SqlExpr::Function(function) = expr
                && let Err(problem) = check_airlock_function(function)
            {
                self.0 = Some(problem);
                return ControlFlow::Break(());
            }
            if matches!(
                expr,
                SqlExpr::Subquery(_) | SqlExpr::Exists { .. } | SqlExpr::InSubquery { .. }
            ) {
                self.0 = Some("subqueries are not allowed in filters and masks".into());
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut check = Check(None);
    let _ = expr.visit(&mut check);
    match check.0 {
        Some(problem) => Err(PolicyError::Invalid(format!("{what}: {problem}"))),
        None => Ok(expr),
    }
}

fn check_airlock_function(function: &Function) -> Result<(), String> {
    let name = function.name.to_string().to_ascii_lowercase();
    let args = match &function.args {
        FunctionArguments::List(list) => list.args.len(),
        FunctionArguments::None | FunctionArguments::Subquery(_) => 0,
    };
    match name.as_str() {
        "current_agent" | "current_swarm" if args != 0 => {
            Err(format!("{name}() takes no arguments"))
        }
        "agent_attr" => match literal_argument(function) {
            Some(_) => Ok(()),
            None => Err("agent_attr takes one string literal, e.g. agent_attr('region')".into()),
        },
        _ => Ok(()),
    }
}

/// The string literal argument of `agent_attr('x')`.
pub(crate) fn literal_argument(function: &Function) -> Option<String> {
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v)))] => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"swarm": "emea", "agent": null,
        "tables": {"sales.orders": {"row_filter": "region = agent_attr('region')",
                                    "columns": {"email": {"mask": "'***'"}, "ssn": "deny"}},
                   "sales.*": {}},
        "limits": {"max_rows": 10000, "timeout_s": 30, "max_concurrent": 4, "per_minute": 600}}"#;

    #[test]
    fn the_documented_shape_parses_and_round_trips() {
        let grant: Grant = serde_json::from_str(EXAMPLE).unwrap();
        let grant = grant.validate().unwrap();
        let rule = &grant.tables["sales.orders"];
        assert_eq!(rule.columns["ssn"], ColumnRule::Deny);
        assert_eq!(rule.columns["email"], ColumnRule::Mask("'***'".into()));
        assert_eq!(grant.limits.max_rows, Some(10_000));
        let again: Grant = serde_json::from_str(&serde_json::to_string(&grant).unwrap()).unwrap();
        assert_eq!(again, grant);
        assert_eq!(grant.key(), "emea");
    }

    #[test]
    fn exact_patterns_win_over_schema_patterns() {
        let grant: Grant = serde_json::from_str(EXAMPLE).unwrap();
        let grant = grant.validate().unwrap();
        let orders = TableName::parse("sales.orders").unwrap();
        let other = TableName::parse("sales.items").unwrap();
        let elsewhere = TableName::parse("hr.people").unwrap();
        assert!(grant.rule_for(&orders).unwrap().row_filter.is_some());
        assert!(grant.rule_for(&other).unwrap().row_filter.is_none());
        assert!(grant.rule_for(&elsewhere).is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |json: &str| -> String {
            match serde_json::from_str::<Grant>(json) {
                Err(e) => e.to_string(),
                Ok(g) => g.validate().unwrap_err().to_string(),
            }
        };
        assert!(bad(r#"{"swarm": "a b"}"#).contains("swarm 'a b'"));
        assert!(bad(r#"{"swarm": "s", "tables": {"x.y.z": {}}}"#).contains("x.y.z"));
        assert!(
            bad(r#"{"swarm": "s", "tables": {"a.b": {"columns": {"c": "hide"}}}}"#)
                .contains("deny")
        );
        assert!(
            bad(r#"{"swarm": "s", "tables": {"a.b": {"row_filter": "x = "}}}"#)
                .contains("row_filter of 'a.b'")
        );
        assert!(
            bad(r#"{"swarm": "s", "tables": {"a.b": {"row_filter": "x = agent_attr(y)"}}}"#)
                .contains("agent_attr")
        );
        assert!(
            bad(r#"{"swarm": "s", "tables": {"a.b": {"row_filter": "x IN (SELECT 1)"}}}"#)
                .contains("subqueries")
        );
        assert!(
            bad(r#"{"swarm": "s", "tables": {"a.b": {"row_filter": "true; DROP TABLE x"}}}"#)
                .contains("row_filter")
        );
        assert!(bad(r#"{"swarm": "s", "limits": {"max_rows": 0}}"#).contains("positive"));
        assert!(bad(r#"{"swarm": "s", "limts": {}}"#).contains("limts"));
        assert!(bad(r#"{"swarm": "s", "tables": {"A.B": {}, "a.b": {}}}"#).contains("twice"));
    }
}

//! Policy: which tables, rows and columns a principal may read, and how much.
//!
//! - [`grant`]: the grant format (JSON in actions, the same shape in TOML),
//!   parsed and validated at the edge.
//! - [`store`]: grants kept durably and applied on the next query.
//! - [`access_for`]: pure resolution of a principal's access from grants:
//!   admins are unrestricted; a swarm sees what its grant names; an agent
//!   sees what both its swarm's grant and (if any) its own grant allow —
//!   an agent grant only narrows. Default deny: no grant, no tables.
//! - [`compile`]: pure compilation of a table's row filters and column
//!   masks into DataFusion expressions for one principal (its
//!   `current_agent()`, `current_swarm()` and `agent_attr(...)` become
//!   constants).
//!
//! Enforcement is in `query`: the only way to a table is through a
//! governed provider built from the compiled policy, so every scan — in
//! any subquery, CTE, join or union — gets the filter and masks.

pub mod compile;
pub mod grant;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

pub use compile::{CompiledTable, compile_table};
pub use grant::{ColumnRule, Grant, Limits, TablePattern, TableRule, grant_key};
pub use store::GrantStore;

use crate::meta::MetaError;
use crate::principal::{Principal, TokenKind};
use crate::table_name::TableName;

/// Policy failures.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A grant is malformed.
    #[error("invalid grant: {0}")]
    Invalid(String),
    /// No grant with that key.
    #[error("no grant for '{0}'")]
    NotFound(String),
    /// A filter or mask does not plan against its table.
    #[error("the grant's {what} for {table} does not work on the table: {message}")]
    Compile {
        /// Which expression.
        what: String,
        /// Table.
        table: TableName,
        /// Why.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What a principal may read.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Everything, unfiltered (admins).
    Unrestricted,
    /// Only these tables, each with its rules.
    Restricted {
        /// Visible tables (by name; patterns already expanded).
        tables: BTreeMap<TableName, TableAccess>,
        /// Limits on queries.
        limits: Limits,
    },
}

/// The rules one principal has on one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableAccess {
    /// Row filters, all of which must hold (swarm's, then agent's).
    pub row_filters: Vec<String>,
    /// Columns that do not exist for the principal.
    pub denied: BTreeSet<String>,
    /// Masks per column, applied in order (swarm's, then agent's).
    pub masks: BTreeMap<String, Vec<String>>,
}

impl Access {
    /// Whether the principal may see `table` at all.
    pub fn allows(&self, table: &TableName) -> bool {
        match self {
            Access::Unrestricted => true,
            Access::Restricted { tables, .. } => tables.contains_key(table),
        }
    }

    /// The rules for `table` (`None` for unrestricted or invisible tables).
    pub fn table(&self, table: &TableName) -> Option<&TableAccess> {
        match self {
            Access::Unrestricted => None,
            Access::Restricted { tables, .. } => tables.get(table),
        }
    }

    /// The rules applied to `tables`, for the audit: `unrestricted`, or
    /// per table its row filters, masked and denied columns, as JSON.
    pub fn describe(&self, tables: &[TableName]) -> String {
        if *self == Access::Unrestricted {
            return "unrestricted".into();
        }
        let rules: serde_json::Map<String, serde_json::Value> = tables
            .iter()
            .filter_map(|table| {
                let rules = self.table(table)?;
                Some((
                    table.to_string(),
                    serde_json::json!({
                        "row_filters": rules.row_filters,
                        "masked": rules.masks.keys().collect::<Vec<_>>(),
                        "denied": rules.denied,
                    }),
                ))
            })
            .collect();
        serde_json::Value::Object(rules).to_string()
    }

    /// The principal's limits (none for unrestricted).
    pub fn limits(&self) -> Limits {
        match self {
            Access::Unrestricted => Limits::default(),
            Access::Restricted { limits, .. } => *limits,
        }
    }
}

/// Resolves what `principal` may read of `tables` under `grants`.
pub fn access_for<'a>(
    principal: &Principal,
    grants: &BTreeMap<String, Grant>,
    tables: impl IntoIterator<Item = &'a TableName>,
) -> Access {
    let (swarm_grant, agent_grant) = match principal.kind {
        TokenKind::Admin => return Access::Unrestricted,
        TokenKind::Swarm => (swarm_grant(principal, grants), None),
        TokenKind::Agent => (
            swarm_grant(principal, grants),
            principal
                .swarm
                .as_deref()
                .and_then(|swarm| grants.get(&grant_key(swarm, Some(&principal.name)))),
        ),
    };
    let Some(swarm_grant) = swarm_grant else {
        return Access::Restricted {
            tables: BTreeMap::new(),
            limits: Limits::default(),
        };
    };
    let mut visible = BTreeMap::new();
    for table in tables {
        let Some(swarm_rule) = swarm_grant.rule_for(table) else {
            continue;
        };
        let agent_rule = match agent_grant {
            Some(grant) => match grant.rule_for(table) {
                Some(rule) => Some(rule),
                // The agent grant narrows: a table it does not name is out.
                None => continue,
            },
            None => None,
        };
        let mut access = TableAccess::default();
        for rule in std::iter::once(swarm_rule).chain(agent_rule) {
            access.row_filters.extend(rule.row_filter.iter().cloned());
            for (column, column_rule) in &rule.columns {
                match column_rule {
                    ColumnRule::Deny => {
                        access.denied.insert(column.clone());
                    }
                    ColumnRule::Mask(mask) => access
                        .masks
                        .entry(column.clone())
                        .or_default()
                        .push(mask.clone()),
                }
            }
        }
        visible.insert(table.clone(), access);
    }
    let limits = match agent_grant {
        Some(agent) => narrow(swarm_grant.limits, agent.limits),
        None => swarm_grant.limits,
    };
    Access::Restricted {
        tables: visible,
        limits,
    }
}

fn swarm_grant<'g>(
    principal: &Principal,
    grants: &'g BTreeMap<String, Grant>,
) -> Option<&'g Grant> {
    principal
        .swarm
        .as_deref()
        .and_then(|swarm| grants.get(&grant_key(swarm, None)))
}

/// The stricter of two limit sets.
fn narrow(a: Limits, b: Limits) -> Limits {
    fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    Limits {
        max_rows: min(a.max_rows, b.max_rows),
        timeout_s: min(a.timeout_s, b.timeout_s),
        max_concurrent: min(a.max_concurrent, b.max_concurrent),
        per_minute: min(a.per_minute, b.per_minute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(kind: TokenKind, name: &str, swarm: Option<&str>) -> Principal {
        Principal {
            kind,
            token_id: format!("{name}-token"),
            name: name.into(),
            swarm: swarm.map(Into::into),
            attributes: BTreeMap::new(),
            expires_at: chrono::Utc::now(),
        }
    }

    fn grants(list: &[&str]) -> BTreeMap<String, Grant> {
        list.iter()
            .map(|json| {
                let grant: Grant = serde_json::from_str(json).unwrap();
                let grant = grant.validate().unwrap();
                (grant.key(), grant)
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<TableName> {
        list.iter().map(|n| TableName::parse(n).unwrap()).collect()
    }

    #[test]
    fn default_deny_and_admin_sees_all() {
        let tables = names(&["sales.orders", "hr.people"]);
        let none = BTreeMap::new();
        let agent = principal(TokenKind::Agent, "a1", Some("emea"));
        let access = access_for(&agent, &none, &tables);
        assert!(!access.allows(&tables[0]) && !access.allows(&tables[1]));
        let admin = principal(TokenKind::Admin, "admin", None);
        assert_eq!(access_for(&admin, &none, &tables), Access::Unrestricted);
    }

    #[test]
    fn an_agent_grant_narrows_its_swarm_grant() {
        let tables = names(&["sales.orders", "sales.items", "hr.people"]);
        let grants = grants(&[
            r#"{"swarm": "emea", "tables": {"sales.*": {"row_filter": "region = 'EU'"},
                 "sales.orders": {"row_filter": "amount > 0", "columns": {"email": {"mask": "'***'"}}}},
                 "limits": {"max_rows": 100, "timeout_s": 30}}"#,
            r#"{"swarm": "emea", "agent": "a1", "tables": {"sales.orders": {"row_filter": "amount < 10",
                 "columns": {"ssn": "deny", "email": {"mask": "left(col, 1)"}}}},
                 "limits": {"max_rows": 1000, "max_concurrent": 2}}"#,
        ]);
        // The swarm itself: both sales tables, exact rule for orders.
        let swarm = access_for(
            &principal(TokenKind::Swarm, "emea", Some("emea")),
            &grants,
            &tables,
        );
        assert!(swarm.allows(&tables[1]));
        assert!(!swarm.allows(&tables[2]));
        assert_eq!(
            swarm.table(&tables[0]).unwrap().row_filters,
            vec!["amount > 0"]
        );
        // Agent a1: only orders (its grant names only orders), both filters,
        // both masks in order, the stricter limits.
        let a1 = access_for(
            &principal(TokenKind::Agent, "a1", Some("emea")),
            &grants,
            &tables,
        );
        assert!(a1.allows(&tables[0]));
        assert!(!a1.allows(&tables[1]));
        let orders = a1.table(&tables[0]).unwrap();
        assert_eq!(orders.row_filters, vec!["amount > 0", "amount < 10"]);
        assert!(orders.denied.contains("ssn"));
        assert_eq!(orders.masks["email"], vec!["'***'", "left(col, 1)"]);
        assert_eq!(a1.limits().max_rows, Some(100));
        assert_eq!(a1.limits().max_concurrent, Some(2));
        assert_eq!(a1.limits().timeout_s, Some(30));
        // Another agent of the swarm gets the swarm grant as is.
        let a2 = access_for(
            &principal(TokenKind::Agent, "a2", Some("emea")),
            &grants,
            &tables,
        );
        assert!(a2.allows(&tables[1]));
        // An agent of another swarm: nothing.
        let other = access_for(
            &principal(TokenKind::Agent, "a1", Some("apac")),
            &grants,
            &tables,
        );
        assert!(!other.allows(&tables[0]));
    }
}

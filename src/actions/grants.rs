//! Grant actions: `grant.set`, `grant.get`, `grant.list`, `grant.delete`,
//! and `explain`, which shows what the grants make of one query.
//!
//! Grants belong to `policy`, plans to `query`; this file parses the bodies
//! and shapes the answers. A grant is checked against the tables it names
//! before it is stored, so a mistake fails `grant.set` rather than the
//! next query.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, Serializer};

use super::{Action, ActionError, Actions, Empty, parse};
use crate::auth::AuthError;
use crate::policy::{Access, Grant, Limits, grant_key};
use crate::principal::{Principal, TokenKind};

/// The body of `grant.get` and `grant.delete`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantKey {
    swarm: String,
    #[serde(default)]
    agent: Option<String>,
}

/// The body of `explain`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExplainRequest {
    sql: String,
    #[serde(default, rename = "as")]
    as_principal: Option<AsPrincipal>,
    /// Plan as if this grant were stored in place of the one with its key
    /// (it is not stored): a preview before `grant.set`.
    #[serde(default)]
    grant: Option<Grant>,
}

/// Whom `explain` plans for: an existing token, or a described principal.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub(super) enum AsPrincipal {
    Token {
        token_id: String,
    },
    Described {
        kind: TokenKind,
        #[serde(default)]
        swarm: Option<String>,
        name: String,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
    },
}

/// `grant.set` and `grant.get`: a grant and its key.
#[derive(Debug, Serialize)]
pub(super) struct GrantView {
    /// `swarm` or `swarm/agent`.
    key: String,
    grant: Grant,
}

impl From<Grant> for GrantView {
    fn from(grant: Grant) -> Self {
        Self {
            key: grant.key(),
            grant,
        }
    }
}

/// `grant.list`.
#[derive(Debug, Serialize)]
pub(super) struct GrantListView {
    grants: Vec<Grant>,
}

/// `grant.delete`.
#[derive(Debug, Serialize)]
pub(super) struct DeletedView {
    key: String,
    /// Always true: deleting a missing grant is an error.
    deleted: bool,
}

/// `explain`: whom the query was planned for, with what access, and the plans.
#[derive(Debug, Serialize)]
pub(super) struct ExplainView {
    /// The principal's label, e.g. `agent:a1@emea`.
    principal: String,
    access: AccessView,
    logical_plan: String,
    physical_plan: String,
    /// DuckDB's own plan for each query airlock sends it.
    duckdb_plans: Vec<String>,
}

/// What a principal may read: the string `"unrestricted"`, or
/// `{"tables": {name: rules}, "limits": {…}}`.
#[derive(Debug)]
pub(super) enum AccessView {
    /// Admins.
    Unrestricted,
    /// Everyone else.
    Restricted(RestrictedView),
}

/// The tables a restricted principal sees, and its limits.
#[derive(Debug, Serialize)]
pub(super) struct RestrictedView {
    tables: BTreeMap<String, TableAccessView>,
    limits: Limits,
}

/// The rules on one table.
#[derive(Debug, Serialize)]
struct TableAccessView {
    row_filters: Vec<String>,
    denied: BTreeSet<String>,
    masks: BTreeMap<String, Vec<String>>,
}

// By hand: derived, a unit variant would be `null` untagged or wrap the
// other variant in `{"restricted": …}` tagged.
impl Serialize for AccessView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AccessView::Unrestricted => serializer.serialize_str("unrestricted"),
            AccessView::Restricted(restricted) => restricted.serialize(serializer),
        }
    }
}

impl From<Access> for AccessView {
    fn from(access: Access) -> Self {
        match access {
            Access::Unrestricted => AccessView::Unrestricted,
            Access::Restricted { tables, limits } => AccessView::Restricted(RestrictedView {
                tables: tables
                    .into_iter()
                    .map(|(name, rules)| {
                        let rules = TableAccessView {
                            row_filters: rules.row_filters,
                            denied: rules.denied,
                            masks: rules.masks,
                        };
                        (name.to_string(), rules)
                    })
                    .collect(),
                limits,
            }),
        }
    }
}

impl Actions {
    /// `grant.set`: creates or replaces a grant.
    pub(super) async fn grant_set(&self, body: &[u8]) -> Result<GrantView, ActionError> {
        let grant: Grant = parse(Action::GrantSet, body)?;
        let grant = grant.validate()?;
        self.query.check_grant(&grant)?;
        Ok(self.grants.set(grant).await?.into())
    }

    /// `grant.get`: one grant.
    pub(super) fn grant_get(&self, body: &[u8]) -> Result<GrantView, ActionError> {
        let GrantKey { swarm, agent } = parse(Action::GrantGet, body)?;
        Ok(self
            .grants
            .get(&grant_key(&swarm, agent.as_deref()))?
            .into())
    }

    /// `grant.list`: every grant, by key.
    pub(super) fn grant_list(&self, body: &[u8]) -> Result<GrantListView, ActionError> {
        let Empty {} = parse(Action::GrantList, body)?;
        let snapshot = self.grants.snapshot();
        Ok(GrantListView {
            grants: snapshot.grants.values().cloned().collect(),
        })
    }

    /// `grant.delete`: removes a grant.
    pub(super) async fn grant_delete(&self, body: &[u8]) -> Result<DeletedView, ActionError> {
        let GrantKey { swarm, agent } = parse(Action::GrantDelete, body)?;
        let key = grant_key(&swarm, agent.as_deref());
        self.grants.delete(&key).await?;
        Ok(DeletedView { key, deleted: true })
    }

    /// `explain`: plans a query as `as` (or the caller) would run it.
    pub(super) async fn explain(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<ExplainView, ActionError> {
        let ExplainRequest {
            sql,
            as_principal,
            grant,
        } = parse(Action::Explain, body)?;
        // A proposed grant is checked as grant.set would check it.
        let grant = match grant {
            Some(grant) => {
                let grant = grant.validate()?;
                self.query.check_grant(&grant)?;
                Some(grant)
            }
            None => None,
        };
        let target = match as_principal {
            None => principal.clone(),
            Some(AsPrincipal::Token { token_id }) => self
                .auth
                .principal_of(&token_id)
                .ok_or(AuthError::NotFound(token_id))?,
            Some(AsPrincipal::Described {
                kind,
                swarm,
                name,
                attributes,
            }) => Principal::described(kind, swarm, name, attributes),
        };
        let explained = self.query.explain(&target, &sql, grant.as_ref()).await?;
        Ok(ExplainView {
            principal: target.label(),
            access: self.query.access(&target, grant.as_ref()).into(),
            logical_plan: explained.logical,
            physical_plan: explained.physical,
            duckdb_plans: explained.duckdb,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::TableAccess;
    use crate::table_name::TableName;

    #[test]
    fn unrestricted_access_is_a_string() {
        let view = serde_json::to_value(AccessView::from(Access::Unrestricted)).unwrap();
        assert_eq!(view, json!("unrestricted"));
    }

    #[test]
    fn restricted_access_lists_rules_by_table() {
        let rules = TableAccess {
            row_filters: vec!["region = 'EU'".into()],
            denied: BTreeSet::from(["ssn".to_string()]),
            masks: BTreeMap::from([("email".to_string(), vec!["'***'".to_string()])]),
        };
        let access = Access::Restricted {
            tables: BTreeMap::from([(TableName::parse("sales.orders").unwrap(), rules)]),
            limits: Limits {
                max_rows: Some(10),
                ..Limits::default()
            },
        };
        let view = serde_json::to_value(AccessView::from(access)).unwrap();
        assert_eq!(
            view,
            json!({
                "tables": {"sales.orders": {
                    "row_filters": ["region = 'EU'"],
                    "denied": ["ssn"],
                    "masks": {"email": ["'***'"]},
                }},
                "limits": {"max_rows": 10},
            })
        );
    }
}

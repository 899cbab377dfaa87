//! The records of the context store and who may see each.
//!
//! Every rule here answers one question — may this principal see this
//! record, and which part of it — from the tables and columns the
//! principal's catalog holds, so that context never shows a table, column
//! or value the caller could not read with SQL.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::principal::Principal;
use crate::table_name::TableName;

/// What a principal's catalog holds: each visible table's columns (denied
/// columns gone, masked ones present).
pub type Visible = BTreeMap<TableName, Vec<(String, String)>>;

/// Descriptions of one table and its columns (`context.describe`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableNotes {
    /// `schema.table`.
    pub table: String,
    /// What the table holds.
    #[serde(default)]
    pub description: Option<String>,
    /// Column name → what it means.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last (principal label).
    pub updated_by: String,
}

impl TableNotes {
    /// The notes as `visible` lets its principal see them: none for a
    /// table it cannot see, and only the columns it can.
    pub fn seen_by(&self, visible: &Visible) -> Option<TableNotes> {
        let name = TableName::parse(&self.table).ok()?;
        let columns = visible.get(&name)?;
        Some(TableNotes {
            columns: self
                .columns
                .iter()
                .filter(|(c, _)| columns.iter().any(|(name, _)| name == *c))
                .map(|(c, d)| (c.clone(), d.clone()))
                .collect(),
            ..self.clone()
        })
    }
}

/// A business rule for writing SQL, global or scoped to tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    /// Stable id.
    pub id: String,
    /// The rule, in words.
    pub text: String,
    /// The tables it is about; empty for a rule that applies everywhere.
    #[serde(default)]
    pub tables: Vec<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it last.
    pub updated_by: String,
}

impl Instruction {
    /// Shown only to principals who see every table it is about: a rule
    /// naming a table would otherwise reveal that the table exists.
    pub fn visible_to(&self, visible: &Visible) -> bool {
        all_visible(&self.tables, visible)
    }

    /// Whether it applies to a context about `tables`: global rules always,
    /// scoped ones when every table they name is there (a rule on joining
    /// two tables means nothing beside one of them).
    pub fn applies_to(&self, tables: &BTreeSet<TableName>) -> bool {
        self.tables.iter().all(|t| {
            TableName::parse(t)
                .ok()
                .is_some_and(|t| tables.contains(&t))
        })
    }

    /// Whether it is global or names `table`.
    pub fn mentions(&self, table: &TableName) -> bool {
        self.tables.is_empty()
            || self
                .tables
                .iter()
                .any(|t| TableName::parse(t).ok().as_ref() == Some(table))
    }
}

/// A question and the SQL that answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenSql {
    /// Stable id.
    pub id: String,
    /// The question, in words.
    pub question: String,
    /// The SQL that answers it (planned before it was stored).
    pub sql: String,
    /// The columns it reads per table, from its plan.
    pub reads: BTreeMap<String, BTreeSet<String>>,
    /// The swarm it belongs to; none for one an admin added for everyone.
    #[serde(default)]
    pub swarm: Option<String>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Who added it.
    pub created_by: String,
}

/// What a caller's policy hides inside the tables it may query.
#[derive(Debug, Clone, Default)]
pub struct Hidden {
    /// Tables whose rows a row filter narrows for the caller.
    pub filtered: BTreeSet<TableName>,
    /// Masked columns per table.
    pub masked: BTreeMap<TableName, BTreeSet<String>>,
}

impl GoldenSql {
    /// Shown to admins, and to principals of its swarm (everyone, for a
    /// global one) who can see every table and column it reads, and whose
    /// policy hides nothing its text could reveal: none of those tables is
    /// row-filtered for them (its literals and question may name values of
    /// rows they cannot read), and it compares no masked column with a
    /// quoted literal.
    pub fn visible_to(&self, principal: &Principal, visible: &Visible, hidden: &Hidden) -> bool {
        if principal.is_admin() {
            return true;
        }
        if self.swarm.is_some() && self.swarm != principal.swarm {
            return false;
        }
        let quotes_a_value = self.sql.contains('\'');
        self.reads.iter().all(|(table, columns)| {
            let Some(name) = TableName::parse(table).ok() else {
                return false;
            };
            let Some(seen) = visible.get(&name) else {
                return false;
            };
            let masked = hidden.masked.get(&name);
            !hidden.filtered.contains(&name)
                && columns.iter().all(|c| {
                    seen.iter().any(|(n, _)| n == c)
                        && !(quotes_a_value && masked.is_some_and(|m| m.contains(c)))
                })
        })
    }

    /// The tables it reads.
    pub fn tables(&self) -> impl Iterator<Item = TableName> + '_ {
        self.reads.keys().filter_map(|t| TableName::parse(t).ok())
    }

    /// Whether `principal` may delete it: admins any, a swarm's principals
    /// their swarm's.
    pub fn deletable_by(&self, principal: &Principal) -> bool {
        principal.is_admin() || (self.swarm.is_some() && self.swarm == principal.swarm)
    }
}

fn all_visible(tables: &[String], visible: &Visible) -> bool {
    tables.iter().all(|t| {
        TableName::parse(t)
            .ok()
            .is_some_and(|t| visible.contains_key(&t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::TokenKind;

    fn visible() -> Visible {
        let mut v = Visible::new();
        v.insert(
            TableName::parse("demo.customers").unwrap(),
            vec![
                ("id".into(), "Int64".into()),
                ("region".into(), "Utf8".into()),
            ],
        );
        v
    }

    fn agent(swarm: &str) -> Principal {
        Principal::described(
            TokenKind::Agent,
            Some(swarm.into()),
            "a1".into(),
            Default::default(),
        )
    }

    fn golden(swarm: Option<&str>, table: &str, columns: &[&str]) -> GoldenSql {
        GoldenSql {
            id: "g".into(),
            question: "q".into(),
            sql: "SELECT 1".into(),
            reads: [(
                table.to_string(),
                columns.iter().map(|c| c.to_string()).collect(),
            )]
            .into(),
            swarm: swarm.map(str::to_string),
            created_at: Utc::now(),
            created_by: "admin".into(),
        }
    }

    #[test]
    fn notes_show_only_visible_tables_and_columns() {
        let notes = TableNotes {
            table: "demo.customers".into(),
            description: Some("people".into()),
            columns: [
                ("region".to_string(), "where".to_string()),
                ("ssn".to_string(), "secret".to_string()),
            ]
            .into(),
            updated_at: Utc::now(),
            updated_by: "admin".into(),
        };
        let seen = notes.seen_by(&visible()).unwrap();
        assert_eq!(seen.columns.keys().collect::<Vec<_>>(), ["region"]);
        let hidden = TableNotes {
            table: "demo.orders".into(),
            ..notes
        };
        assert!(hidden.seen_by(&visible()).is_none());
    }

    #[test]
    fn golden_sql_needs_its_swarm_and_every_column_it_reads() {
        let a = agent("emea");
        let none = Hidden::default();
        assert!(golden(None, "demo.customers", &["region"]).visible_to(&a, &visible(), &none));
        assert!(golden(Some("emea"), "demo.customers", &["id"]).visible_to(&a, &visible(), &none));
        assert!(!golden(Some("apac"), "demo.customers", &["id"]).visible_to(&a, &visible(), &none));
        assert!(!golden(None, "demo.customers", &["ssn"]).visible_to(&a, &visible(), &none));
        assert!(!golden(None, "demo.orders", &["id"]).visible_to(&a, &visible(), &none));
        // A row filter hides it: its text may name values of hidden rows.
        let customers = TableName::parse("demo.customers").unwrap();
        let filtered = Hidden {
            filtered: [customers.clone()].into(),
            ..Hidden::default()
        };
        assert!(!golden(None, "demo.customers", &["region"]).visible_to(&a, &visible(), &filtered));
        // A masked column hides it only when the SQL quotes a value.
        let masked = Hidden {
            masked: [(customers, ["region".to_string()].into())].into(),
            ..Hidden::default()
        };
        let plain = golden(None, "demo.customers", &["region"]);
        assert!(plain.visible_to(&a, &visible(), &masked));
        let quoting = GoldenSql {
            sql: "SELECT count(*) FROM demo.customers WHERE region = 'EU'".into(),
            ..plain
        };
        assert!(!quoting.visible_to(&a, &visible(), &masked));
    }

    #[test]
    fn scoped_instructions_need_every_table() {
        let rule = |tables: &[&str]| Instruction {
            id: "i".into(),
            text: "t".into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            updated_by: "admin".into(),
        };
        assert!(rule(&[]).visible_to(&visible()));
        assert!(rule(&["demo.customers"]).visible_to(&visible()));
        assert!(!rule(&["demo.customers", "demo.orders"]).visible_to(&visible()));
        let customers: BTreeSet<TableName> = [TableName::parse("demo.customers").unwrap()].into();
        assert!(rule(&[]).applies_to(&customers));
        assert!(rule(&["demo.customers"]).applies_to(&customers));
        assert!(!rule(&["demo.orders"]).applies_to(&customers));
        assert!(!rule(&["demo.orders", "demo.customers"]).applies_to(&customers));
        let customers = TableName::parse("demo.customers").unwrap();
        assert!(rule(&["demo.orders", "demo.customers"]).mentions(&customers));
        assert!(rule(&[]).mentions(&customers));
        assert!(!rule(&["demo.orders"]).mentions(&customers));
    }
}

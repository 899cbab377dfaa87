//! Validated `schema.table` names.
//!
//! A name arrives as text from an admin (`table.register`) and ends up as a
//! DuckDB identifier, a DataFusion table reference and a metadata key. It is
//! parsed once, here, into a form that is safe in all three: lowercase ASCII
//! letters, digits and underscores, starting with a letter or underscore.
//! Lowercase because DataFusion folds unquoted identifiers to lowercase, so
//! `SELECT * FROM Sales.Orders` must find what was registered as
//! `Sales.Orders`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Schema used when a name has no `schema.` part.
pub const DEFAULT_SCHEMA: &str = "main";

/// Prefix of tables airlock creates for itself (staging tables of syncs).
/// Registered names may not use it, so they can never collide.
pub const RESERVED_PREFIX: &str = "__airlock";

/// The schema of airlock's own tables (`airlock.audit`, the context tables,
/// `airlock.profile(…)`).
pub const AIRLOCK_SCHEMA: &str = "airlock";

/// Schemas airlock itself serves (its own tables, the information schema,
/// `artifacts.<name>`); no registered table may live in them.
pub const RESERVED_SCHEMAS: [&str; 3] = [AIRLOCK_SCHEMA, "information_schema", "artifacts"];

/// Whether a schema name is one airlock serves itself.
pub fn is_reserved_schema(schema: &str) -> bool {
    RESERVED_SCHEMAS
        .iter()
        .any(|reserved| schema.eq_ignore_ascii_case(reserved))
}

const MAX_PART_LEN: usize = 63;

/// Why a table name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableNameError {
    /// Empty string or empty part.
    #[error("table name '{0}' is empty or has an empty part; use 'schema.table'")]
    Empty(String),
    /// More than two dot-separated parts.
    #[error("table name '{0}' has too many parts; use 'schema.table' (catalogs are not supported)")]
    TooManyParts(String),
    /// A character outside `[a-z0-9_]`, or a leading digit.
    #[error(
        "table name '{name}' is not allowed: each part must start with a letter or '_' and \
         contain only letters, digits and '_' (at most {MAX_PART_LEN} characters)"
    )]
    BadCharacters {
        /// The name as given.
        name: String,
    },
    /// Starts with the reserved prefix.
    #[error("table name '{0}' uses the reserved prefix '{RESERVED_PREFIX}'")]
    Reserved(String),
}

/// A validated, lowercase `schema.table` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableName {
    schema: String,
    table: String,
}

impl TableName {
    /// Parses `schema.table` or `table` (in schema `main`).
    pub fn parse(name: &str) -> Result<Self, TableNameError> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(TableNameError::Empty(name.to_string()));
        }
        let parts: Vec<&str> = trimmed.split('.').collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (DEFAULT_SCHEMA, *table),
            [schema, table] => (*schema, *table),
            _ => return Err(TableNameError::TooManyParts(name.to_string())),
        };
        for part in [schema, table] {
            if part.is_empty() {
                return Err(TableNameError::Empty(name.to_string()));
            }
            if !valid_part(part) {
                return Err(TableNameError::BadCharacters {
                    name: name.to_string(),
                });
            }
            if part.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
                return Err(TableNameError::Reserved(name.to_string()));
            }
        }
        Ok(Self {
            schema: schema.to_ascii_lowercase(),
            table: table.to_ascii_lowercase(),
        })
    }

    /// The name of a table airlock keeps itself (the audit trail), from
    /// lowercase identifiers fixed in the code. Bypasses validation only
    /// for the reserved `airlock` schema, which users cannot register in.
    pub(crate) fn builtin(schema: &'static str, table: &'static str) -> Self {
        Self {
            schema: schema.to_string(),
            table: table.to_string(),
        }
    }

    /// Builds a name from parts that are already known to be valid (for
    /// example read back from DuckDB's catalog), validating them anyway.
    pub fn from_parts(schema: &str, table: &str) -> Result<Self, TableNameError> {
        Self::parse(&format!("{schema}.{table}"))
    }

    /// The schema part.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The table part.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// `"schema"."table"`, for SQL that airlock itself generates.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

fn valid_part(part: &str) -> bool {
    let mut chars = part.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && part.len() <= MAX_PART_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes an identifier for DuckDB: wrapped in double quotes, inner quotes
/// doubled. Used for column names, which come from source files and may
/// contain anything.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl TryFrom<String> for TableName {
    type Error = TableNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TableName> for String {
    fn from(value: TableName) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        let name = TableName::parse("Sales.Orders").unwrap();
        assert_eq!(name.schema(), "sales");
        assert_eq!(name.table(), "orders");
        assert_eq!(name.to_string(), "sales.orders");
        assert_eq!(name.quoted(), "\"sales\".\"orders\"");
        assert_eq!(
            TableName::parse("orders").unwrap().to_string(),
            "main.orders"
        );
    }

    #[test]
    fn refuses_what_could_escape_an_identifier() {
        for bad in [
            "",
            " ",
            "a.",
            ".b",
            "a.b.c",
            "a;drop.b",
            "a\".b",
            "sales.or ders",
            "1sales.orders",
            "sales.ordérs",
            "__airlock_staging.x",
        ] {
            assert!(TableName::parse(bad).is_err(), "accepted {bad:?}");
        }
        let long = format!("s.{}", "x".repeat(64));
        assert!(TableName::parse(&long).is_err());
    }

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn serde_round_trip_validates() {
        let name: TableName = serde_json::from_str("\"s.t\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"s.t\"");
        assert!(serde_json::from_str::<TableName>("\"s.t;\"").is_err());
    }
}

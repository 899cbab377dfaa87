//! `sources.list_tables`: the tables and views of a Snowflake schema, from
//! its INFORMATION_SCHEMA.

use serde::Serialize;

use super::client::Client;
use super::{name_literal, source_error, split_identifier};
use crate::sync::source::SourceError;

/// A table of a Snowflake schema, as `sources.list_tables` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceTable {
    /// `DATABASE.SCHEMA.TABLE`, ready for `snowflake://CONNECTION/…`.
    pub table: String,
    /// `BASE TABLE`, `VIEW`, …
    pub kind: Option<String>,
    /// Rows, as Snowflake counts them (views have none).
    pub rows: Option<u64>,
    /// Bytes, as Snowflake counts them.
    pub bytes: Option<u64>,
}

/// The tables and views of `database.schema` through `client`, the
/// client of connection `name`.
pub async fn list_tables(
    client: &Client,
    name: &str,
    database: &str,
    schema: &str,
) -> Result<Vec<SourceTable>, SourceError> {
    let source_name = format!("snowflake://{name}/{database}.{schema}");
    let single = |part: &str| -> Result<String, SourceError> {
        match split_identifier(part) {
            Ok(parts) if parts.len() == 1 => Ok(parts[0].clone()),
            _ => Err(SourceError::BadUrl {
                url: source_name.clone(),
                reason: format!("'{part}' is not one identifier"),
            }),
        }
    };
    let database = single(database)?;
    let schema = single(schema)?;
    let sql = format!(
        "SELECT TABLE_NAME AS TABLE_NAME, TABLE_TYPE AS TABLE_TYPE, ROW_COUNT AS ROW_COUNT, \
             BYTES AS BYTES FROM {database}.INFORMATION_SCHEMA.TABLES \
             WHERE TABLE_SCHEMA = {} ORDER BY TABLE_NAME",
        name_literal(&schema)
    );
    let (_, rows) = client
        .query_strings(&sql)
        .await
        .map_err(|e| source_error(&source_name, e))?;
    let number = |v: Option<&Option<String>>| {
        v.and_then(|v| v.as_deref())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let part = |name: &str| {
        if split_identifier(name).is_ok_and(|p| p.len() == 1 && p[0] == name)
            && name == name.to_ascii_uppercase()
        {
            name.to_string()
        } else {
            format!("\"{name}\"")
        }
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            let table = row.first()?.as_deref()?;
            Some(SourceTable {
                table: format!("{database}.{schema}.{}", part(table)),
                kind: row.get(1).cloned().flatten(),
                rows: number(row.get(2)),
                bytes: number(row.get(3)),
            })
        })
        .collect())
}

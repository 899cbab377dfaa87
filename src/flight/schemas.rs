//! The shapes of Flight SQL answers: the parts that do not depend on the
//! caller (SqlInfo, type info, key schemas), and the column metadata that
//! JDBC, ADBC and BI tools read from schemas (`ARROW:FLIGHT:SQL:TYPE_NAME`
//! and friends).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedTransaction, XdbcDataType,
};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::query::CATALOG;
use crate::replica::duckdb_type;

const CATALOG_NAME: &str = "ARROW:FLIGHT:SQL:CATALOG_NAME";
const DB_SCHEMA_NAME: &str = "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME";
const TABLE_NAME: &str = "ARROW:FLIGHT:SQL:TABLE_NAME";
const TYPE_NAME: &str = "ARROW:FLIGHT:SQL:TYPE_NAME";
const PRECISION: &str = "ARROW:FLIGHT:SQL:PRECISION";
const SCALE: &str = "ARROW:FLIGHT:SQL:SCALE";
const IS_AUTO_INCREMENT: &str = "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT";
const IS_CASE_SENSITIVE: &str = "ARROW:FLIGHT:SQL:IS_CASE_SENSITIVE";
const IS_READ_ONLY: &str = "ARROW:FLIGHT:SQL:IS_READ_ONLY";
const IS_SEARCHABLE: &str = "ARROW:FLIGHT:SQL:IS_SEARCHABLE";

/// What GetSqlInfo answers. Built once.
pub(crate) fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "airlock");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, true);
        // Into the `artifacts` schema only (tabular artifacts).
        b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(
            SqlInfo::SqlNullOrdering,
            SqlNullOrdering::SqlNullsSortedHigh as i32,
        );
        b.append(SqlInfo::SqlSearchStringEscape, "\\");
        b.append(SqlInfo::SqlSupportsColumnAliasing, true);
        b.append(SqlInfo::SqlNullPlusNullIsNull, true);
        b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
        b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        b.append(SqlInfo::SqlSchemaTerm, "schema");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlCatalogAtStart, true);
        b.append(SqlInfo::SqlSelectForUpdateSupported, false);
        b.append(SqlInfo::SqlStoredProceduresSupported, false);
        b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.append(SqlInfo::SqlBatchUpdatesSupported, false);
        b.append(SqlInfo::SqlSavepointsSupported, false);
        b.append(SqlInfo::SqlNamedParametersSupported, false);
        b.append(SqlInfo::SqlMaxTableNameLength, 63_i64);
        // Every value above is a plain scalar or string the builder accepts.
        b.build()
            .unwrap_or_else(|e| unreachable!("static SqlInfo does not build: {e}"))
    })
}

/// What GetXdbcTypeInfo answers: the DuckDB types a replica column can have.
pub(crate) fn xdbc_type_info() -> &'static XdbcTypeInfoData {
    static INFO: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let types = [
            ("BOOLEAN", XdbcDataType::XdbcBit, None, false),
            ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false),
            ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false),
            ("INTEGER", XdbcDataType::XdbcInteger, Some(10), false),
            ("BIGINT", XdbcDataType::XdbcBigint, Some(19), false),
            ("FLOAT", XdbcDataType::XdbcFloat, Some(7), false),
            ("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false),
            ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false),
            ("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
            ("BLOB", XdbcDataType::XdbcVarbinary, None, false),
            ("DATE", XdbcDataType::XdbcDate, None, false),
            ("TIME", XdbcDataType::XdbcTime, None, false),
            ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, false),
            ("TIMESTAMPTZ", XdbcDataType::XdbcTimestamp, None, false),
            ("INTERVAL", XdbcDataType::XdbcInterval, None, false),
        ];
        for (name, data_type, column_size, case_sensitive) in types {
            let quoted = matches!(
                data_type,
                XdbcDataType::XdbcVarchar
                    | XdbcDataType::XdbcDate
                    | XdbcDataType::XdbcTime
                    | XdbcDataType::XdbcTimestamp
            );
            b.append(XdbcTypeInfo {
                type_name: name.to_string(),
                data_type,
                column_size,
                literal_prefix: quoted.then(|| "'".to_string()),
                literal_suffix: quoted.then(|| "'".to_string()),
                create_params: (data_type == XdbcDataType::XdbcDecimal)
                    .then(|| vec!["precision".to_string(), "scale".to_string()]),
                nullable: Nullable::NullabilityNullable,
                case_sensitive,
                searchable: Searchable::Full,
                unsigned_attribute: column_size.map(|_| false),
                fixed_prec_scale: false,
                auto_increment: Some(false),
                local_type_name: Some(name.to_string()),
                minimum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(0),
                maximum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(38),
                sql_data_type: data_type,
                datetime_subcode: None,
                num_prec_radix: column_size.map(|_| 10),
                interval_precision: None,
            });
        }
        b.build()
            .unwrap_or_else(|e| unreachable!("static type info does not build: {e}"))
    })
}

/// A field with Flight SQL column metadata. `table` is `(schema, table)`
/// when the column belongs to a table.
fn annotate_field(field: &Field, table: Option<(&str, &str)>) -> Field {
    let mut metadata: HashMap<String, String> = field.metadata().clone();
    let data_type = field.data_type();
    let type_name = duckdb_type(field.name(), data_type).unwrap_or_else(|_| data_type.to_string());
    metadata.insert(TYPE_NAME.into(), type_name);
    if let Some((precision, scale)) = precision_scale(data_type) {
        metadata.insert(PRECISION.into(), precision.to_string());
        metadata.insert(SCALE.into(), scale.to_string());
    }
    let is_string = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    metadata.insert(IS_AUTO_INCREMENT.into(), "0".into());
    metadata.insert(
        IS_CASE_SENSITIVE.into(),
        if is_string { "1" } else { "0" }.into(),
    );
    metadata.insert(IS_READ_ONLY.into(), "1".into());
    metadata.insert(IS_SEARCHABLE.into(), "1".into());
    if let Some((schema, table)) = table {
        metadata.insert(CATALOG_NAME.into(), CATALOG.into());
        metadata.insert(DB_SCHEMA_NAME.into(), schema.into());
        metadata.insert(TABLE_NAME.into(), table.into());
    }
    field.clone().with_metadata(metadata)
}

fn precision_scale(data_type: &DataType) -> Option<(u8, i8)> {
    match data_type {
        DataType::Int8 | DataType::UInt8 => Some((3, 0)),
        DataType::Int16 | DataType::UInt16 => Some((5, 0)),
        DataType::Int32 | DataType::UInt32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        DataType::UInt64 => Some((20, 0)),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

/// A table's schema as GetTables returns it.
pub(crate) fn table_schema(schema: &str, table: &str, arrow: &Schema) -> Schema {
    Schema::new_with_metadata(
        arrow
            .fields()
            .iter()
            .map(|f| annotate_field(f, Some((schema, table))))
            .collect::<Vec<_>>(),
        arrow.metadata().clone(),
    )
}

/// A query result schema with column metadata.
pub(crate) fn result_schema(arrow: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        arrow
            .fields()
            .iter()
            .map(|f| annotate_field(f, None))
            .collect::<Vec<_>>(),
        arrow.metadata().clone(),
    ))
}

/// The schema of GetPrimaryKeys.
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// GetPrimaryKeys rows for one table.
pub(crate) fn primary_keys_batch(
    schema: &str,
    table: &str,
    columns: &[String],
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let n = columns.len();
    let key_name = format!("{table}_pkey");
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![CATALOG; n])),
        Arc::new(StringArray::from(vec![schema; n])),
        Arc::new(StringArray::from(vec![table; n])),
        Arc::new(StringArray::from_iter_values(columns)),
        Arc::new(StringArray::from(vec![key_name.as_str(); n])),
        Arc::new(Int32Array::from_iter_values(1..=n as i32)),
    ];
    RecordBatch::try_new(primary_keys_schema(), arrays)
}

/// The schema of GetImportedKeys, GetExportedKeys and GetCrossReference.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Replicas have no foreign keys: an empty answer with the right schema.
pub(crate) fn no_foreign_keys() -> RecordBatch {
    RecordBatch::new_empty(foreign_keys_schema())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_metadata_for_get_tables() {
        let arrow = Schema::new(vec![
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let annotated = table_schema("sales", "orders", &arrow);
        let price = annotated.field(0).metadata();
        assert_eq!(price[TYPE_NAME], "DECIMAL(15,2)");
        assert_eq!(price[PRECISION], "15");
        assert_eq!(price[SCALE], "2");
        assert_eq!(price[TABLE_NAME], "orders");
        assert_eq!(price[DB_SCHEMA_NAME], "sales");
        assert_eq!(price[CATALOG_NAME], CATALOG);
        let name = annotated.field(1).metadata();
        assert_eq!(name[TYPE_NAME], "VARCHAR");
        assert_eq!(name[IS_CASE_SENSITIVE], "1");
        assert!(!name.contains_key(PRECISION));
    }

    #[test]
    fn static_answers_build() {
        let info = sql_info()
            .record_batch([SqlInfo::FlightSqlServerReadOnly as u32])
            .unwrap();
        assert_eq!(info.num_rows(), 1);
        let types = xdbc_type_info().record_batch(None).unwrap();
        assert_eq!(types.num_rows(), 15);
        assert_eq!(no_foreign_keys().num_rows(), 0);
        let pk = primary_keys_batch("s", "t", &["a".into(), "b".into()]).unwrap();
        assert_eq!(pk.num_rows(), 2);
    }
}

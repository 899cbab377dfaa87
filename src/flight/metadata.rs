//! Answers to the Flight SQL metadata commands (catalogs, schemas, tables,
//! table types, SqlInfo, keys, type info). Each is a pair: GetFlightInfo
//! announces the schema with the command itself as the ticket
//! ([`AirlockFlightSql::metadata_info`]), DoGet builds one batch for the
//! caller ([`AirlockFlightSql::metadata_answer`]). Whatever lists tables
//! lists only those the caller's catalog holds.

use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTableTypes,
    CommandGetTables, ProstMessageExt,
};
use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use prost::Message;
use tonic::{Request, Response, Status};

use super::{AirlockFlightSql, DoGetStream, batch_stream, flight_info, schemas, status};
use crate::principal::Principal;
use crate::query::{CATALOG, VisibleTables};
use crate::table_name::{DEFAULT_SCHEMA, TableName};

/// The only table type replicas have.
const TABLE_TYPE: &str = "TABLE";

impl AirlockFlightSql {
    /// GetFlightInfo of a metadata command: authenticate, announce `schema`,
    /// and hand back the command itself as the ticket.
    pub(super) async fn metadata_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        flight_info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// DoGet of a metadata command: authenticate, and answer with the one
    /// batch `answer` builds for the caller.
    pub(super) async fn metadata_answer(
        &self,
        request: Request<Ticket>,
        answer: impl FnOnce(&Principal) -> Result<RecordBatch, Status>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        Ok(batch_stream(answer(&principal)?))
    }

    /// Primary keys are declared at registration; a table the caller cannot
    /// see has none, so the answer never confirms it exists.
    pub(super) async fn primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let schema = query.db_schema.as_deref().unwrap_or(DEFAULT_SCHEMA);
        let columns = match TableName::from_parts(schema, &query.table) {
            Ok(name) if query.catalog.as_deref().is_none_or(|c| c == CATALOG) => {
                self.gateway.actions.primary_key(&principal, &name).await
            }
            _ => vec![],
        };
        let batch =
            schemas::primary_keys_batch(schema, &query.table, &columns).map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }
}

pub(super) fn catalogs(query: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let mut builder: GetCatalogsBuilder = query.into_builder();
    builder.append(CATALOG);
    builder.build().map_err(arrow_status)
}

pub(super) fn db_schemas(
    query: CommandGetDbSchemas,
    visible: &VisibleTables,
) -> Result<RecordBatch, Status> {
    let mut builder: GetDbSchemasBuilder = query.into_builder();
    for schema in visible.schemas() {
        builder.append(CATALOG, schema);
    }
    builder.build().map_err(arrow_status)
}

pub(super) fn tables(
    query: CommandGetTables,
    visible: &VisibleTables,
) -> Result<RecordBatch, Status> {
    let mut builder: GetTablesBuilder = query.into_builder();
    for (schema, table, arrow) in visible.tables() {
        let annotated = schemas::table_schema(schema, table, arrow);
        builder
            .append(CATALOG, schema, table, TABLE_TYPE, &annotated)
            .map_err(arrow_status)?;
    }
    builder.build().map_err(arrow_status)
}

pub(super) fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    builder.append(TABLE_TYPE);
    builder.build().map_err(arrow_status)
}

pub(super) fn arrow_status(e: impl std::fmt::Display) -> Status {
    status::internal(format!("building metadata answer: {e}"))
}

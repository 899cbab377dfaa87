//! The Flight SQL endpoint: protocol in, calls on `auth`, `query` and
//! `actions` out. No business rules live here — only decoding requests,
//! authenticating each call, and encoding answers (schemas, tickets, record
//! batch streams, errors as the gRPC statuses [`crate::status`] classifies).
//!
//! The `FlightSqlService` impl below only routes; each request family lives
//! in a file of its own:
//!
//! ```text
//!  handshake.rs   Basic / bearer → session token
//!  statements.rs  queries and prepared statements: plan, ticket, stream
//!  metadata.rs    catalogs, schemas, tables, SqlInfo, keys, type info
//!  cancel.rs      CancelFlightInfo and the older CancelQuery
//!  actions.rs     DoAction → `actions`, ListActions
//!  artifacts.rs   artifact uploads (DoPut, ADBC ingest) and downloads (DoGet)
//!  schemas.rs     the shapes of answers and column metadata
//!  audited.rs     one audit record per RPC, around all of the above
//! ```

mod actions;
mod artifacts;
mod audited;
mod cancel;
mod handshake;
mod metadata;
mod schemas;
mod statements;
mod ticket;

use std::pin::Pin;

use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::query::QueryError;
use crate::status;

pub use audited::Audited;
use audited::audit_of;

type DoGetStream = <AirlockFlightSql as FlightService>::DoGetStream;
type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// airlock's `FlightSqlService`: Flight SQL in, [`Gateway`] calls out.
#[derive(Debug)]
pub struct AirlockFlightSql {
    gateway: Gateway,
}

impl AirlockFlightSql {
    /// A service answering through `gateway`.
    pub fn new(gateway: Gateway) -> Self {
        Self { gateway }
    }

    /// Authenticates a call from its `authorization` header.
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| {
                v.to_str()
                    .map_err(|_| status::auth(AuthError::MalformedHeader("not ASCII")))
            })
            .transpose()?;
        let principal = self
            .gateway
            .auth
            .authenticate(header)
            .await
            .map_err(status::auth)?;
        tracing::Span::current().record("principal", principal.label());
        if let Some(audit) = audit_of(request) {
            audit.principal(&principal);
        }
        Ok(principal)
    }
}

/// A FlightInfo whose single endpoint redeems `ticket`.
fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| status::internal(format!("encoding schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_ordered(true);
    Ok(Response::new(info))
}

/// Encodes record batches as Flight data. Dictionaries are sent as
/// dictionaries so the stream's schema is exactly the announced one.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .build(batches)
        .map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => status::internal(other.to_string()),
        });
    Box::pin(stream)
}

/// One batch as a DoGet stream.
fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    Response::new(encode(schema, futures::stream::once(async { Ok(batch) })))
}

/// The schema as IPC bytes, as prepared-statement results carry it.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            status::internal(format!("encoding schema: {e}"))
        })?;
    Ok(bytes)
}

/// airlock is read-only; every write path answers the same way.
fn read_only(what: &str) -> Status {
    status::query(QueryError::NotAQuery(what.to_string()))
}

#[tonic::async_trait]
impl FlightSqlService for AirlockFlightSql {
    type FlightService = AirlockFlightSql;

    #[tracing::instrument(skip_all, name = "Handshake", fields(principal, remote = ?request.remote_addr()))]
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        self.handshake(request).await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Statement)", fields(principal))]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.statement_info(query, request).await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Prepared)", fields(principal))]
    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.prepared_info(query, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Statement)", fields(principal))]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run_statement(&ticket.statement_handle, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Prepared)", fields(principal))]
    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.run_statement(&query.prepared_statement_handle, request)
            .await
    }

    #[tracing::instrument(skip_all, name = "CreatePreparedStatement", fields(principal))]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.prepare(query, request).await
    }

    #[tracing::instrument(skip_all, name = "DoPut(PreparedStatementQuery)", fields(principal))]
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.bind_parameters(query, request).await
    }

    #[tracing::instrument(skip_all, name = "ClosePreparedStatement", fields(principal))]
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are self-contained: there is nothing to free.
        self.principal(&request).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Catalogs)", fields(principal))]
    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Catalogs)", fields(principal))]
    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| metadata::catalogs(query))
            .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(DbSchemas)", fields(principal))]
    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(DbSchemas)", fields(principal))]
    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |principal| {
            metadata::db_schemas(query, &self.gateway.query.visible_tables(principal))
        })
        .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Tables)", fields(principal))]
    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Tables)", fields(principal))]
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |principal| {
            metadata::tables(query, &self.gateway.query.visible_tables(principal))
        })
        .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(TableTypes)", fields(principal))]
    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(TableTypes)", fields(principal))]
    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| metadata::table_types(query))
            .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(SqlInfo)", fields(principal))]
    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(schemas::sql_info()).schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(SqlInfo)", fields(principal))]
    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| {
            query
                .into_builder(schemas::sql_info())
                .build()
                .map_err(metadata::arrow_status)
        })
        .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(PrimaryKeys)", fields(principal))]
    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &schemas::primary_keys_schema(), request)
            .await
    }

    #[tracing::instrument(skip_all, name = "DoGet(PrimaryKeys)", fields(principal))]
    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.primary_keys(query, request).await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(ExportedKeys)", fields(principal))]
    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &schemas::foreign_keys_schema(), request)
            .await
    }

    #[tracing::instrument(skip_all, name = "DoGet(ExportedKeys)", fields(principal))]
    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| Ok(schemas::no_foreign_keys()))
            .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(ImportedKeys)", fields(principal))]
    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &schemas::foreign_keys_schema(), request)
            .await
    }

    #[tracing::instrument(skip_all, name = "DoGet(ImportedKeys)", fields(principal))]
    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| Ok(schemas::no_foreign_keys()))
            .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(CrossReference)", fields(principal))]
    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(query, &schemas::foreign_keys_schema(), request)
            .await
    }

    #[tracing::instrument(skip_all, name = "DoGet(CrossReference)", fields(principal))]
    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| Ok(schemas::no_foreign_keys()))
            .await
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(XdbcTypeInfo)", fields(principal))]
    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(schemas::xdbc_type_info()).schema();
        self.metadata_info(query, &schema, request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(XdbcTypeInfo)", fields(principal))]
    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_answer(request, |_| {
            query
                .into_builder(schemas::xdbc_type_info())
                .build()
                .map_err(metadata::arrow_status)
        })
        .await
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(read_only("an update statement"))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(read_only("a prepared update statement"))
    }

    #[tracing::instrument(skip_all, name = "DoPut(StatementIngest)", fields(principal))]
    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.ingest_artifact(command, request).await
    }

    #[tracing::instrument(skip_all, name = "DoPut(Artifact)", fields(principal))]
    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        self.put_artifact(request).await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Artifact)", fields(principal))]
    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.get_artifact(request, message).await
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(read_only("a Substrait plan"))
    }

    #[tracing::instrument(skip_all, name = "CancelQuery", fields(principal))]
    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.cancel_query(query, request).await
    }

    #[tracing::instrument(skip_all, name = "DoAction", fields(principal, action = %request.get_ref().r#type))]
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.action(request).await
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(actions::action_types())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

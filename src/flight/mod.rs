//! The Flight SQL endpoint: protocol in, calls on `auth`, `query` and
//! `actions` out. No business rules live here — only decoding requests,
//! authenticating each call, and encoding answers (schemas, tickets, record
//! batch streams, errors as gRPC statuses via [`status`]).

mod audited;
mod metadata;
mod status;
mod ticket;

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, BasicAuth, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Principal;
use crate::query::{CATALOG, PlannedQuery, QueryError};
use crate::server::App;
use crate::table_name::TableName;
use ticket::StatementHandle;

use crate::audit::AuditHandle;
pub use audited::Audited;
use audited::audit_of;

type DoGetStream = <AirlockFlightSql as FlightService>::DoGetStream;

/// The only table type replicas have.
const TABLE_TYPE: &str = "TABLE";

/// airlock's `FlightSqlService`.
#[derive(Debug)]
pub struct AirlockFlightSql {
    app: Arc<App>,
}

impl AirlockFlightSql {
    /// A service over an opened app.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Authenticates a call from its `authorization` header.
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| {
                v.to_str()
                    .map_err(|_| status::auth(crate::auth::AuthError::MalformedHeader("not ASCII")))
            })
            .transpose()?;
        let principal = self
            .app
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

    /// Plans a statement handle's SQL with its bound parameters, ready to run.
    async fn plan(
        &self,
        principal: &Principal,
        handle: &StatementHandle,
        audit: Option<&AuditHandle>,
    ) -> Result<PlannedQuery, Status> {
        let values = handle.parameter_values().map_err(status::bad_request)?;
        let planned = self
            .app
            .query
            .plan_bound(principal, &handle.sql, values)
            .await;
        audit_planned(audit, &handle.sql, planned.as_ref().ok());
        planned.map_err(status::query)
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

    /// FlightInfo for a metadata command: the ticket is the command itself.
    fn metadata_info(
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        Self::flight_info(schema, command.as_any().encode_to_vec(), descriptor)
    }

    /// Runs a planned query and streams it as Flight data.
    async fn stream_query(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        query_id: &str,
        audit: Option<AuditHandle>,
    ) -> Result<Response<DoGetStream>, Status> {
        let schema = metadata::result_schema(&planned.schema());
        let stream = self
            .app
            .query
            .execute(planned, query_id, principal)
            .await
            .map_err(status::query)?;
        let truncated = stream.truncated();
        let max_rows = stream.max_rows();
        if let Some(audit) = audit {
            audit.columns(stream.columns().to_vec());
            audit.track_result(stream.returned(), Arc::clone(&truncated));
        }
        let labelled = Arc::clone(&schema);
        let batches = stream.map(move |item| match item {
            Ok(batch) => batch.with_schema(Arc::clone(&labelled)).map_err(|e| {
                FlightError::Tonic(Box::new(status::internal(format!("labelling batch: {e}"))))
            }),
            Err(e) => Err(FlightError::Tonic(Box::new(status::query(e)))),
        });
        // The messages of a result's last batch, when the row cap cut it,
        // carry a notice in app_metadata (the flag is set before that batch
        // is yielded, and the encoder sends a batch's messages before
        // asking for the next). Clients that ignore it see fewer rows.
        let notice = truncation_notice(max_rows);
        let data = encode(schema, batches).map_ok(move |mut data| {
            if truncated.load(std::sync::atomic::Ordering::Acquire) {
                data.app_metadata = notice.clone();
            }
            data
        });
        Ok(Response::new(Box::pin(data)))
    }

    /// The visible tables for metadata answers.
    fn tables_of(&self, principal: &Principal) -> crate::query::VisibleTables {
        self.app.query.visible_tables(principal)
    }
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

/// Writes a query's SQL, and when it planned, its tables and policy, into
/// the call's audit record.
fn audit_planned(audit: Option<&AuditHandle>, sql: &str, planned: Option<&PlannedQuery>) {
    if let Some(audit) = audit {
        audit.statement(sql);
        if let Some(planned) = planned {
            audit.tables(planned.tables(), Some(planned.policy().to_string()));
        }
    }
}

/// The app_metadata marking a result cut at the row cap:
/// `{"airlock": {"truncated": true, "max_rows": N}}`.
fn truncation_notice(max_rows: Option<u64>) -> bytes::Bytes {
    serde_json::json!({"airlock": {"truncated": true, "max_rows": max_rows}})
        .to_string()
        .into()
}

/// One batch as a DoGet stream.
fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    Response::new(encode(schema, futures::stream::once(async { Ok(batch) })))
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    status::internal(format!("building metadata answer: {e}"))
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
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let audit = audit_of(&request);
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header = match header {
            Some(h) => Some(h),
            // Older clients put BasicAuth in the first handshake payload.
            None => {
                let mut stream = request.into_inner();
                match stream.next().await {
                    Some(Ok(first)) => BasicAuth::decode(first.payload)
                        .ok()
                        .filter(|b| !b.username.is_empty())
                        .map(|b| basic_header(&b.username, &b.password)),
                    _ => None,
                }
            }
        };
        let outcome = self.app.auth.handshake(header.as_deref()).await;
        if let Some(audit) = &audit {
            match &outcome {
                Ok((principal, _)) => audit.principal(principal),
                Err(_) => {
                    let tried = header
                        .as_deref()
                        .and_then(|h| crate::auth::parse_authorization(h).ok());
                    if let Some(user) = tried.as_ref().and_then(|c| c.user()) {
                        audit.attempted_user(user);
                    }
                }
            }
        }
        let (principal, token) = outcome.map_err(status::auth)?;
        tracing::Span::current().record("principal", principal.label());
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| status::internal("token is not a valid header value"))?;
        let output = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        })]);
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(output));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Statement)", fields(principal))]
    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::new(&query.query);
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode_to_vec().into(),
        };
        let schema = metadata::result_schema(&planned.schema());
        Self::flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Prepared)", fields(principal))]
    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::decode_from(&query.prepared_statement_handle)
            .map_err(status::bad_request)?;
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        // Each execution gets its own query id, for CancelFlightInfo.
        let execution = StatementHandle {
            query_id: uuid::Uuid::new_v4().to_string(),
            ..handle
        };
        let ticket = CommandPreparedStatementQuery {
            prepared_statement_handle: execution.encode_to_vec().into(),
        };
        let schema = metadata::result_schema(&planned.schema());
        Self::flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "DoGet(Statement)", fields(principal))]
    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let handle =
            StatementHandle::decode_from(&ticket.statement_handle).map_err(status::bad_request)?;
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        self.stream_query(&principal, planned, &handle.query_id, audit_of(&request))
            .await
    }

    #[tracing::instrument(skip_all, name = "DoGet(Prepared)", fields(principal))]
    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::decode_from(&query.prepared_statement_handle)
            .map_err(status::bad_request)?;
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        self.stream_query(&principal, planned, &handle.query_id, audit_of(&request))
            .await
    }

    #[tracing::instrument(skip_all, name = "CreatePreparedStatement", fields(principal))]
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::new(&query.query);
        let planned = self.app.query.plan(&principal, &handle.sql).await;
        audit_planned(
            audit_of(&request).as_ref(),
            &handle.sql,
            planned.as_ref().ok(),
        );
        let planned = planned.map_err(status::query)?;
        let dataset = metadata::result_schema(&planned.schema());
        let parameters = planned.parameter_schema().map_err(status::query)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    #[tracing::instrument(skip_all, name = "DoPut(PreparedStatementQuery)", fields(principal))]
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::decode_from(&query.prepared_statement_handle)
            .map_err(status::bad_request)?;
        let audit = audit_of(&request);
        // The stream itself, not into_inner(): its first message (already
        // peeked by the dispatcher) carries the parameter schema.
        let data = request.into_inner().map_err(FlightError::from);
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let read_error = |e: FlightError| status::bad_request(format!("reading parameters: {e}"));
        // One row of parameters is all a query takes: read one batch, and
        // refuse a second instead of buffering whatever a client sends.
        let batch = batches
            .try_next()
            .await
            .map_err(read_error)?
            .ok_or_else(|| status::bad_request("DoPut carried no parameter rows"))?;
        if batches.try_next().await.map_err(read_error)?.is_some() {
            return Err(status::bad_request(
                "bind exactly one row of parameters to a query, in one batch",
            ));
        }
        let bound = handle
            .with_parameters(&batch)
            .map_err(status::bad_request)?;
        // Bind now so a wrong count or type is reported at bind time.
        self.plan(&principal, &bound, audit.as_ref()).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode_to_vec().into()),
        })
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
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(Catalogs)", fields(principal))]
    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder: GetCatalogsBuilder = query.into_builder();
        builder.append(CATALOG);
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(DbSchemas)", fields(principal))]
    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(DbSchemas)", fields(principal))]
    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut builder: GetDbSchemasBuilder = query.into_builder();
        for schema in self.tables_of(&principal).schemas() {
            builder.append(CATALOG, schema);
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(Tables)", fields(principal))]
    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(Tables)", fields(principal))]
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let mut builder: GetTablesBuilder = query.into_builder();
        for (schema, table, arrow) in self.tables_of(&principal).tables() {
            let annotated = metadata::table_schema(schema, table, arrow);
            builder
                .append(CATALOG, schema, table, TABLE_TYPE, &annotated)
                .map_err(arrow_status)?;
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(TableTypes)", fields(principal))]
    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(TableTypes)", fields(principal))]
    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append(TABLE_TYPE);
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(SqlInfo)", fields(principal))]
    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.clone().into_builder(metadata::sql_info()).schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(SqlInfo)", fields(principal))]
    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let batch = query
            .into_builder(metadata::sql_info())
            .build()
            .map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(PrimaryKeys)", fields(principal))]
    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        Self::metadata_info(
            query,
            &metadata::primary_keys_schema(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "DoGet(PrimaryKeys)", fields(principal))]
    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let schema = query
            .db_schema
            .as_deref()
            .unwrap_or(crate::table_name::DEFAULT_SCHEMA);
        let columns = match TableName::from_parts(schema, &query.table) {
            Ok(name) if query.catalog.as_deref().is_none_or(|c| c == CATALOG) => {
                self.app.actions.primary_key(&principal, &name).await
            }
            _ => vec![],
        };
        let batch =
            metadata::primary_keys_batch(schema, &query.table, &columns).map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(ExportedKeys)", fields(principal))]
    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        Self::metadata_info(
            query,
            &metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "DoGet(ExportedKeys)", fields(principal))]
    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(batch_stream(metadata::no_foreign_keys()))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(ImportedKeys)", fields(principal))]
    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        Self::metadata_info(
            query,
            &metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "DoGet(ImportedKeys)", fields(principal))]
    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(batch_stream(metadata::no_foreign_keys()))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(CrossReference)", fields(principal))]
    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        Self::metadata_info(
            query,
            &metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    #[tracing::instrument(skip_all, name = "DoGet(CrossReference)", fields(principal))]
    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        Ok(batch_stream(metadata::no_foreign_keys()))
    }

    #[tracing::instrument(skip_all, name = "GetFlightInfo(XdbcTypeInfo)", fields(principal))]
    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        let schema = query.into_builder(metadata::xdbc_type_info()).schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    #[tracing::instrument(skip_all, name = "DoGet(XdbcTypeInfo)", fields(principal))]
    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.principal(&request).await?;
        let batch = query
            .into_builder(metadata::xdbc_type_info())
            .build()
            .map_err(arrow_status)?;
        Ok(batch_stream(batch))
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

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.principal(&request).await?;
        Err(read_only("bulk ingestion"))
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
        let principal = self.principal(&request).await?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| status::bad_request(format!("malformed FlightInfo: {e}")))?;
        let outcome = self.cancel(&principal, &info)?;
        // The deprecated CancelQuery result uses the same numbering.
        Ok(ActionCancelQueryResult {
            result: outcome as i32,
        })
    }

    #[tracing::instrument(skip_all, name = "DoAction", fields(principal, action = %request.get_ref().r#type))]
    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = self.principal(&request).await?;
        let action = request.into_inner();
        let body: Vec<u8> = if action.r#type == "CancelFlightInfo" {
            let cancel = CancelFlightInfoRequest::decode(action.body).map_err(|e| {
                status::bad_request(format!("malformed CancelFlightInfoRequest: {e}"))
            })?;
            let info = cancel
                .info
                .ok_or_else(|| status::bad_request("CancelFlightInfoRequest has no FlightInfo"))?;
            let outcome = self.cancel(&principal, &info)?;
            CancelFlightInfoResult {
                status: outcome as i32,
            }
            .encode_to_vec()
        } else {
            let value = self
                .app
                .actions
                .run(&principal, &action.r#type, &action.body)
                .await
                .map_err(status::action)?;
            serde_json::to_vec(&value).map_err(|e| status::internal(e.to_string()))?
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let mut actions: Vec<Result<ActionType, Status>> = crate::actions::Action::ALL
            .iter()
            .map(|a| {
                Ok(ActionType {
                    r#type: a.name().to_string(),
                    description: a.description().to_string(),
                })
            })
            .collect();
        actions.push(Ok(ActionType {
            r#type: "CancelFlightInfo".to_string(),
            description: "Cancel a running query. Body: CancelFlightInfoRequest (protobuf) with the query's FlightInfo."
                .to_string(),
        }));
        Some(actions)
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl AirlockFlightSql {
    /// Cancels the query a FlightInfo's ticket refers to.
    fn cancel(&self, principal: &Principal, info: &FlightInfo) -> Result<CancelStatus, Status> {
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.as_ref())
            .ok_or_else(|| status::bad_request("the FlightInfo has no ticket"))?;
        let any = Any::decode(ticket.ticket.clone())
            .map_err(|e| status::bad_request(format!("malformed ticket: {e}")))?;
        let handle_bytes = if let Ok(Some(t)) = any.unpack::<TicketStatementQuery>() {
            t.statement_handle
        } else if let Ok(Some(p)) = any.unpack::<CommandPreparedStatementQuery>() {
            p.prepared_statement_handle
        } else {
            return Ok(CancelStatus::NotCancellable);
        };
        let handle = StatementHandle::decode_from(&handle_bytes).map_err(status::bad_request)?;
        if self.app.query.cancel(&handle.query_id, principal) {
            Ok(CancelStatus::Cancelled)
        } else {
            // The spec asks for NOT_FOUND when the query is not known.
            Err(status::query(QueryError::NotRunning(handle.query_id)))
        }
    }
}

/// `Basic base64(user:password)`, for handshake payload credentials.
fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

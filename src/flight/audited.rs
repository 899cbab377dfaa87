//! Every Flight call, audited: a `FlightService` wrapper that opens an
//! [`AuditHandle`] per call (in the request's extensions, where handlers
//! add who and what), and finishes it with the final status and the bytes
//! sent — when a unary call returns, or when a response stream ends, fails
//! or is dropped by a client that went away.

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::Stream;
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::audit::{AuditHandle, AuditLog, AuditedStream};
use crate::redact;
use crate::telemetry::RequestLabels;

/// The handle of the call `request` belongs to, if it is audited.
pub(crate) fn audit_of<T>(request: &Request<T>) -> Option<AuditHandle> {
    request.extensions().get::<AuditHandle>().cloned()
}

/// Wraps a Flight service so each of its calls is audited.
pub struct Audited<S> {
    inner: S,
    log: Arc<AuditLog>,
}

impl<S> Audited<S> {
    /// Audits `inner`'s calls into `log`.
    pub fn new(inner: S, log: Arc<AuditLog>) -> Self {
        Self { inner, log }
    }

    fn begin<T>(
        &self,
        request: &mut Request<T>,
        name: String,
        method: &'static str,
        operation: &str,
    ) -> AuditHandle {
        let remote = request.remote_addr().map(|a| a.to_string());
        let labels = RequestLabels::new("flight", method, operation);
        let handle = AuditHandle::begin(Arc::clone(&self.log), name, labels, remote);
        request.extensions_mut().insert(handle.clone());
        handle
    }

    /// A unary call on a descriptor, recorded as `<rpc> <command>`.
    async fn unary<T: Message, F>(
        &self,
        rpc: &'static str,
        mut request: Request<FlightDescriptor>,
        call: impl FnOnce(Request<FlightDescriptor>) -> F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        let command = command_name(&request.get_ref().cmd);
        let name = format!("{rpc} {command}");
        let handle = self.begin(&mut request, name, rpc, known_command(&command));
        let result = call(request).await;
        match &result {
            Ok(response) => handle.finish(Code::Ok, "", response.get_ref().encoded_len() as u64),
            Err(status) => handle.finish(status.code(), status.message(), 0),
        }
        result
    }
}

/// The commands metrics count by name; any other is `other` (the type
/// URL is the client's to choose, and labels must stay few).
const KNOWN_COMMANDS: &[&str] = &[
    "CommandStatementQuery",
    "CommandPreparedStatementQuery",
    "TicketStatementQuery",
    "CommandGetCatalogs",
    "CommandGetDbSchemas",
    "CommandGetTables",
    "CommandGetTableTypes",
    "CommandGetSqlInfo",
    "CommandGetPrimaryKeys",
    "CommandGetExportedKeys",
    "CommandGetImportedKeys",
    "CommandGetCrossReference",
    "CommandGetXdbcTypeInfo",
    "CommandStatementUpdate",
    "CommandPreparedStatementUpdate",
    "CommandStatementIngest",
    "CommandStatementSubstraitPlan",
    "ArtifactTicket",
];

fn known_command(command: &str) -> &str {
    if KNOWN_COMMANDS.contains(&command) {
        command
    } else {
        "other"
    }
}

/// The Flight SQL command a descriptor or ticket carries, by its type name
/// (`CommandStatementQuery`, `CommandGetTables`, …).
fn command_name(bytes: &[u8]) -> String {
    arrow_flight::sql::Any::decode(bytes)
        .ok()
        .and_then(|any| any.type_url.rsplit(['.', '/']).next().map(str::to_string))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown command".into())
}

fn finish_stream<T, St>(
    handle: AuditHandle,
    result: Result<Response<St>, Status>,
) -> Result<Response<BoxStream<'static, Result<T, Status>>>, Status>
where
    T: Message + Send + 'static,
    St: Stream<Item = Result<T, Status>> + Send + 'static,
{
    match result {
        Ok(response) => {
            let (metadata, stream, extensions) = response.into_parts();
            let audited: BoxStream<'static, Result<T, Status>> =
                Box::pin(AuditedStream::new(stream, handle, T::encoded_len));
            Ok(Response::from_parts(metadata, audited, extensions))
        }
        Err(status) => {
            handle.finish(status.code(), status.message(), 0);
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl<S: FlightService> FlightService for Audited<S> {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        mut request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let handle = self.begin(&mut request, "Handshake".into(), "Handshake", "");
        finish_stream(handle, self.inner.handshake(request).await)
    }

    async fn list_flights(
        &self,
        mut request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let handle = self.begin(&mut request, "ListFlights".into(), "ListFlights", "");
        finish_stream(handle, self.inner.list_flights(request).await)
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.unary("GetFlightInfo", request, |r| self.inner.get_flight_info(r))
            .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.unary("PollFlightInfo", request, |r| {
            self.inner.poll_flight_info(r)
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.unary("GetSchema", request, |r| self.inner.get_schema(r))
            .await
    }

    async fn do_get(
        &self,
        mut request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let command = command_name(&request.get_ref().ticket);
        let name = format!("DoGet {command}");
        let handle = self.begin(&mut request, name, "DoGet", known_command(&command));
        finish_stream(handle, self.inner.do_get(request).await)
    }

    async fn do_put(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let handle = self.begin(&mut request, "DoPut".into(), "DoPut", "");
        finish_stream(handle, self.inner.do_put(request).await)
    }

    async fn do_exchange(
        &self,
        mut request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let handle = self.begin(&mut request, "DoExchange".into(), "DoExchange", "");
        finish_stream(handle, self.inner.do_exchange(request).await)
    }

    async fn do_action(
        &self,
        mut request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.get_ref();
        let name = format!("DoAction {}", action.r#type);
        let operation = crate::gateway::operation_label(&action.r#type).to_string();
        let body = redact::json_body(&action.body);
        let handle = self.begin(&mut request, name, "DoAction", &operation);
        if let Some(body) = body {
            handle.statement(body);
        }
        finish_stream(handle, self.inner.do_action(request).await)
    }

    async fn list_actions(
        &self,
        mut request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let handle = self.begin(&mut request, "ListActions".into(), "ListActions", "");
        finish_stream(handle, self.inner.list_actions(request).await)
    }
}

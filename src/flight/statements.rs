//! Queries and prepared statements: plan (which checks the statement and
//! the caller's grants), answer with a schema and a self-contained ticket,
//! and stream the result when the ticket is redeemed.

use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::audited::audit_of;
use super::ticket::StatementHandle;
use super::{AirlockFlightSql, DoGetStream, encode, flight_info, schema_bytes, schemas, status};
use crate::audit::AuditHandle;
use crate::principal::Principal;
use crate::query::PlannedQuery;

impl AirlockFlightSql {
    pub(super) async fn statement_info(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(&request).await?;
        let mut handle = StatementHandle::new(&query.query);
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        handle.epochs = self.gateway.epochs(&planned);
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode_to_vec().into(),
        };
        let schema = schemas::result_schema(&planned.schema());
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    pub(super) async fn prepared_info(
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
            epochs: self.gateway.epochs(&planned),
            ..handle
        };
        let ticket = CommandPreparedStatementQuery {
            prepared_statement_handle: execution.encode_to_vec().into(),
        };
        let schema = schemas::result_schema(&planned.schema());
        flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// DoGet of a statement or prepared-statement ticket: both carry a
    /// [`StatementHandle`].
    pub(super) async fn run_statement(
        &self,
        handle: &[u8],
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::decode_from(handle).map_err(status::bad_request)?;
        let behind = self.gateway.require_epochs(&handle.epochs).await.err();
        // Planned even when behind: a table that is gone is NOT_FOUND, not
        // a reason to retry.
        let planned = self
            .plan(&principal, &handle, audit_of(&request).as_ref())
            .await?;
        if let Some(behind) = behind {
            return Err(behind);
        }
        self.stream_query(&principal, planned, &handle.query_id, audit_of(&request))
            .await
    }

    pub(super) async fn prepare(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        let handle = StatementHandle::new(&query.query);
        let planned = self.gateway.query.plan(&principal, &handle.sql).await;
        crate::gateway::audit_planned(
            audit_of(&request).as_ref(),
            &handle.sql,
            planned.as_ref().ok(),
        );
        let planned = planned.map_err(status::query)?;
        let dataset = schemas::result_schema(&planned.schema());
        let parameters = planned.parameter_schema().map_err(status::query)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode_to_vec().into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    pub(super) async fn bind_parameters(
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

    /// Plans a statement handle's SQL with its bound parameters, ready to run.
    async fn plan(
        &self,
        principal: &Principal,
        handle: &StatementHandle,
        audit: Option<&AuditHandle>,
    ) -> Result<PlannedQuery, Status> {
        let values = handle.parameter_values().map_err(status::bad_request)?;
        self.gateway
            .plan(principal, &handle.sql, values, audit)
            .await
    }

    /// Runs a planned query and streams it as Flight data.
    async fn stream_query(
        &self,
        principal: &Principal,
        planned: PlannedQuery,
        query_id: &str,
        audit: Option<AuditHandle>,
    ) -> Result<Response<DoGetStream>, Status> {
        let schema = schemas::result_schema(&planned.schema());
        let stream = self
            .gateway
            .execute(principal, planned, query_id, audit.as_ref())
            .await?;
        let truncated = stream.truncated();
        let max_rows = stream.max_rows();
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
}

/// The app_metadata marking a result cut at the row cap:
/// `{"airlock": {"truncated": true, "max_rows": N}}`.
fn truncation_notice(max_rows: Option<u64>) -> bytes::Bytes {
    serde_json::json!({"airlock": {"truncated": true, "max_rows": max_rows}})
        .to_string()
        .into()
}

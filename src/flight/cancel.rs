//! Cancelling a running query: `CancelFlightInfo` (an action whose body is a
//! `CancelFlightInfoRequest`) and the deprecated `CancelQuery`. Both name
//! the query by the ticket of its FlightInfo; only its principal (or an
//! admin) may cancel it.

use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, Any, CommandPreparedStatementQuery,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use prost::Message;
use tonic::{Request, Status};

use super::ticket::StatementHandle;
use super::{AirlockFlightSql, status};
use crate::principal::Principal;
use crate::query::QueryError;

/// The action type of the Flight RPC's cancel.
pub(super) const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

impl AirlockFlightSql {
    pub(super) async fn cancel_query(
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

    /// The body of a `CancelFlightInfo` action's result.
    pub(super) fn cancel_flight_info(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Vec<u8>, Status> {
        let cancel = CancelFlightInfoRequest::decode(body)
            .map_err(|e| status::bad_request(format!("malformed CancelFlightInfoRequest: {e}")))?;
        let info = cancel
            .info
            .ok_or_else(|| status::bad_request("CancelFlightInfoRequest has no FlightInfo"))?;
        let outcome = self.cancel(principal, &info)?;
        Ok(CancelFlightInfoResult {
            status: outcome as i32,
        }
        .encode_to_vec())
    }

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
        if self.gateway.query.cancel(&handle.query_id, principal) {
            Ok(CancelStatus::Cancelled)
        } else {
            // The spec asks for NOT_FOUND when the query is not known.
            Err(status::query(QueryError::NotRunning(handle.query_id)))
        }
    }
}

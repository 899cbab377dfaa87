//! DoAction and ListActions: JSON actions go to `actions` (which decides
//! who may run what); `CancelFlightInfo` goes to [`super::cancel`].

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{Action, ActionType};
use tonic::{Request, Response, Status};

use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use base64::Engine;
use prost::Message;

use super::audited::audit_of;
use super::cancel::CANCEL_FLIGHT_INFO;
use super::ticket::StatementHandle;
use super::{AirlockFlightSql, status};
use crate::actions::Answer;

impl AirlockFlightSql {
    pub(super) async fn action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let principal = self.principal(&request).await?;
        let audit = audit_of(&request);
        let action = request.into_inner();
        let body: Vec<u8> = if action.r#type == CANCEL_FLIGHT_INFO {
            self.cancel_flight_info(&principal, &action.body)?
        } else {
            let value = match self
                .gateway
                .action(&principal, &action.r#type, &action.body, audit.as_ref())
                .await?
            {
                Answer::Json(value) => value,
                // Rows come the Flight way: a ticket the caller redeems
                // with DoGet, exactly like a statement's.
                Answer::Query { sql, mut answer } => {
                    let ticket = TicketStatementQuery {
                        statement_handle: StatementHandle::new(&sql).encode_to_vec().into(),
                    };
                    answer["ticket"] = base64::engine::general_purpose::STANDARD
                        .encode(ticket.as_any().encode_to_vec())
                        .into();
                    answer
                }
            };
            serde_json::to_vec(&value).map_err(|e| status::internal(e.to_string()))?
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }
}

/// What ListActions shows: every JSON action, and CancelFlightInfo.
pub(super) fn action_types() -> Vec<Result<ActionType, Status>> {
    let mut types: Vec<Result<ActionType, Status>> = crate::actions::Action::ALL
        .iter()
        .map(|a| {
            Ok(ActionType {
                r#type: a.name().to_string(),
                description: a.description().to_string(),
            })
        })
        .collect();
    types.push(Ok(ActionType {
        r#type: CANCEL_FLIGHT_INFO.to_string(),
        description:
            "Cancel a running query. Body: CancelFlightInfoRequest (protobuf) with the query's FlightInfo."
                .to_string(),
    }));
    types
}

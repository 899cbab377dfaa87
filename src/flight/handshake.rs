//! The Flight handshake: Basic `admin:<password>` (or a token) in, a bearer
//! token out, in both the `authorization` response header (ADBC's Go driver
//! reads it there) and the response payload.

use arrow_flight::{BasicAuth, HandshakeRequest, HandshakeResponse};
use futures::StreamExt;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::audited::audit_of;
use super::{AirlockFlightSql, HandshakeStream, status};
use crate::auth::parse_authorization;

impl AirlockFlightSql {
    pub(super) async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
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
                        .map(|b| crate::auth::basic_authorization(&b.username, &b.password)),
                    _ => None,
                }
            }
        };
        let outcome = self.gateway.auth.handshake(header.as_deref()).await;
        if let Some(audit) = &audit {
            match &outcome {
                Ok((principal, _)) => audit.principal(principal),
                Err(_) => {
                    let tried = header.as_deref().and_then(|h| parse_authorization(h).ok());
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
        let mut response: Response<HandshakeStream> = Response::new(Box::pin(output));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }
}

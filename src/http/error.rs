//! A failed HTTP request: the [`Status`] every front end shares (see
//! [`crate::status`]) as an HTTP status and a JSON body carrying the same
//! code and message a Flight client reads:
//! `{"code": "PERMISSION_DENIED", "message": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::{Code, Status};

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

/// The JSON body of an error answer.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    /// The canonical code, as Flight clients see it (`INVALID_ARGUMENT`,
    /// `UNAUTHENTICATED`, `PERMISSION_DENIED`, `NOT_FOUND`, …).
    pub(crate) code: &'static str,
    /// What went wrong and what to do about it.
    pub(crate) message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = http_status(self.0.code());
        let body = ErrorBody {
            code,
            message: self.0.message().to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme to authenticate with.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"airlock\""),
            );
        }
        response
    }
}

/// `status` as an HTTP error answer (for routes mounted beside the API,
/// such as `/mcp`).
pub(crate) fn error_response(status: Status) -> Response {
    ApiError(status).into_response()
}

/// The HTTP status and the name of a canonical code, as `google.rpc.Code`
/// maps them to HTTP.
pub(crate) fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "OK"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        // 499 "client closed request": the query was cancelled.
        Code::Cancelled => (client_closed(), "CANCELLED"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::Unauthenticated).0, 401);
        assert_eq!(http_status(Code::PermissionDenied).0, 403);
        assert_eq!(http_status(Code::NotFound).0, 404);
        assert_eq!(http_status(Code::ResourceExhausted).0, 429);
        assert_eq!(http_status(Code::Cancelled).0, 499);
        assert_eq!(http_status(Code::InvalidArgument).1, "INVALID_ARGUMENT");
    }
}

//! Every airlock error is classified here, and only here: a canonical
//! code (gRPC's, which `google.rpc.Code` and HTTP APIs share) and the
//! message the caller reads. Flight sends the `Status` as it is; the HTTP
//! and MCP front ends translate its code (`http::error`), so one request
//! fails the same way on every front end.
//!
//! The matches are exhaustive on purpose (no `_ =>`): a new error variant
//! does not compile until someone decides which status it gets. Errors the
//! caller caused (bad SQL, unknown table, bad JSON) keep their message, since
//! it tells the caller what to fix; server-side failures are logged with
//! their detail and reach the client as a short message, capped in length.

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;
use tonic::{Code, Status};

use crate::actions::ActionError;
use crate::auth::AuthError;
use crate::context::ContextError;
use crate::jobs::JobError;
use crate::llm::LlmError;
use crate::meta::MetaError;
use crate::nl::NlError;
use crate::policy::PolicyError;
use crate::query::QueryError;
use crate::replica::ReplicaError;
use crate::sync::{ConnectionError, SourceError, SyncError};
use crate::table_name::TableNameError;
use crate::tools::artifacts::ArtifactError;
use crate::tools::export::ExportError;
use crate::tools::sample::SampleError;

/// Longest message sent to a client.
const MAX_MESSAGE: usize = 2000;

fn status(code: Code, message: impl Into<String>) -> Status {
    let mut message: String = message.into();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    match code {
        Code::Internal | Code::Unavailable | Code::Unknown | Code::DataLoss => {
            tracing::warn!(code = ?code, %message, "server error");
        }
        _ => tracing::info!(code = ?code, %message, "request refused"),
    }
    Status::new(code, message)
}

/// Status for authentication and token-rule errors.
pub(crate) fn auth(error: AuthError) -> Status {
    let code = match &error {
        AuthError::MissingCredentials
        | AuthError::MalformedHeader(_)
        | AuthError::BadPassword
        | AuthError::PasswordOutsideHandshake
        | AuthError::InvalidToken
        | AuthError::Expired
        | AuthError::Revoked
        | AuthError::UnknownToken => Code::Unauthenticated,
        AuthError::Forbidden(_) | AuthError::NotAdmin(_) => Code::PermissionDenied,
        AuthError::InvalidRequest(_) => Code::InvalidArgument,
        AuthError::NotFound(_) => Code::NotFound,
        AuthError::Meta(e) => return meta(e),
        AuthError::Internal(_) => Code::Internal,
        AuthError::Unconfirmed { .. } => Code::Unavailable,
    };
    status(code, error.to_string())
}

fn meta(error: &MetaError) -> Status {
    let code = match error {
        MetaError::Open(_)
        | MetaError::Store(_)
        | MetaError::Corrupt { .. }
        | MetaError::Task(_) => Code::Internal,
        // Another node writes now; the caller may retry (on any node).
        MetaError::Postgres(_) | MetaError::Fenced { .. } => Code::Unavailable,
        // A concurrent writer won; the caller may read again and retry.
        MetaError::Conflict { .. } => Code::Aborted,
    };
    status(code, error.to_string())
}

/// Status for query errors.
pub(crate) fn query(error: QueryError) -> Status {
    let code = match &error {
        QueryError::TooLong { .. }
        | QueryError::TooDeep(_)
        | QueryError::Empty
        | QueryError::Syntax(_)
        | QueryError::MultipleStatements(_)
        | QueryError::Parameters(_)
        | QueryError::Sample(_) => Code::InvalidArgument,
        QueryError::NotAQuery(_) | QueryError::TableFunction(_) => Code::PermissionDenied,
        QueryError::UnknownTable(_) | QueryError::NotRunning(_) => Code::NotFound,
        QueryError::Plan(e) | QueryError::Execution(e) => datafusion_code(e),
        QueryError::Timeout(_) => Code::DeadlineExceeded,
        QueryError::Cancelled => Code::Cancelled,
        QueryError::Overloaded(_) => Code::ResourceExhausted,
        QueryError::Internal(_) => Code::Internal,
        // The shared store is down: worth a retry (UNAVAILABLE).
        QueryError::SharedLimits(_) => Code::Unavailable,
    };
    status(code, error.to_string())
}

/// Who is at fault in a DataFusion error decides its code.
fn datafusion_code(error: &DataFusionError) -> Code {
    match error.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_) => Code::InvalidArgument,
        DataFusionError::NotImplemented(_) => Code::Unimplemented,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        // Execution errors DataFusion raises are about the data the query
        // touched: division by zero, failed casts, overflow.
        DataFusionError::Execution(_) => Code::InvalidArgument,
        DataFusionError::ArrowError(e, _) => arrow_code(e),
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_)
        | DataFusionError::External(_)
        // A task that panicked or was lost.
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Context(..)
        | DataFusionError::Shared(_)
        | DataFusionError::Collection(_)
        | DataFusionError::Diagnostic(..)
        | DataFusionError::Ffi(_) => Code::Internal,
    }
}

fn arrow_code(error: &ArrowError) -> Code {
    match error {
        ArrowError::DivideByZero
        | ArrowError::CastError(_)
        | ArrowError::ArithmeticOverflow(_)
        | ArrowError::ComputeError(_)
        | ArrowError::ParseError(_)
        | ArrowError::InvalidArgumentError(_) => Code::InvalidArgument,
        ArrowError::MemoryError(_) => Code::ResourceExhausted,
        ArrowError::NotYetImplemented(_) => Code::Unimplemented,
        ArrowError::ExternalError(_)
        | ArrowError::SchemaError(_)
        | ArrowError::CsvError(_)
        | ArrowError::JsonError(_)
        | ArrowError::AvroError(_)
        | ArrowError::ParquetError(_)
        | ArrowError::IoError(..)
        | ArrowError::IpcError(_)
        | ArrowError::CDataInterface(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError
        | ArrowError::OffsetOverflowError(_) => Code::Internal,
    }
}

/// Status for action errors.
pub(crate) fn action(error: ActionError) -> Status {
    match error {
        ActionError::Unknown(_) => status(Code::NotFound, error.to_string()),
        ActionError::BadRequest { .. } => status(Code::InvalidArgument, error.to_string()),
        ActionError::Auth(e) => auth(e),
        ActionError::Sync(e) => sync(e),
        ActionError::Policy(e) => policy(e),
        ActionError::Query(e) => query(e),
        ActionError::Artifact(e) => artifact(e),
        ActionError::Export(e) => match e {
            ExportError::Query(e) => query(e),
            ExportError::Artifact(e) => artifact(e),
            ExportError::Job(e) => job(e),
        },
        ActionError::Job(e) => job(e),
        ActionError::Context(e) => context(e),
        ActionError::Nl(e) => nl(e),
        ActionError::Sample(e) => match e {
            SampleError::BadRequest(_) => status(Code::InvalidArgument, e.to_string()),
            SampleError::UnknownTable(_) => status(Code::NotFound, e.to_string()),
        },
        ActionError::Internal { .. } => status(Code::Internal, error.to_string()),
    }
}

/// Status for context errors. A record the caller may not see is
/// NOT_FOUND, like one that does not exist.
pub(crate) fn context(error: ContextError) -> Status {
    let code = match error {
        ContextError::Query(e) => return query(e),
        ContextError::Meta(e) => return meta(&e),
        ContextError::Job(e) => return job(e),
        ContextError::Internal(_) => Code::Internal,
        ContextError::BadRequest(_) => Code::InvalidArgument,
        ContextError::NotFound(_) => Code::NotFound,
        ContextError::Forbidden(_) => Code::PermissionDenied,
    };
    status(code, error.to_string())
}

/// Status for `nl.*` and `finetune.*` errors.
pub(crate) fn nl(error: NlError) -> Status {
    let code = match error {
        NlError::Llm(e) => return llm(&e),
        NlError::Context(e) => return context(e),
        NlError::Query(e) => return query(e),
        NlError::Artifact(e) => return artifact(e),
        NlError::Job(e) => return job(e),
        NlError::Meta(e) => return meta(&e),
        NlError::BadRequest(_) => Code::InvalidArgument,
        NlError::NotFound(_) => Code::NotFound,
    };
    status(code, error.to_string())
}

/// Status for model provider errors: the provider's trouble is
/// UNAVAILABLE (worth retrying) or FAILED_PRECONDITION (fix the config).
fn llm(error: &LlmError) -> Status {
    let code = match error {
        LlmError::NotConfigured | LlmError::Config(_) => Code::FailedPrecondition,
        LlmError::UnknownProvider { .. } => Code::InvalidArgument,
        LlmError::Timeout { .. } => Code::DeadlineExceeded,
        LlmError::RateLimited { .. } => Code::ResourceExhausted,
        LlmError::Refused { .. } => Code::FailedPrecondition,
        LlmError::Unavailable { .. } | LlmError::Malformed { .. } => Code::Unavailable,
    };
    status(code, error.to_string())
}

/// Status for job errors.
pub(crate) fn job(error: JobError) -> Status {
    let code = match &error {
        JobError::NotFound(_) => Code::NotFound,
        JobError::Ended { .. } => Code::FailedPrecondition,
        JobError::BadRequest(_) => Code::InvalidArgument,
        JobError::Task(_) => Code::Internal,
        JobError::Meta(e) => return meta(e),
    };
    status(code, error.to_string())
}

/// Status for artifact errors. Every "not yours to see" is NOT_FOUND, the
/// same as for what does not exist.
pub(crate) fn artifact(error: ArtifactError) -> Status {
    let code = match &error {
        ArtifactError::BadName(_) | ArtifactError::BadRequest(_) | ArtifactError::Input(_) => {
            Code::InvalidArgument
        }
        ArtifactError::NotFound(_) => Code::NotFound,
        ArtifactError::NameTaken(_) | ArtifactError::Exists(_) => Code::AlreadyExists,
        ArtifactError::TooLarge { .. } | ArtifactError::QuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        ArtifactError::NotOwner(_) => Code::PermissionDenied,
        ArtifactError::Store(_) | ArtifactError::Parquet(_) => Code::Internal,
        ArtifactError::Meta(e) => return meta(e),
    };
    status(code, error.to_string())
}

/// Status for grant errors.
pub(crate) fn policy(error: PolicyError) -> Status {
    let code = match &error {
        PolicyError::Invalid(_) | PolicyError::Compile { .. } => Code::InvalidArgument,
        PolicyError::NotFound(_) => Code::NotFound,
        PolicyError::Meta(e) => return meta(e),
    };
    status(code, error.to_string())
}

/// Status for registration and sync errors.
pub(crate) fn sync(error: SyncError) -> Status {
    let code = match &error {
        SyncError::Name(e) => return name(e),
        SyncError::Source(e) => source_code(e),
        SyncError::AlreadyRegistered(_) => Code::AlreadyExists,
        SyncError::NotRegistered(_) | SyncError::NoSuchJob(_) => Code::NotFound,
        SyncError::Busy { .. } | SyncError::NotRunning { .. } => Code::FailedPrecondition,
        SyncError::BadSettings(_) | SyncError::ReservedSchema(_) => Code::InvalidArgument,
        // A job outcome rather than a request error, but reported the same way.
        SyncError::SchemaChanged { .. } => Code::FailedPrecondition,
        SyncError::Cancelled => Code::Cancelled,
        SyncError::Replica(e) => replica_code(e),
        SyncError::Connection(ConnectionError::Meta(e)) => return meta(e),
        SyncError::Connection(e) => connection_code(e),
        SyncError::Meta(e) => return meta(e),
        SyncError::Task(_) => Code::Internal,
        SyncError::EpochNotServed { .. } => Code::DeadlineExceeded,
        SyncError::EpochBehind { .. } => Code::Unavailable,
    };
    status(code, error.to_string())
}

fn connection_code(error: &ConnectionError) -> Code {
    match error {
        ConnectionError::Invalid(_) => Code::InvalidArgument,
        ConnectionError::NotFound(_) => Code::NotFound,
        ConnectionError::Exists(_) => Code::AlreadyExists,
        ConnectionError::ReadOnly(_) | ConnectionError::InUse { .. } => Code::FailedPrecondition,
        // The key changed under stored secrets: the admin must act.
        ConnectionError::Secrets(_) => Code::FailedPrecondition,
        ConnectionError::Meta(_) => Code::Internal, // mapped by `meta` before
    }
}

fn name(error: &TableNameError) -> Status {
    let code = match error {
        TableNameError::Empty(_)
        | TableNameError::TooManyParts(_)
        | TableNameError::BadCharacters { .. }
        | TableNameError::Reserved(_) => Code::InvalidArgument,
    };
    status(code, error.to_string())
}

fn source_code(error: &SourceError) -> Code {
    match error {
        SourceError::BadUrl { .. }
        | SourceError::BadCsv(_)
        | SourceError::UnsupportedScheme(_)
        | SourceError::UnsupportedFormat(_)
        | SourceError::UnknownFormat(_) => Code::InvalidArgument,
        SourceError::NoFiles { .. } | SourceError::NoTable(_) => Code::NotFound,
        SourceError::UnknownConnection(_) | SourceError::Connection(_) => Code::InvalidArgument,
        SourceError::Protected(_) => Code::PermissionDenied,
        SourceError::UnsupportedColumn { .. } => Code::InvalidArgument,
        SourceError::Unavailable { .. } => Code::Unavailable,
        // Unreadable files, denied credentials: the request was fine, the
        // source is not.
        SourceError::Read { .. } | SourceError::Refused { .. } => Code::FailedPrecondition,
    }
}

fn replica_code(error: &ReplicaError) -> Code {
    match error {
        ReplicaError::NoSuchTable(_) => Code::NotFound,
        ReplicaError::Replaced(_) => Code::Aborted,
        ReplicaError::UnsupportedType { .. } | ReplicaError::Name(_) => Code::InvalidArgument,
        ReplicaError::Open(_) | ReplicaError::DuckDb { .. } | ReplicaError::Arrow(_) => {
            Code::Internal
        }
    }
}

/// Status for a malformed protocol message (ticket, handle, parameters).
pub(crate) fn bad_request(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, message)
}

/// Status for a request refused before it reaches a service (a dashboard
/// form from another site).
pub(crate) fn permission_denied(message: impl Into<String>) -> Status {
    status(Code::PermissionDenied, message)
}

/// Status for something a request names that does not exist (an HTTP route).
pub(crate) fn not_found(message: impl Into<String>) -> Status {
    status(Code::NotFound, message)
}

/// Status for a server-side failure outside the typed errors above.
pub(crate) fn internal(message: impl Into<String>) -> Status {
    status(Code::Internal, message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::table_name::TableName;

    #[test]
    fn codes_by_fault() {
        let cases: Vec<(Status, Code)> = vec![
            (auth(AuthError::MissingCredentials), Code::Unauthenticated),
            (auth(AuthError::Expired), Code::Unauthenticated),
            (auth(AuthError::Revoked), Code::Unauthenticated),
            (
                auth(AuthError::Forbidden("x".into())),
                Code::PermissionDenied,
            ),
            (auth(AuthError::NotFound("x".into())), Code::NotFound),
            (
                auth(AuthError::NotAdmin(crate::principal::NotAdmin {
                    what: "grant.set".into(),
                    kind: crate::principal::TokenKind::Agent,
                    name: "a1".into(),
                })),
                Code::PermissionDenied,
            ),
            (
                auth(AuthError::Meta(MetaError::Conflict {
                    collection: "jobs",
                    key: "j1".into(),
                    expected: "version 3".into(),
                })),
                Code::Aborted,
            ),
            (query(QueryError::Syntax("x".into())), Code::InvalidArgument),
            (
                query(QueryError::NotAQuery("DROP TABLE".into())),
                Code::PermissionDenied,
            ),
            (
                query(QueryError::UnknownTable("s.t".into())),
                Code::NotFound,
            ),
            (
                query(QueryError::Timeout(Duration::from_secs(1))),
                Code::DeadlineExceeded,
            ),
            (query(QueryError::Cancelled), Code::Cancelled),
            (
                query(QueryError::Overloaded("busy".into())),
                Code::ResourceExhausted,
            ),
            (
                query(QueryError::Execution(DataFusionError::ArrowError(
                    Box::new(ArrowError::DivideByZero),
                    None,
                ))),
                Code::InvalidArgument,
            ),
            (
                query(QueryError::Plan(DataFusionError::Context(
                    "ctx".into(),
                    Box::new(DataFusionError::ResourcesExhausted("mem".into())),
                ))),
                Code::ResourceExhausted,
            ),
            (action(ActionError::Unknown("x".into())), Code::NotFound),
            (
                action(ActionError::Internal {
                    action: "whoami",
                    message: "x".into(),
                }),
                Code::Internal,
            ),
            (
                action(ActionError::BadRequest {
                    action: "whoami",
                    message: "x".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                sync(SyncError::AlreadyRegistered(
                    TableName::parse("s.t").unwrap(),
                )),
                Code::AlreadyExists,
            ),
            (
                sync(SyncError::Source(SourceError::UnsupportedFormat(
                    "xlsx".into(),
                ))),
                Code::InvalidArgument,
            ),
            (
                sync(SyncError::Source(SourceError::NoFiles {
                    url: "file:///x".into(),
                    format: crate::sync::FileFormat::Csv,
                })),
                Code::NotFound,
            ),
            (
                sync(SyncError::Name(TableNameError::Empty(String::new()))),
                Code::InvalidArgument,
            ),
        ];
        for (status, code) in cases {
            assert_eq!(status.code(), code, "{}", status.message());
        }
    }

    #[test]
    fn messages_are_capped() {
        let long = "x".repeat(10_000);
        let status = query(QueryError::Syntax(long));
        assert!(status.message().len() <= MAX_MESSAGE + 4);
    }
}

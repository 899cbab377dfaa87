//! `sources.test`: log in to Snowflake or list the object store, and name
//! what went wrong with a stable code a script can branch on.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{ConnectionError, Live};
use crate::sync::snowflake::client::ClientError;

/// How long a test may take before the connection counts as unreachable.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// It works.
    Ok,
    /// A URL or endpoint that cannot be parsed or used.
    InvalidUri,
    /// Missing or contradictory settings.
    InvalidConfig,
    /// The credentials were refused.
    AuthFailed,
    /// Logged in, but the role, warehouse, database or bucket is not allowed.
    PermissionDenied,
    /// The connection, bucket or path does not exist.
    NotFound,
    /// No answer: DNS, refused connection, timeout.
    Unreachable,
    /// The stored secrets do not open under the current key.
    SecretsUnavailable,
    /// An answer airlock cannot read.
    UnexpectedResponse,
}

/// The answer of `sources.test`.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// The connection tested, when it has a name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether it works.
    pub ok: bool,
    /// `ok` or what went wrong.
    pub code: Code,
    /// Details for a person.
    pub message: String,
    /// How long the test took.
    pub elapsed_ms: u64,
}

impl TestOutcome {
    pub(super) fn failed(code: Code, message: String) -> Self {
        Self {
            name: None,
            ok: false,
            code,
            message,
            elapsed_ms: 0,
        }
    }

    pub(super) fn named(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
    }
}

/// The outcome for settings that do not make a connection.
pub(super) fn invalid(error: ConnectionError) -> TestOutcome {
    let message = error.to_string();
    let code = match &error {
        ConnectionError::Secrets(_) => Code::SecretsUnavailable,
        _ if message.contains("URL") || message.contains("url") => Code::InvalidUri,
        _ => Code::InvalidConfig,
    };
    TestOutcome::failed(code, message)
}

/// Tries a connection.
pub(super) async fn test(name: Option<String>, live: &Live) -> TestOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(TEST_TIMEOUT, attempt(live)).await;
    let (code, message) = match result {
        Ok(Ok(message)) => (Code::Ok, message),
        Ok(Err(failure)) => failure,
        Err(_) => (
            Code::Unreachable,
            format!("no answer within {} s", TEST_TIMEOUT.as_secs()),
        ),
    };
    TestOutcome {
        name,
        ok: code == Code::Ok,
        code,
        message,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn attempt(live: &Live) -> Result<String, (Code, String)> {
    match live {
        Live::Broken(reason) => Err((Code::SecretsUnavailable, reason.clone())),
        Live::Snowflake(client) => client
            .query("SELECT 1")
            .await
            .map(|_| "logged in and ran SELECT 1".to_string())
            .map_err(|e| (snowflake_code(&e), e.to_string())),
        Live::ObjectStore { root, options } => {
            let access = crate::object_stores::StoreAccess::Connection(options);
            let (store, path) = crate::object_stores::open_with(root, access)
                .map_err(|e| (Code::InvalidUri, e.to_string()))?;
            let listing = store
                .list_with_delimiter(Some(&path))
                .await
                .map_err(|e| (object_store_code(&e), e.to_string()))?;
            Ok(format!(
                "listed {}: {} objects and {} prefixes at the top level",
                crate::redact::url(root.as_str()),
                listing.objects.len(),
                listing.common_prefixes.len()
            ))
        }
    }
}

/// Snowflake's login codes: 390100 wrong user or password, 390144 bad
/// JWT, 390189/390201/390202 role, database or warehouse not allowed.
fn snowflake_code(error: &ClientError) -> Code {
    match error {
        ClientError::Login { code, .. } => match code.as_deref() {
            Some("390189" | "390201" | "390202" | "390421") => Code::PermissionDenied,
            _ => Code::AuthFailed,
        },
        ClientError::Key(_) => Code::InvalidConfig,
        ClientError::Unavailable(_) => Code::Unreachable,
        ClientError::Query { code, .. } if code == "003001" => Code::PermissionDenied,
        e if e.is_missing_object() => Code::NotFound,
        ClientError::Query { .. } | ClientError::Protocol(_) => Code::UnexpectedResponse,
    }
}

fn object_store_code(error: &object_store::Error) -> Code {
    // Stores answer some failures with a status object_store does not
    // map (a missing bucket in a list is a Generic error); S3 answers a
    // bad key with 403, like a missing grant. The error code in the body
    // tells them apart.
    let text = error.to_string();
    let bad_credentials = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthenticationFailed",
    ]
    .iter()
    .any(|code| text.contains(code));
    let has = |codes: &[&str]| codes.iter().any(|code| text.contains(code));
    match error {
        _ if bad_credentials => Code::AuthFailed,
        _ if has(&["NoSuchBucket", "ContainerNotFound", "BucketNotFound"]) => Code::NotFound,
        _ if has(&["AccessDenied", "AuthorizationFailure"]) => Code::PermissionDenied,
        object_store::Error::Unauthenticated { .. } => Code::AuthFailed,
        object_store::Error::PermissionDenied { .. } => Code::PermissionDenied,
        object_store::Error::NotFound { .. } => Code::NotFound,
        object_store::Error::UnknownConfigurationKey { .. } => Code::InvalidConfig,
        _ => {
            let lower = text.to_ascii_lowercase();
            if [
                "connect",
                "dns",
                "timed out",
                "error sending request",
                "resolve",
            ]
            .iter()
            .any(|s| lower.contains(s))
            {
                Code::Unreachable
            } else {
                Code::UnexpectedResponse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_errors_get_stable_codes() {
        let login = |code: &str| ClientError::Login {
            code: Some(code.into()),
            message: "m".into(),
        };
        assert_eq!(snowflake_code(&login("390100")), Code::AuthFailed);
        assert_eq!(snowflake_code(&login("390189")), Code::PermissionDenied);
        assert_eq!(
            snowflake_code(&ClientError::Unavailable("refused".into())),
            Code::Unreachable
        );
        let query = |code: &str| ClientError::Query {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(snowflake_code(&query("003001")), Code::PermissionDenied);
        assert_eq!(snowflake_code(&query("002003")), Code::NotFound);
    }

    #[test]
    fn object_store_errors_get_stable_codes() {
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "x".into() };
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: "<Code>InvalidAccessKeyId</Code>".into(),
        };
        assert_eq!(object_store_code(&denied), Code::AuthFailed);
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: source(),
        };
        assert_eq!(object_store_code(&denied), Code::PermissionDenied);
        let missing = object_store::Error::NotFound {
            path: "p".into(),
            source: source(),
        };
        assert_eq!(object_store_code(&missing), Code::NotFound);
        let refused = object_store::Error::Generic {
            store: "S3",
            source: "error sending request: Connection refused".into(),
        };
        assert_eq!(object_store_code(&refused), Code::Unreachable);
        let no_bucket = object_store::Error::Generic {
            store: "S3",
            source: "list: <Code>NoSuchBucket</Code>".into(),
        };
        assert_eq!(object_store_code(&no_bucket), Code::NotFound);
    }
}

//! A client for Snowflake's driver REST API: the part airlock needs to read
//! tables, written here rather than taken from the `snowflake-api` crate.
//!
//! That crate (0.14) holds every result chunk in memory at once, does not
//! poll queries that run past Snowflake's ~45 s answer window
//! (`getResultUrl`), fixes the host name and brings a second Arrow major
//! version. What this client does instead:
//!
//! - logs in with a password or a key pair (RS256 JWT), session time zone UTC;
//! - runs a query, following `333333`/`333334` answers to `getResultUrl`
//!   until the result is ready, however long that takes;
//! - streams the result in order: the inline first rowset, then each chunk
//!   downloaded from its presigned URL with the chunk headers, gunzipped
//!   when compressed, at most `prefetch` chunks ahead (bounded memory);
//! - retries transient HTTP failures (5xx, 429, timeouts, connection
//!   errors) with backoff, keeping the request id so Snowflake deduplicates;
//! - logs in again when the session expires.
//!
//! Secrets stay in [`Credentials`], whose `Debug` prints nothing of them.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::decode::ColumnType;

/// Codes Snowflake answers while a query is still running.
const IN_PROGRESS: [&str; 2] = ["333333", "333334"];
/// Session gone: log in again.
const SESSION_EXPIRED: [&str; 3] = ["390112", "390104", "390103"];
/// Attempts for one HTTP call before a transient failure is reported.
const HTTP_ATTEMPTS: u32 = 4;

/// Client failures, classified so jobs know what is worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network trouble, throttling or a server error that outlived retries.
    #[error("{0}")]
    Unavailable(String),
    /// Snowflake refused the login.
    #[error("login refused: {message}")]
    Login {
        /// Snowflake's code, e.g. `390100` (incorrect user or password).
        code: Option<String>,
        /// What Snowflake said.
        message: String,
    },
    /// A statement failed; `code` is Snowflake's error code.
    #[error("{message} (Snowflake error {code})")]
    Query {
        /// Snowflake's code, e.g. `002003` (object does not exist).
        code: String,
        /// Snowflake's message.
        message: String,
    },
    /// A response airlock cannot read.
    #[error("unexpected response from Snowflake: {0}")]
    Protocol(String),
    /// The key for key-pair authentication is unusable.
    #[error("private key: {0}")]
    Key(String),
}

impl ClientError {
    /// Whether the object named in the statement does not exist.
    pub fn is_missing_object(&self) -> bool {
        matches!(self, ClientError::Query { code, .. } if code == "002003")
    }
}

/// How to authenticate.
#[derive(Clone)]
pub enum Credentials {
    /// Password authentication.
    Password(String),
    /// Key-pair authentication: an unencrypted PKCS#8 PEM RSA private key.
    KeyPair(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Password(_) => "Password(..)",
            Credentials::KeyPair(_) => "KeyPair(..)",
        })
    }
}

/// Everything needed to open sessions.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Account identifier, e.g. `xy12345.us-east-1` or `myorg-myaccount`.
    pub account: String,
    /// Login name.
    pub user: String,
    /// Role, warehouse, default database.
    pub role: Option<String>,
    /// Warehouse.
    pub warehouse: Option<String>,
    /// Default database.
    pub database: Option<String>,
    /// How to log in.
    pub credentials: Credentials,
    /// Base URL; `https://{account}.snowflakecomputing.com` by default.
    pub base_url: String,
    /// Chunks downloaded ahead of the one being read.
    pub prefetch: usize,
    /// Timeout of one HTTP request (a long-poll answers within ~45 s).
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
struct Session {
    token: String,
    generation: u64,
}

/// A Snowflake client; cheap to share.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
    session: tokio::sync::Mutex<Option<Session>>,
    generation: AtomicU64,
    sequence: AtomicU64,
}

/// A query's result, before its rows are read.
#[derive(Debug)]
pub struct QueryResult {
    /// The columns.
    pub rowtype: Vec<ColumnType>,
    /// Total rows.
    pub total: u64,
    first: Rowset,
    chunks: Vec<ChunkRef>,
    chunk_headers: HashMap<String, String>,
    http: reqwest::Client,
    prefetch: usize,
}

#[derive(Debug)]
enum Rowset {
    Arrow(Bytes),
    Json(Vec<Vec<Option<String>>>),
}

#[derive(Debug, Clone, Deserialize)]
struct ChunkRef {
    url: String,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    #[serde(default)]
    rowtype: Vec<ColumnType>,
    #[serde(default)]
    query_result_format: Option<String>,
    #[serde(default)]
    rowset_base64: Option<String>,
    #[serde(default)]
    rowset: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    chunks: Option<Vec<ChunkRef>>,
    #[serde(default)]
    chunk_headers: Option<HashMap<String, String>>,
    #[serde(default)]
    qrmk: Option<String>,
}

impl Client {
    /// A client; no connection is made until the first query.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            session: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        })
    }

    /// Runs one statement and returns its result, waiting as long as
    /// Snowflake takes. Rows are read from the result afterwards.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, ClientError> {
        let mut relogged = false;
        loop {
            let session = self.session().await?;
            match self.run(&session, sql).await {
                Err(ClientError::Query { code, .. })
                    if !relogged && SESSION_EXPIRED.contains(&code.as_str()) =>
                {
                    // Expired or forgotten session: one fresh login, then again.
                    self.forget(&session).await;
                    relogged = true;
                }
                other => return other,
            }
        }
    }

    /// Runs a statement and collects every row as text (metadata queries).
    pub async fn query_strings(
        &self,
        sql: &str,
    ) -> Result<(Vec<ColumnType>, Vec<Vec<Option<String>>>), ClientError> {
        let result = self.query(sql).await?;
        let rowtype = result.rowtype.clone();
        let rows = result.strings().await?;
        Ok((rowtype, rows))
    }

    async fn session(&self) -> Result<Session, ClientError> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref() {
            return Ok(session.clone());
        }
        let token = self.login().await?;
        let session = Session {
            token,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *guard = Some(session.clone());
        Ok(session)
    }

    async fn forget(&self, stale: &Session) {
        let mut guard = self.session.lock().await;
        if guard
            .as_ref()
            .is_some_and(|s| s.generation == stale.generation)
        {
            *guard = None;
        }
    }

    async fn login(&self) -> Result<String, ClientError> {
        let config = &self.config;
        let account = account_name(&config.account);
        let mut data = json!({
            "CLIENT_APP_ID": "Go",
            "CLIENT_APP_VERSION": "1.6.22",
            "SVN_REVISION": "",
            "ACCOUNT_NAME": account,
            "LOGIN_NAME": config.user,
            "CLIENT_ENVIRONMENT": {"APPLICATION": "airlock", "OS": std::env::consts::OS},
            "SESSION_PARAMETERS": {
                "CLIENT_VALIDATE_DEFAULT_PARAMETERS": true,
                "TIMEZONE": "UTC",
                "GO_QUERY_RESULT_FORMAT": "ARROW",
            },
        });
        match &config.credentials {
            Credentials::Password(password) => data["PASSWORD"] = json!(password),
            Credentials::KeyPair(pem) => {
                data["AUTHENTICATOR"] = json!("SNOWFLAKE_JWT");
                data["TOKEN"] = json!(key_pair_jwt(&account, &config.user, pem)?);
            }
        }
        let mut query = vec![("request_id", uuid::Uuid::new_v4().to_string())];
        for (key, value) in [
            ("databaseName", &config.database),
            ("warehouse", &config.warehouse),
            ("roleName", &config.role),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        let url = format!("{}/session/v1/login-request", self.base());
        let body = json!({ "data": data });
        let envelope = self
            .send(|| self.http.post(&url).query(&query).json(&body))
            .await?;
        if !envelope.success {
            return Err(ClientError::Login {
                code: envelope.code.clone(),
                message: describe(&envelope),
            });
        }
        envelope
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("login answer has no token".into()))
    }

    async fn run(&self, session: &Session, sql: &str) -> Result<QueryResult, ClientError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let url = format!("{}/queries/v1/query-request", self.base());
        let body = json!({
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            "isInternal": false,
            "parameters": {"GO_QUERY_RESULT_FORMAT": "ARROW", "QUERY_TAG": "airlock-sync"},
        });
        let auth = format!("Snowflake Token=\"{}\"", session.token);
        let mut envelope = self
            .send(|| {
                self.http
                    .post(&url)
                    .query(&[("requestId", &request_id)])
                    .header(reqwest::header::AUTHORIZATION, &auth)
                    .header(reqwest::header::ACCEPT, "application/snowflake")
                    .json(&body)
            })
            .await?;
        // A query still running after Snowflake's answer window: follow
        // getResultUrl (Snowflake long-polls it) until the result is there.
        while envelope
            .code
            .as_deref()
            .is_some_and(|c| IN_PROGRESS.contains(&c))
        {
            let path = envelope
                .data
                .as_ref()
                .and_then(|d| d.get("getResultUrl"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ClientError::Protocol("a running query's answer has no getResultUrl".into())
                })?;
            let url = format!("{}{}", self.base(), path);
            envelope = self
                .send(|| {
                    self.http
                        .get(&url)
                        .header(reqwest::header::AUTHORIZATION, &auth)
                        .header(reqwest::header::ACCEPT, "application/snowflake")
                })
                .await?;
        }
        if !envelope.success {
            return Err(query_error(&envelope));
        }
        let data: QueryData = serde_json::from_value(envelope.data.unwrap_or(Value::Null))
            .map_err(|e| ClientError::Protocol(format!("query answer: {e}")))?;
        let first = match data.query_result_format.as_deref() {
            Some("json") => Rowset::Json(data.rowset.unwrap_or_default()),
            _ => Rowset::Arrow(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(data.rowset_base64.unwrap_or_default())
                    .map_err(|e| ClientError::Protocol(format!("rowsetBase64: {e}")))?,
            )),
        };
        let mut chunk_headers = data.chunk_headers.unwrap_or_default();
        if chunk_headers.is_empty()
            && let Some(qrmk) = data.qrmk
        {
            // Older accounts give the key for server-side encrypted chunks.
            chunk_headers.insert(
                "x-amz-server-side-encryption-customer-algorithm".into(),
                "AES256".into(),
            );
            chunk_headers.insert("x-amz-server-side-encryption-customer-key".into(), qrmk);
        }
        Ok(QueryResult {
            rowtype: data.rowtype,
            total: data.total.unwrap_or(0),
            first,
            chunks: data.chunks.unwrap_or_default(),
            chunk_headers,
            http: self.http.clone(),
            prefetch: self.config.prefetch.max(1),
        })
    }

    fn base(&self) -> &str {
        self.config.base_url.trim_end_matches('/')
    }

    /// Sends a request, retrying transient failures, and reads the envelope.
    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Envelope, ClientError> {
        let response = with_retries(|| async {
            let response = request().send().await.map_err(transport_error)?;
            let status = response.status();
            if is_transient_status(status) {
                return Err(ClientError::Unavailable(format!("HTTP {status}")));
            }
            let body = response.bytes().await.map_err(transport_error)?;
            Ok((status, body))
        })
        .await?;
        let (status, body) = response;
        serde_json::from_slice::<Envelope>(&body).map_err(|_| {
            ClientError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }
}

impl QueryResult {
    /// Whether the result came as Arrow (queries) rather than JSON rows.
    pub fn is_arrow(&self) -> bool {
        matches!(self.first, Rowset::Arrow(_))
    }

    /// The raw Arrow batches in order, chunks downloaded `prefetch` ahead:
    /// at most that many chunks are held at once, whatever the result's size.
    pub fn batches(self) -> BoxStream<'static, Result<RecordBatch, ClientError>> {
        let Rowset::Arrow(first) = self.first else {
            return stream::once(async {
                Err(ClientError::Protocol(
                    "the result came as JSON rows, not Arrow".into(),
                ))
            })
            .boxed();
        };
        let http = self.http;
        let headers = Arc::new(self.chunk_headers);
        let downloads = stream::iter(self.chunks)
            .map(move |chunk| {
                let http = http.clone();
                let headers = Arc::clone(&headers);
                async move { download(&http, &chunk, &headers).await }
            })
            .buffered(self.prefetch);
        stream::once(async move { Ok(first) })
            .chain(downloads)
            .map_ok(|bytes| stream::iter(ipc_batches(bytes)))
            .try_flatten()
            .boxed()
    }

    /// Every row as text: Arrow results via the replica decoding, JSON as given.
    pub async fn strings(self) -> Result<Vec<Vec<Option<String>>>, ClientError> {
        if let Rowset::Json(rows) = self.first {
            return Ok(rows);
        }
        let rowtype = self.rowtype.clone();
        let schema = super::decode::replica_schema(&rowtype)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let batches: Vec<RecordBatch> = self.batches().try_collect().await?;
        let mut rows = Vec::new();
        for batch in batches {
            let batch = super::decode::decode_batch(&batch, &rowtype, &schema)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            for row in 0..batch.num_rows() {
                let mut values = Vec::with_capacity(batch.num_columns());
                for column in batch.columns() {
                    values.push(if column.is_null(row) {
                        None
                    } else {
                        Some(
                            datafusion::arrow::util::display::array_value_to_string(column, row)
                                .map_err(|e| ClientError::Protocol(e.to_string()))?,
                        )
                    });
                }
                rows.push(values);
            }
        }
        Ok(rows)
    }
}

async fn download(
    http: &reqwest::Client,
    chunk: &ChunkRef,
    headers: &HashMap<String, String>,
) -> Result<Bytes, ClientError> {
    let bytes = with_retries(|| async {
        let mut request = http.get(&chunk.url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if is_transient_status(status) {
            return Err(ClientError::Unavailable(format!(
                "result chunk download: HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(ClientError::Protocol(format!(
                "result chunk download: HTTP {status}"
            )));
        }
        response.bytes().await.map_err(transport_error)
    })
    .await?;
    // Chunks may be gzipped without saying so.
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| ClientError::Protocol(format!("result chunk gunzip: {e}")))?;
        return Ok(Bytes::from(out));
    }
    Ok(bytes)
}

/// The record batches of one Arrow IPC stream (an empty body has none).
fn ipc_batches(bytes: Bytes) -> Vec<Result<RecordBatch, ClientError>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    match StreamReader::try_new(std::io::Cursor::new(bytes), None) {
        Ok(reader) => reader
            .map(|b| b.map_err(|e| ClientError::Protocol(format!("Arrow result: {e}"))))
            .collect(),
        Err(e) => vec![Err(ClientError::Protocol(format!("Arrow result: {e}")))],
    }
}

async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(ClientError::Unavailable(_)) if tries < HTTP_ATTEMPTS => {
                let backoff = Duration::from_millis(250 * 2u64.pow(tries));
                let jitter = Duration::from_millis(rand::random_range(0..250));
                tokio::time::sleep(backoff + jitter).await;
            }
            other => return other,
        }
    }
}

fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

fn transport_error(e: reqwest::Error) -> ClientError {
    // Without the URL: presigned chunk URLs carry credentials.
    ClientError::Unavailable(e.without_url().to_string())
}

fn describe(envelope: &Envelope) -> String {
    match (&envelope.code, &envelope.message) {
        (Some(code), Some(message)) => format!("{message} (Snowflake error {code})"),
        (None, Some(message)) => message.clone(),
        (Some(code), None) => format!("Snowflake error {code}"),
        (None, None) => "no reason given".into(),
    }
}

fn query_error(envelope: &Envelope) -> ClientError {
    let code = envelope.code.clone().unwrap_or_default();
    let message = envelope.message.clone().unwrap_or_default();
    // Some servers repeat "NNNNNN (SSSSS): " in front of the message.
    let message = match message.split_once("): ") {
        Some((prefix, rest)) if prefix.starts_with(&code) && !code.is_empty() => rest.to_string(),
        _ => message,
    };
    ClientError::Query { code, message }
}

/// The account name used in login bodies and JWTs: the identifier before
/// any region suffix, upper-cased.
fn account_name(account: &str) -> String {
    let base = account.split('.').next().unwrap_or(account);
    base.to_ascii_uppercase()
}

/// A key-pair login token: RS256, issuer `ACCOUNT.USER.SHA256:<fingerprint
/// of the public key>`, valid for 60 s.
fn key_pair_jwt(account: &str, user: &str, pem: &str) -> Result<String, ClientError> {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use sha2::Digest;
    if pem.contains("ENCRYPTED") {
        return Err(ClientError::Key(
            "encrypted private keys are not supported; give an unencrypted PKCS#8 PEM key \
             (openssl pkcs8 -topk8 -nocrypt)"
                .into(),
        ));
    }
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| {
        ClientError::Key(format!(
            "not an unencrypted PKCS#8 PEM RSA key ({e}); convert with openssl pkcs8 -topk8 -nocrypt"
        ))
    })?;
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| ClientError::Key(e.to_string()))?;
    let fingerprint =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(public.as_bytes()));
    let user = user.to_ascii_uppercase();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = json!({
        "iss": format!("{account}.{user}.SHA256:{fingerprint}"),
        "sub": format!("{account}.{user}"),
        "iat": now,
        "exp": now + 60,
    });
    let der = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(&key)
        .map_err(|e| ClientError::Key(e.to_string()))?;
    let encoding = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &encoding,
    )
    .map_err(|e| ClientError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_drop_the_region() {
        assert_eq!(account_name("xy12345.us-east-1"), "XY12345");
        assert_eq!(account_name("myorg-acct"), "MYORG-ACCT");
    }

    #[test]
    fn query_errors_lose_the_repeated_code_prefix() {
        let envelope = Envelope {
            success: false,
            code: Some("002003".into()),
            message: Some("002003 (42S02): Catalog Error: Table X does not exist!".into()),
            data: None,
        };
        let error = query_error(&envelope);
        assert!(error.is_missing_object());
        assert_eq!(
            error.to_string(),
            "Catalog Error: Table X does not exist! (Snowflake error 002003)"
        );
    }

    #[test]
    fn key_pair_tokens_carry_the_public_key_fingerprint() {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        use sha2::Digest;
        // A throwaway key made for this test (generating one unoptimized is slow).
        let pem = include_str!("../../../tests/fixtures/snowflake_test_key.pem");
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
        let token = key_pair_jwt("XY12345", "sync_user", pem).unwrap();
        let claims = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        let der = key.to_public_key().to_public_key_der().unwrap();
        let fingerprint =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(der.as_bytes()));
        assert_eq!(
            claims["iss"],
            format!("XY12345.SYNC_USER.SHA256:{fingerprint}")
        );
        assert_eq!(claims["sub"], "XY12345.SYNC_USER");
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, 60);
        let verify = jsonwebtoken::DecodingKey::from_rsa_der(
            rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&key.to_public_key())
                .unwrap()
                .as_bytes(),
        );
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Value>(&token, &verify, &validation).unwrap();

        let err = key_pair_jwt("A", "B", "-----BEGIN ENCRYPTED PRIVATE KEY-----").unwrap_err();
        assert!(err.to_string().contains("-nocrypt"), "{err}");
    }
}

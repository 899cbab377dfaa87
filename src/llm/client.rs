//! One OpenAI-compatible endpoint: the HTTP calls, retries and the
//! parsing of chat completions and embeddings.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{LlmError, ProviderConfig};

/// Longest wait between retries, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Inputs per embeddings request.
const EMBED_BATCH: usize = 64;

/// A chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Tokens counted by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent.
    pub prompt_tokens: u64,
    /// Tokens answered.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The text of the first choice.
    pub content: String,
    /// Tokens used.
    pub usage: Usage,
    /// How long the call took, retries included.
    pub latency: Duration,
}

/// An OpenAI-compatible endpoint with its key.
pub struct Provider {
    name: String,
    config: ProviderConfig,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider from its config; reads the key variable now.
    pub fn new(name: &str, config: &ProviderConfig) -> Result<Self, LlmError> {
        let bad = |what: String| LlmError::Config(format!("provider '{name}': {what}"));
        match url::Url::parse(&config.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(bad(format!(
                    "base_url '{}' is not an http(s) URL",
                    config.base_url
                )));
            }
        }
        if config.model.trim().is_empty() {
            return Err(bad("model is required".into()));
        }
        let api_key = match &config.api_key_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| bad(format!("environment variable {var} is not set")))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            api_key,
            http,
        })
    }

    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model it asks.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// Asks the model; `model` overrides the configured one (a fine-tuned
    /// model, say).
    pub async fn chat(
        &self,
        messages: &[Message],
        model: Option<&str>,
    ) -> Result<Completion, LlmError> {
        let started = Instant::now();
        let mut body = json!({
            "model": model.unwrap_or(&self.config.model),
            "messages": messages,
            "temperature": self.config.temperature,
        });
        if let Some(max_tokens) = self.config.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        let answer = self.post_json("chat/completions", &body).await?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.malformed("no choices[0].message.content in the chat completion")
            })?;
        let usage = answer
            .get("usage")
            .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            .unwrap_or_default();
        Ok(Completion {
            content: content.to_string(),
            usage,
            latency: started.elapsed(),
        })
    }

    /// Embeddings of `inputs`, in order.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(EMBED_BATCH) {
            let body = json!({"model": self.config.model, "input": batch});
            let answer = self.post_json("embeddings", &body).await?;
            let mut items: Vec<(u64, Vec<f32>)> = answer
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| self.malformed("no data in the embeddings answer"))?
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let index = item
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(i as u64);
                    let vector: Option<Vec<f32>> = item
                        .get("embedding")
                        .and_then(Value::as_array)
                        .and_then(|v| v.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
                    vector
                        .map(|v| (index, v))
                        .ok_or_else(|| self.malformed("an embedding is not a list of numbers"))
                })
                .collect::<Result<_, _>>()?;
            items.sort_by_key(|(index, _)| *index);
            let in_order = items
                .iter()
                .enumerate()
                .all(|(i, (index, _))| *index == i as u64);
            if items.len() != batch.len() || !in_order {
                return Err(self.malformed(&format!(
                    "{} embeddings for {} inputs, or indexes that are not 0..{}",
                    items.len(),
                    batch.len(),
                    batch.len()
                )));
            }
            let dimensions = items.first().map_or(0, |(_, v)| v.len());
            if dimensions == 0 || items.iter().any(|(_, v)| v.len() != dimensions) {
                return Err(self.malformed("embeddings of different or zero length"));
            }
            out.extend(items.into_iter().map(|(_, v)| v));
        }
        Ok(out)
    }

    /// POSTs JSON to `path` (relative to the base URL) and parses the
    /// answer. Retried on server errors: the calls it serves (chat,
    /// embeddings, cancel) are safe to repeat.
    pub(super) async fn post_json(&self, path: &str, body: &Value) -> Result<Value, LlmError> {
        let url = self.url(path);
        let bytes = self
            .send(Retry::Transient, || self.http.post(&url).json(body))
            .await?;
        self.parse(&bytes)
    }

    /// POSTs JSON that creates something (a fine-tuning job): retried only
    /// when the server surely did nothing (429), so a lost answer never
    /// starts a second paid job.
    pub(super) async fn post_json_once(&self, path: &str, body: &Value) -> Result<Value, LlmError> {
        let url = self.url(path);
        let bytes = self
            .send(Retry::Throttled, || self.http.post(&url).json(body))
            .await?;
        self.parse(&bytes)
    }

    /// GETs `path` and parses the answer.
    pub(super) async fn get_json(&self, path: &str) -> Result<Value, LlmError> {
        let url = self.url(path);
        let bytes = self.send(Retry::Transient, || self.http.get(&url)).await?;
        self.parse(&bytes)
    }

    /// DELETEs `path`.
    pub(super) async fn delete(&self, path: &str) -> Result<Value, LlmError> {
        let url = self.url(path);
        let bytes = self
            .send(Retry::Transient, || self.http.delete(&url))
            .await?;
        self.parse(&bytes)
    }

    /// POSTs a multipart form with text `fields` and one file.
    pub(super) async fn post_file(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        file_name: &str,
        file: Bytes,
    ) -> Result<Value, LlmError> {
        // Built by hand: reqwest's multipart feature would change the
        // features of the reqwest that object_store (and so DataFusion)
        // build with.
        let boundary = format!("airlock-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(file.len() + 512);
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
                 Content-Type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = Bytes::from(body);
        let url = self.url(path);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let bytes = self
            .send(Retry::Throttled, || {
                self.http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, &content_type)
                    .body(body.clone())
            })
            .await?;
        self.parse(&bytes)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn parse(&self, bytes: &[u8]) -> Result<Value, LlmError> {
        serde_json::from_slice(bytes).map_err(|_| {
            self.malformed(&format!(
                "not JSON: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    fn malformed(&self, detail: &str) -> LlmError {
        LlmError::Malformed {
            provider: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    /// Sends a request built by `build`, retrying 429s, 5xx answers and
    /// connection failures with backoff; the body of a 2xx answer.
    async fn send(
        &self,
        retry: Retry,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Bytes, LlmError> {
        let attempts = self.config.retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = build();
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            let call = async {
                let response = request.send().await?;
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite())
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)));
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, retry_after, body))
            };
            let (status, retry_after, body) = match tokio::time::timeout(self.config.timeout, call)
                .await
            {
                Err(_) => return Err(self.timeout()),
                Ok(Err(e)) if e.is_timeout() => return Err(self.timeout()),
                Ok(Err(e))
                    if attempt < attempts && (retry == Retry::Transient || e.is_connect()) =>
                {
                    tracing::debug!(provider = %self.name, error = %e.without_url(), "retrying");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    continue;
                }
                Ok(Err(e)) => {
                    return Err(LlmError::Unavailable {
                        provider: self.name.clone(),
                        message: e.without_url().to_string(),
                    });
                }
                Ok(Ok(answer)) => answer,
            };
            let transient = status == StatusCode::TOO_MANY_REQUESTS
                || (retry == Retry::Transient && status.is_server_error());
            if transient && attempt < attempts {
                tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                continue;
            }
            if status.is_success() {
                return Ok(body);
            }
            let message = error_message(&body);
            return Err(if status == StatusCode::TOO_MANY_REQUESTS {
                LlmError::RateLimited {
                    provider: self.name.clone(),
                    attempts: attempt,
                }
            } else if status.is_server_error() {
                LlmError::Unavailable {
                    provider: self.name.clone(),
                    message: format!(
                        "HTTP {} after {attempt} attempts: {message}",
                        status.as_u16()
                    ),
                }
            } else {
                LlmError::Refused {
                    provider: self.name.clone(),
                    status: status.as_u16(),
                    message,
                }
            });
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self
            .config
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        retry_after.unwrap_or(exponential).min(MAX_BACKOFF)
    }

    fn timeout(&self) -> LlmError {
        LlmError::Timeout {
            provider: self.name.clone(),
            seconds: self.config.timeout.as_secs().max(1),
        }
    }
}

/// Which failures a call may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// 429s, 5xx answers and connection failures.
    Transient,
    /// Only failures where the server surely did nothing: 429s and
    /// connections that never opened.
    Throttled,
}

/// The message of an OpenAI-style error body, or the start of the body.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let message = message.trim();
    match message.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None if message.is_empty() => "no reason given".into(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_openai_bodies() {
        let body =
            br#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#;
        assert_eq!(error_message(body), "Incorrect API key provided");
        assert_eq!(
            error_message(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(b""), "no reason given");
        assert!(error_message(&[b'x'; 1000]).chars().count() < 310);
    }

    #[test]
    fn providers_need_a_url_a_model_and_their_key_variable() {
        let config = ProviderConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            ..ProviderConfig::default()
        };
        assert!(Provider::new("p", &config).is_ok());
        let no_url = ProviderConfig {
            base_url: "localhost:8080".into(),
            ..config.clone()
        };
        assert!(Provider::new("p", &no_url).is_err());
        let missing_key = ProviderConfig {
            api_key_env: Some("AIRLOCK_TEST_SURELY_UNSET_KEY".into()),
            ..config
        };
        let error = Provider::new("p", &missing_key).unwrap_err().to_string();
        assert!(error.contains("AIRLOCK_TEST_SURELY_UNSET_KEY"), "{error}");
    }
}

//! Language models behind OpenAI-compatible HTTP APIs: chat completions
//! (for `nl.*`), embeddings (hybrid `context.search`) and the files and
//! fine-tuning endpoints (`finetune.*`). Hosted APIs and local servers
//! (llama.cpp, vLLM, Ollama) speak the same protocol, so one client serves
//! them all; several providers can be configured and a request may name
//! one.
//!
//! A leaf module: it knows HTTP and JSON, nothing of airlock's catalog.
//! Keys come from environment variables named in the config and never
//! appear in errors or logs. Transient failures (429, 5xx, connection
//! errors) are retried with exponential backoff, honouring `Retry-After`;
//! every call has a timeout.
//!
//! Written on reqwest rather than taken from `async-openai`: that crate
//! turns on reqwest features (multipart, streaming) that object_store's
//! reqwest — and so DataFusion — would then be rebuilt with, and airlock
//! needs five endpoints of the API, whose lenient parsing here (missing
//! `usage`, servers without `index`) matters more for local servers than
//! full typing.

mod client;
pub mod finetune;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{Completion, Message, Provider, Usage};

/// The `[llm]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// The provider used when a request names none; default: the only one
    /// configured, or the first by name.
    pub default_provider: Option<String>,
    /// Chat-completions providers by name (`[llm.providers.NAME]`).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// An embeddings endpoint (`[llm.embeddings]`); with one, search ranks
    /// by BM25 and embedding similarity together.
    pub embeddings: Option<ProviderConfig>,
    /// How much the embedding ranking counts against BM25's in hybrid
    /// search (reciprocal-rank fusion weight; BM25's is 1). At 1 a small
    /// general-purpose model (all-MiniLM-L6-v2) pulled recall on the
    /// context benchmark below BM25's; at 0.5 it reorders without losing.
    pub embeddings_weight: f32,
    /// Model calls one `nl.sql` may make (the first answer and retries
    /// with the error fed back).
    pub max_attempts: u32,
    /// Longest one `nl.sql` may take, all attempts together.
    #[serde(with = "crate::duration_text")]
    pub generation_timeout: Duration,
    /// How often a running fine-tune is asked for its status.
    #[serde(with = "crate::duration_text")]
    pub finetune_poll_interval: Duration,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            default_provider: None,
            providers: BTreeMap::new(),
            embeddings: None,
            embeddings_weight: 0.5,
            max_attempts: 3,
            generation_timeout: Duration::from_secs(120),
            finetune_poll_interval: Duration::from_secs(30),
        }
    }
}

/// One OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL ending before `/chat/completions`, e.g.
    /// `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Environment variable holding the API key (none: no Authorization
    /// header, as local servers expect).
    pub api_key_env: Option<String>,
    /// Longest one HTTP call may take.
    #[serde(with = "crate::duration_text")]
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx or a connection error.
    pub retries: u32,
    /// Wait before the first retry; doubles per attempt.
    #[serde(with = "crate::duration_text")]
    pub retry_backoff: Duration,
    /// Sampling temperature (chat).
    pub temperature: f32,
    /// Most tokens one answer may have (chat); none: the server's default.
    pub max_tokens: Option<u32>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key_env: None,
            timeout: Duration::from_secs(60),
            retries: 2,
            retry_backoff: Duration::from_secs(1),
            temperature: 0.0,
            max_tokens: None,
        }
    }
}

/// Why a model call failed. Messages name the provider and what to do,
/// never the key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// No provider is configured.
    #[error(
        "no LLM provider is configured; add [llm.providers.NAME] with base_url and model to the config file"
    )]
    NotConfigured,
    /// The request named an unknown provider.
    #[error("no LLM provider named '{name}'; configured: {known}")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// A configured provider is unusable (bad URL, missing key variable).
    #[error("[llm] {0}")]
    Config(String),
    /// No answer within the timeout.
    #[error("{provider} did not answer within {seconds} s (llm timeout)")]
    Timeout {
        /// Provider name.
        provider: String,
        /// The timeout.
        seconds: u64,
    },
    /// Still throttled after the retries.
    #[error("{provider} is rate limiting (HTTP 429) after {attempts} attempts; try again later")]
    RateLimited {
        /// Provider name.
        provider: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider refused the request (4xx other than 429).
    #[error("{provider} refused the request (HTTP {status}): {message}")]
    Refused {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// A server error or network failure that outlived the retries.
    #[error("{provider} is unavailable: {message}")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// An answer that is not what the API promises.
    #[error("{provider} sent a malformed answer: {detail}")]
    Malformed {
        /// Provider name.
        provider: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// The configured providers.
#[derive(Debug, Default)]
pub struct Llm {
    providers: BTreeMap<String, Arc<Provider>>,
    default: Option<String>,
    embeddings: Option<Arc<Provider>>,
    settings: LlmSettings,
}

impl Llm {
    /// Providers from settings; keys are read from the environment now, so
    /// a missing variable stops the server at start.
    pub fn from_settings(settings: &LlmSettings) -> Result<Self, LlmError> {
        let mut providers = BTreeMap::new();
        for (name, config) in &settings.providers {
            providers.insert(name.clone(), Arc::new(Provider::new(name, config)?));
        }
        let default = match &settings.default_provider {
            Some(name) if !providers.contains_key(name) => {
                return Err(LlmError::Config(format!(
                    "default_provider '{name}' is not one of [llm.providers]"
                )));
            }
            Some(name) => Some(name.clone()),
            None => providers.keys().next().cloned(),
        };
        if !(0.0..=10.0).contains(&settings.embeddings_weight) {
            return Err(LlmError::Config(
                "embeddings_weight must be between 0 and 10".into(),
            ));
        }
        let embeddings = settings
            .embeddings
            .as_ref()
            .map(|config| Provider::new("embeddings", config).map(Arc::new))
            .transpose()?;
        Ok(Self {
            providers,
            default,
            embeddings,
            settings: settings.clone(),
        })
    }

    /// The provider `name`, or the default one.
    pub fn provider(&self, name: Option<&str>) -> Result<Arc<Provider>, LlmError> {
        let name = match name.or(self.default.as_deref()) {
            Some(name) => name,
            None => return Err(LlmError::NotConfigured),
        };
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| LlmError::UnknownProvider {
                name: name.to_string(),
                known: if self.providers.is_empty() {
                    "none".into()
                } else {
                    self.providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// The embeddings endpoint, when configured.
    pub fn embeddings(&self) -> Option<&Arc<Provider>> {
        self.embeddings.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }
}

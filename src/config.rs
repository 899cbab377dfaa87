//! Configuration: the command line, `AIRLOCK_*` environment variables, an
//! optional TOML file and built-in defaults, layered in that order of
//! precedence (flag > environment > file > default).
//!
//! Every setting has a flag (with its environment variable, shown by
//! `--help`) and a key in the TOML file; the file's layout is the
//! serialization of [`Config`], which `airlock config` prints.
//! Secrets are not settings: `AIRLOCK_ADMIN_PASSWORD` and
//! `AIRLOCK_JWT_SECRET` are read from the environment only, so they never
//! appear in a config dump, a process list or a log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Errors found while assembling the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` named a file that is not there.
    #[error("config file {path} does not exist; create it or drop --config/AIRLOCK_CONFIG")]
    MissingFile { path: PathBuf },
    /// A layer had a value of the wrong shape or an unknown key.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The TLS settings are half there.
    #[error("TLS needs both tls.cert and tls.key (got only {given})")]
    HalfTls { given: &'static str },
}

/// The top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "A governed Arrow Flight SQL server for AI agents over DuckDB replicas",
    long_about = "airlock serves Arrow Flight SQL (ADBC, JDBC, pyarrow, polars, pandas) over DuckDB \
                  replicas of warehouse tables. Start it with `airlock serve`; log in as `admin` \
                  with the password from AIRLOCK_ADMIN_PASSWORD (or the one printed on first start)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Flight SQL server.
    Serve(ServeArgs),
    /// Print the effective configuration (defaults, file, environment and
    /// flags merged) as TOML, ready to save as a config file.
    Config(ServeArgs),
}

/// Flags of `airlock serve`. Each overrides the matching key of the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are those printed by `airlock config`.
    #[arg(long, env = "AIRLOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the replica, the metadata database and secrets
    /// [default: ./airlock-data]
    #[arg(long, env = "AIRLOCK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the Flight SQL (gRPC) endpoint listens on [default: 127.0.0.1:50051]
    #[arg(long, env = "AIRLOCK_FLIGHT_ADDR", value_name = "HOST:PORT")]
    pub flight_addr: Option<SocketAddr>,

    /// Generate and load a small demo dataset (schema `demo`) at start.
    #[arg(long, env = "AIRLOCK_DEMO")]
    pub demo: bool,

    /// Longest a query may run before it is interrupted, e.g. `30s`, `5m` [default: 5m]
    #[arg(long, env = "AIRLOCK_QUERY_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub query_timeout: Option<Duration>,

    /// Memory DataFusion may use for joins, sorts and aggregates across all
    /// queries, e.g. `2GiB` [default: 2GiB]
    #[arg(long, env = "AIRLOCK_QUERY_MEMORY_LIMIT", value_name = "SIZE")]
    pub query_memory_limit: Option<ByteSize>,

    /// DuckDB worker threads [default: number of CPUs]
    #[arg(long, env = "AIRLOCK_DUCKDB_THREADS", value_name = "N")]
    pub duckdb_threads: Option<usize>,

    /// DuckDB memory limit, e.g. `4GiB` [default: 4GiB]
    #[arg(long, env = "AIRLOCK_DUCKDB_MEMORY_LIMIT", value_name = "SIZE")]
    pub duckdb_memory_limit: Option<ByteSize>,

    /// How many table syncs may run at once [default: 2]
    #[arg(long, env = "AIRLOCK_SYNC_PARALLELISM", value_name = "N")]
    pub sync_parallelism: Option<usize>,

    /// PEM certificate chain; with --tls-key, serves Flight SQL over TLS.
    #[arg(long, env = "AIRLOCK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = "AIRLOCK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Log filter in `tracing` syntax, e.g. `info` or `airlock=debug` [default: info]
    #[arg(long, env = "AIRLOCK_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text]
    #[arg(long, env = "AIRLOCK_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The whole configuration of a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the replica, metadata and secrets live.
    pub data_dir: PathBuf,
    /// Flight SQL listen address.
    pub flight_addr: SocketAddr,
    /// Load the generated demo dataset at start.
    pub demo: bool,
    /// Query execution limits.
    pub query: QueryConfig,
    /// Limits on agents' queries where their grant sets none.
    pub limits: LimitDefaults,
    /// The audit trail.
    pub audit: AuditConfig,
    /// DuckDB replica settings.
    pub duckdb: DuckDbConfig,
    /// Token lifetimes.
    pub auth: AuthConfig,
    /// Replication settings.
    pub sync: SyncConfig,
    /// TLS for the Flight endpoint; absent means plaintext.
    pub tls: TlsConfig,
    /// Options for object stores named by `table.register` sources, e.g.
    /// `aws_endpoint`, `aws_region`, `aws_allow_http`. Credentials are
    /// better left to the standard `AWS_*`, `GOOGLE_*`, `AZURE_*` variables.
    pub object_store: BTreeMap<String, String>,
    /// Snowflake connections by name, used by `snowflake://NAME/DB.SCHEMA.TABLE`
    /// sources. Secrets are named (`password_env`, `private_key_file`, …),
    /// never written here.
    pub snowflake: BTreeMap<String, crate::sync::SnowflakeConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Grants to store at start, unless a grant for the same swarm/agent
    /// is already stored (changes made with actions survive restarts).
    pub grants: Vec<crate::policy::Grant>,
}

/// Limits on each query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer is interrupted and fails with DEADLINE_EXCEEDED.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Memory pool shared by DataFusion operators of all running queries.
    pub memory_limit: ByteSize,
    /// Longest SQL text accepted, in bytes.
    pub max_sql_length: usize,
    /// Deepest expression nesting accepted (`a OR b OR …` nests one level
    /// per term); deeper ones are refused before planning.
    pub max_expression_depth: usize,
    /// Largest batch an operator computing values may produce; a query
    /// building values past it (huge strings, doubling) is stopped.
    pub max_batch_bytes: ByteSize,
}

/// Default limits for restricted principals (agents and swarm tokens);
/// a grant's `limits` override them. Admins are bound only by `[query]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitDefaults {
    /// Rows a query returns at most; the stream stops there and its last
    /// message says it was truncated.
    pub max_rows: u64,
    /// Queries one agent may run at once.
    pub max_concurrent: u32,
    /// Queries one agent may start per minute.
    pub per_minute: u32,
}

/// Audit trail settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long records are kept; older ones are deleted hourly.
    #[serde(with = "duration_text")]
    pub retention: Duration,
}

/// DuckDB replica settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DuckDbConfig {
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// DuckDB's memory limit.
    pub memory_limit: ByteSize,
    /// Most disk DuckDB may spill to under `<data_dir>/tmp`.
    pub max_temp_directory_size: ByteSize,
}

/// Token lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of the bearer token an admin gets from the handshake.
    #[serde(with = "duration_text")]
    pub admin_session_ttl: Duration,
    /// Lifetime of swarm and agent tokens when `ttl_seconds` is not given.
    #[serde(with = "duration_text")]
    pub default_token_ttl: Duration,
    /// Longest lifetime `token.create` grants.
    #[serde(with = "duration_text")]
    pub max_token_ttl: Duration,
}

/// Replication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Syncs running at once; more wait in the queue.
    pub parallelism: usize,
    /// Further attempts after a transient source failure (network,
    /// throttling, a source restarting).
    pub retries: u32,
    /// Wait before the first retry; doubles per attempt, with jitter.
    #[serde(with = "duration_text")]
    pub retry_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "duration_text")]
    pub retry_backoff_max: Duration,
    /// Finished jobs older than this are purged (each table's latest kept).
    #[serde(with = "duration_text")]
    pub job_retention: Duration,
}

impl SyncConfig {
    /// The service settings.
    pub fn settings(&self) -> crate::sync::SyncSettings {
        crate::sync::SyncSettings {
            parallelism: self.parallelism,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            job_retention: self.job_retention,
        }
    }
}

/// TLS certificate and key (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert: Option<PathBuf>,
    /// Private key.
    pub key: Option<PathBuf>,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive.
    pub filter: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./airlock-data"),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            demo: false,
            query: QueryConfig::default(),
            limits: LimitDefaults::default(),
            audit: AuditConfig::default(),
            duckdb: DuckDbConfig::default(),
            auth: AuthConfig::default(),
            sync: SyncConfig::default(),
            tls: TlsConfig::default(),
            object_store: BTreeMap::new(),
            snowflake: BTreeMap::new(),
            log: LogConfig::default(),
            grants: Vec::new(),
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_limit: ByteSize::gib(2),
            max_sql_length: 256 * 1024,
            max_expression_depth: 250,
            max_batch_bytes: ByteSize::mib(256),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl Default for LimitDefaults {
    fn default() -> Self {
        Self {
            max_rows: 1_000_000,
            max_concurrent: 4,
            per_minute: 600,
        }
    }
}

impl Default for DuckDbConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            memory_limit: ByteSize::gib(4),
            max_temp_directory_size: ByteSize::gib(20),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_session_ttl: Duration::from_secs(12 * 3600),
            default_token_ttl: Duration::from_secs(7 * 24 * 3600),
            max_token_ttl: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        let settings = crate::sync::SyncSettings::default();
        Self {
            parallelism: settings.parallelism,
            retries: settings.retries,
            retry_backoff: settings.retry_backoff,
            retry_backoff_max: settings.retry_backoff_max,
            job_retention: settings.job_retention,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Merges defaults, the config file named by `args.config`, and the
    /// flags/environment in `args` (clap already resolved those two).
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &args.config {
            if !Path::new(path).is_file() {
                return Err(ConfigError::MissingFile { path: path.clone() });
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = args.overrides(figment);
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => Err(ConfigError::HalfTls { given: "tls.cert" }),
            (None, Some(_)) => Err(ConfigError::HalfTls { given: "tls.key" }),
            _ => Ok(()),
        }
    }

    /// The configuration as TOML, for `airlock config`.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

impl ServeArgs {
    fn overrides(&self, figment: Figment) -> Figment {
        let mut figment = figment;
        macro_rules! set {
            ($key:literal, $value:expr) => {
                if let Some(value) = &$value {
                    figment = figment.merge(Serialized::default($key, value));
                }
            };
        }
        set!("data_dir", self.data_dir);
        set!("flight_addr", self.flight_addr);
        if self.demo {
            figment = figment.merge(Serialized::default("demo", true));
        }
        set!(
            "query.timeout",
            self.query_timeout.map(duration_text::format)
        );
        set!("query.memory_limit", self.query_memory_limit);
        set!("duckdb.threads", self.duckdb_threads);
        set!("duckdb.memory_limit", self.duckdb_memory_limit);
        set!("sync.parallelism", self.sync_parallelism);
        set!("tls.cert", self.tls_cert);
        set!("tls.key", self.tls_key);
        set!("log.filter", self.log);
        set!("log.format", self.log_format);
        figment
    }
}

/// Durations in config files: read with humantime (`90s`, `5m`, `7d`, `1h 30m`),
/// written in the largest unit that divides them exactly (`365d`, not
/// humantime's `11months 30days 3h 50m 24s`), so printed configs stay readable.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("'{text}': {e}")))
    }

    pub(super) fn format(value: Duration) -> String {
        let millis = value.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if millis > 0 && millis.is_multiple_of(size) {
                return format!("{}{unit}", millis / size);
            }
        }
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let config = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.data_dir, PathBuf::from("./airlock-data"));
        assert_eq!(config.flight_addr.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nflight_addr = \"0.0.0.0:6000\"\n\
             [query]\ntimeout = \"30s\"\n[duckdb]\nmemory_limit = \"1 GiB\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            flight_addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.flight_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(config.query.timeout, Duration::from_secs(30));
        assert_eq!(config.duckdb.memory_limit, ByteSize::gib(1));
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[query]\ntimeot = \"30s\"\n").unwrap();
        let err = Config::load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("timeot"), "{err}");

        let err = Config::load(&ServeArgs {
            config: Some(dir.path().join("nope.toml")),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }), "{err}");
    }

    /// The example in the README's Configuration section is a working file.
    #[test]
    fn the_readme_example_config_loads() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.toml");
        std::fs::write(&path, example).unwrap();
        let config = Config::load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(config.limits.max_rows, 100_000);
        assert_eq!(config.audit.retention, Duration::from_secs(180 * 24 * 3600));
        let grant = config.grants[0].clone().validate().unwrap();
        assert_eq!(grant.swarm, "emea");
        assert_eq!(grant.limits.max_rows, Some(10_000));
        assert_eq!(grant.tables.len(), 2);
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        let mut config = Config::default();
        config
            .object_store
            .insert("aws_region".into(), "eu-west-1".into());
        std::fs::write(&path, config.to_toml().unwrap()).unwrap();
        let loaded = Config::load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(loaded, config);
    }

    #[test]
    fn durations_print_in_whole_units() {
        assert_eq!(
            duration_text::format(Duration::from_secs(365 * 86_400)),
            "365d"
        );
        assert_eq!(duration_text::format(Duration::from_secs(12 * 3600)), "12h");
        assert_eq!(duration_text::format(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text::format(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn half_tls_is_refused() {
        let err = Config::load(&ServeArgs {
            tls_cert: Some("cert.pem".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }
}

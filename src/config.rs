//! Configuration: the command line, `AIRLOCK_*` environment variables, an
//! optional TOML file and built-in defaults, layered in that order of
//! precedence (flag > environment > file > default).
//!
//! Every setting has a flag (with its environment variable, shown by
//! `--help`) and a key in the TOML file; the file's layout is the
//! serialization of [`Settings`], which `airlock config` prints.
//!
//! This is the composition root: each module owns its settings struct
//! (`auth::AuthConfig`, `replica::DuckDbConfig`, `query::QueryConfig`,
//! `sync::SyncSettings`, …), `server::Settings` gathers them, and this module
//! fills them in. Nothing in the library imports it.
//! Secrets are not settings: `AIRLOCK_ADMIN_PASSWORD`, `AIRLOCK_SECRETS_KEY` and
//! `AIRLOCK_JWT_SECRET` are read from the environment only, so they never
//! appear in a config dump, a process list or a log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use crate::server::{LogFormat, Settings};

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
    /// Run the server: Flight SQL, and the HTTP port (health, JSON API, MCP).
    Serve(ServeArgs),
    /// Print the effective configuration (defaults, file, environment and
    /// flags merged) as TOML, ready to save as a config file.
    Config(ServeArgs),
    /// Ask the server configured so (its HTTP port, `--http-addr`) whether
    /// it is ready: exit 0 when `/readyz` answers 200, 1 otherwise. For
    /// container health checks, where there is no curl.
    Healthcheck(ServeArgs),
    /// MCP over stdio for a local agent runtime (Claude Desktop, an IDE):
    /// a bridge to a running server's /mcp endpoint, with your token.
    /// Configure the runtime to start `airlock mcp --token …`.
    Mcp(McpArgs),
}

/// Flags of `airlock mcp`.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// Your airlock token (an agent, swarm or admin bearer token); every
    /// tool runs with its grants.
    #[arg(
        long,
        env = "AIRLOCK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,

    /// The MCP endpoint of a running airlock server.
    #[arg(
        long,
        env = "AIRLOCK_MCP_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080/mcp"
    )]
    pub server: url::Url,
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

    /// Address the HTTP port (health, metrics, JSON API, MCP) listens on, or `none` [default: 127.0.0.1:8080]
    #[arg(long, env = "AIRLOCK_HTTP_ADDR", value_name = "HOST:PORT|none")]
    pub http_addr: Option<crate::http::HttpAddr>,

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

    /// PEM certificate chain; with --tls-key, serves Flight SQL and the HTTP port over TLS.
    #[arg(long, env = "AIRLOCK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = "AIRLOCK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Keep metadata (tokens, grants, registrations, jobs, …) in Postgres, shared by the nodes of a
    /// cluster: `postgres://user@host/db` (TLS required unless `?sslmode=disable`; `sslrootcert=FILE`
    /// names a CA). Needs AIRLOCK_JWT_SECRET, AIRLOCK_SECRETS_KEY and an object-store artifact store.
    /// Never printed by `airlock config` (it may hold a password).
    #[arg(long, env = "AIRLOCK_META_URL", value_name = "URL")]
    pub meta_url: Option<String>,

    /// Where the cluster's writer publishes each synced table for the other nodes (with --meta-url):
    /// `s3://bucket/prefix` or a directory every node reaches [config: sync.snapshot_store]
    #[arg(long, env = "AIRLOCK_SNAPSHOT_STORE", value_name = "URL")]
    pub snapshot_store: Option<String>,

    /// Log filter in `tracing` syntax, e.g. `info` or `airlock=debug` [default: info]
    #[arg(long, env = "AIRLOCK_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log format: `text` or `json` [default: text]
    #[arg(long, env = "AIRLOCK_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Merges defaults, the config file named by `args.config`, and the
/// flags/environment in `args` (clap already resolved those two).
pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = &args.config {
        if !Path::new(path).is_file() {
            return Err(ConfigError::MissingFile { path: path.clone() });
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = args.overrides(figment);
    let settings: Settings = figment.extract().map_err(Box::new)?;
    validate(&settings)?;
    Ok(settings)
}

fn validate(settings: &Settings) -> Result<(), ConfigError> {
    match (&settings.tls.cert, &settings.tls.key) {
        (Some(_), None) => Err(ConfigError::HalfTls { given: "tls.cert" }),
        (None, Some(_)) => Err(ConfigError::HalfTls { given: "tls.key" }),
        _ => Ok(()),
    }
}

/// The settings as TOML, for `airlock config`.
pub fn to_toml(settings: &Settings) -> Result<String, toml::ser::Error> {
    toml::to_string_pretty(settings)
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
        set!("http_addr", self.http_addr);
        if self.demo {
            figment = figment.merge(Serialized::default("demo", true));
        }
        set!(
            "query.timeout",
            self.query_timeout.map(crate::duration_text::format)
        );
        set!("query.memory_limit", self.query_memory_limit);
        set!("duckdb.threads", self.duckdb_threads);
        set!("duckdb.memory_limit", self.duckdb_memory_limit);
        set!("sync.parallelism", self.sync_parallelism);
        set!("sync.snapshot_store", self.snapshot_store);
        set!("tls.cert", self.tls_cert);
        set!("tls.key", self.tls_key);
        set!("log.filter", self.log);
        set!("log.format", self.log_format);
        figment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let config = load(&ServeArgs::default()).unwrap();
        assert_eq!(config, Settings::default());
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
        let config = load(&args).unwrap();
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
        let err = load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("timeot"), "{err}");

        let err = load(&ServeArgs {
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
        let config = load(&ServeArgs {
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
        let mut config = Settings::default();
        config
            .object_store
            .insert("aws_region".into(), "eu-west-1".into());
        std::fs::write(&path, to_toml(&config).unwrap()).unwrap();
        let loaded = load(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(loaded, config);
    }

    #[test]
    fn half_tls_is_refused() {
        let err = load(&ServeArgs {
            tls_cert: Some("cert.pem".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }
}

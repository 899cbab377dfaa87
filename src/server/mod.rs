//! Assembling a server from its configuration, and running it.
//!
//! [`App::open`] opens the data directory (metadata, secrets, replica) and
//! wires the modules together; [`run`] serves Flight SQL (and the HTTP port)
//! on listeners until a shutdown signal. `main` and the tests use exactly these two calls, the
//! tests with a listener on `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::actions::Actions;
use crate::audit::{AuditLog, AuditSource};
use crate::auth::{AdminPassword, AuthError, Authenticator, TokenService};
use crate::context::{ContextError, ContextService, ContextTables};
use crate::flight::{AirlockFlightSql, Audited};
use crate::gateway::Gateway;
use crate::jobs::{JobError, JobStore};
use crate::meta::{Cache, MetaError};
use crate::policy::{GrantStore, PolicyError};
use crate::query::{QueryEngine, QueryError};
use crate::replica::{Replica, ReplicaError};
use crate::secrets::SecretBox;
use crate::sync::{Connections, SnowflakeConnections, Sources, SyncError, SyncService};
use crate::tools::artifacts::{
    self, ArtifactError, ArtifactService, ArtifactSettings, ArtifactTables,
};

mod cluster;
mod stores;

use cluster::{SharedAudit, node_name};
pub use stores::Secrets;
use stores::{open_meta, open_snapshots};

/// Largest message a client may send (DoPut parameters, action bodies).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Start-up and serving failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Metadata store.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Secrets and tokens.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Replica.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// Query engine.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// Sync service.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Grants.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The artifact store.
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    /// The jobs of the data tools.
    #[error(transparent)]
    Jobs(#[from] JobError),
    /// The context store could not be loaded.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// TLS files.
    #[error("TLS: {0}")]
    Tls(String),
    /// A config section that cannot work (a missing secret, say).
    #[error("config: {0}")]
    Config(String),
    /// The HTTP server failed.
    #[error("serving HTTP failed: {0}")]
    Http(std::io::Error),
    /// The gRPC server failed.
    #[error("serving Flight SQL failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Everything a server is opened with. Its serialization is the layout of
/// the config file (`airlock config` prints it); `config` fills it from
/// defaults, the file, the environment and flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the replica, metadata and secrets live.
    pub data_dir: PathBuf,
    /// Flight SQL listen address.
    pub flight_addr: SocketAddr,
    /// HTTP listen address (health and readiness), or `none`.
    pub http_addr: crate::http::HttpAddr,
    /// Load the generated demo dataset at start.
    pub demo: bool,
    /// Query execution limits.
    pub query: crate::query::QueryConfig,
    /// Limits on agents' queries where their grant sets none.
    pub limits: crate::query::LimitDefaults,
    /// The audit trail.
    pub audit: crate::audit::AuditConfig,
    /// DuckDB replica settings.
    pub duckdb: crate::replica::DuckDbConfig,
    /// Token lifetimes.
    pub auth: crate::auth::AuthConfig,
    /// Replication settings.
    pub sync: crate::sync::SyncSettings,
    /// TLS for the Flight endpoint and the HTTP port; absent means plaintext.
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
    /// Artifacts: where they are stored, size limit, quota, lifetimes.
    pub artifacts: ArtifactSettings,
    /// Grants to store at start, unless a grant for the same swarm/agent
    /// is already stored (changes made with actions survive restarts).
    pub grants: Vec<crate::policy::Grant>,
    /// Language models for `nl.*`, `finetune.*` and hybrid search.
    pub llm: crate::llm::LlmSettings,
    /// Agent context: how often outdated scans are refreshed.
    pub context: crate::context::ContextSettings,
    /// The MCP endpoint (`/mcp` on the HTTP port).
    pub mcp: crate::mcp::McpSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./airlock-data"),
            flight_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: crate::http::HttpAddr::default(),
            demo: false,
            query: crate::query::QueryConfig::default(),
            limits: crate::query::LimitDefaults::default(),
            audit: crate::audit::AuditConfig::default(),
            duckdb: crate::replica::DuckDbConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            sync: crate::sync::SyncSettings::default(),
            tls: TlsConfig::default(),
            object_store: BTreeMap::new(),
            snowflake: BTreeMap::new(),
            log: LogConfig::default(),
            artifacts: ArtifactSettings::default(),
            grants: Vec::new(),
            llm: crate::llm::LlmSettings::default(),
            context: crate::context::ContextSettings::default(),
            mcp: crate::mcp::McpSettings::default(),
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
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

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// Everything a running server holds.
#[derive(Debug)]
pub struct App {
    /// Effective settings.
    pub settings: Settings,
    /// Credentials and token rules.
    pub auth: Arc<Authenticator>,
    /// Planning and execution.
    pub query: Arc<QueryEngine>,
    /// Flight actions.
    pub actions: Arc<Actions>,
    /// Registrations and syncs.
    pub sync: Arc<SyncService>,
    /// The DuckDB replica.
    pub replica: Arc<Replica>,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// Artifacts.
    pub artifacts: Arc<ArtifactService>,
    /// The token Prometheus reads `/metrics` with, if set.
    pub metrics_token: Option<String>,
}

/// A freshly opened app, and the admin password if it was just generated.
#[derive(Debug)]
pub struct Opened {
    /// The app.
    pub app: Arc<App>,
    /// Generated on first start without `AIRLOCK_ADMIN_PASSWORD`; print once.
    pub generated_password: Option<String>,
}

impl App {
    /// Opens the data directory and builds every module.
    pub async fn open(settings: Settings, secrets: Secrets) -> Result<Opened, ServerError> {
        let mut config = settings;
        for dir in [
            config.data_dir.clone(),
            config.data_dir.join("tmp").join("datafusion"),
        ] {
            std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        // Absolute from here on: sources under it (the demo) and DuckDB's
        // directory settings must not depend on the working directory.
        config.data_dir =
            config
                .data_dir
                .canonicalize()
                .map_err(|source| ServerError::DataDir {
                    path: config.data_dir.clone(),
                    source,
                })?;
        let data_dir = config.data_dir.clone();
        restrict_permissions(&data_dir);
        let meta = open_meta(&config, &secrets, &data_dir).await?;
        let password = AdminPassword::initialize(&meta, secrets.admin_password.as_deref()).await?;
        let tokens = TokenService::open(
            meta.clone(),
            &data_dir.join("secrets"),
            secrets.jwt_secret.as_deref().map(str::as_bytes),
        )
        .await?;
        let auth = Arc::new(Authenticator::new(
            Arc::clone(&tokens),
            password.password,
            config.auth.clone(),
        ));
        let replica = Replica::open(&data_dir, &config.duckdb)?;
        let grants = Arc::new(GrantStore::open(meta.clone(), config.grants.clone()).await?);
        let node = node_name(&config);
        // A cluster's nodes keep one trail, in their Postgres.
        let audit = match meta.postgres() {
            Some(pool) => AuditLog::open_shared(pool, node.clone(), config.audit.retention).await?,
            None => AuditLog::open(&replica, config.audit.retention)?,
        };
        let (system_tables, audit_table) = match audit.source() {
            AuditSource::Replica(table) => (vec![(AuditLog::table_name(), table)], None),
            AuditSource::Postgres(table) => (vec![], Some(table)),
        };
        let artifacts = ArtifactService::open(
            meta.clone(),
            &data_dir,
            config.artifacts.clone(),
            &config.object_store,
        )
        .await?;
        let mut query = QueryEngine::new(
            Arc::clone(&replica),
            Arc::clone(&grants),
            config.query.clone(),
            config.limits,
            system_tables,
            vec![Arc::new(ArtifactTables(Arc::clone(&artifacts)))],
            &data_dir.join("tmp").join("datafusion"),
        )?;
        if let Some(limits) = meta.shared_limits() {
            query.share_limits(limits, node.clone());
        }
        let query = Arc::new(query);
        if let Some(table) = audit_table {
            query.add_extra_tables(Arc::new(SharedAudit(table)));
        }
        let store_url = url::Url::parse(artifacts::STORE_URL)
            .map_err(|e| ServerError::Config(format!("artifact store URL: {e}")))?;
        query.register_object_store(&store_url, artifacts.store());
        let tool_jobs = JobStore::open(meta.clone(), node.clone()).await?;
        let meta_for_context = meta.clone();
        let snowflake =
            SnowflakeConnections::from_config(&config.snowflake).map_err(ServerError::Config)?;
        let sealing = SecretBox::open(&data_dir.join("secrets"), secrets.secrets_key.as_deref())
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let connections = Connections::open(meta.clone(), sealing, snowflake)
            .await
            .map_err(SyncError::from)?;
        let connections_cache = Arc::downgrade(&connections) as Weak<dyn Cache>;
        let sync = SyncService::open(
            meta,
            data_dir.clone(),
            Arc::clone(&replica),
            Sources::new(config.object_store.clone(), connections),
            config.sync.clone(),
            node,
            open_snapshots(&config, &secrets)?,
        )
        .await?;
        let llm = Arc::new(
            crate::llm::Llm::from_settings(&config.llm)
                .map_err(|e| ServerError::Config(e.to_string()))?,
        );
        let context = ContextService::open(
            meta_for_context.clone(),
            Arc::clone(&query),
            Arc::clone(&tool_jobs),
            llm.embeddings()
                .cloned()
                .map(|provider| (provider, config.llm.embeddings_weight)),
        )
        .await?;
        // In a cluster, what other nodes change reaches this node's caches.
        drop(meta_for_context.follow(vec![
            Arc::downgrade(&tokens) as Weak<dyn Cache>,
            Arc::downgrade(&grants) as Weak<dyn Cache>,
            Arc::downgrade(&artifacts) as Weak<dyn Cache>,
            connections_cache,
            Arc::downgrade(&context) as Weak<dyn Cache>,
            Arc::downgrade(&sync) as Weak<dyn Cache>,
        ]));
        let nl = crate::nl::NlService::open(
            llm,
            Arc::clone(&context),
            Arc::clone(&query),
            Arc::clone(&artifacts),
            Arc::clone(&tool_jobs),
            meta_for_context,
        )
        .await
        .map_err(|e| ServerError::Config(format!("opening nl: {e}")))?;
        query.add_extra_tables(Arc::new(ContextTables(Arc::downgrade(&context))));
        context.rescan_stale(config.context.rescan_interval);
        let actions = Arc::new(Actions::new(crate::actions::Services {
            auth: Arc::clone(&auth),
            sync: Arc::clone(&sync),
            query: Arc::clone(&query),
            grants: Arc::clone(&grants),
            artifacts: Arc::clone(&artifacts),
            jobs: tool_jobs,
            context,
            nl,
        }));
        Ok(Opened {
            app: Arc::new(App {
                settings: config,
                auth,
                query,
                actions,
                sync,
                replica,
                audit,
                artifacts,
                metrics_token: secrets.metrics_token,
            }),
            generated_password: password.generated,
        })
    }
}

impl App {
    /// What the front ends call through.
    pub fn gateway(&self) -> Gateway {
        Gateway {
            auth: Arc::clone(&self.auth),
            query: Arc::clone(&self.query),
            actions: Arc::clone(&self.actions),
            artifacts: Arc::clone(&self.artifacts),
            audit: Arc::clone(&self.audit),
            sync: Arc::clone(&self.sync),
        }
    }
}

/// Serves Flight SQL on `listener`, and HTTP on `http` if given, until
/// `shutdown` completes or either server fails; both drain their requests
/// in flight before this returns.
pub async fn run(
    listener: TcpListener,
    http: Option<TcpListener>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let mut builder = Server::builder()
        // Large windows let one stream fill a fast link; the defaults (64 KiB)
        // cap a single scan's throughput well below what DuckDB produces.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    let mut http_tls = None;
    if let (Some(cert), Some(key)) = (&app.settings.tls.cert, &app.settings.tls.key) {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        // The HTTP port serves the same certificate.
        http_tls = Some(crate::http::server_config(cert, key).map_err(ServerError::Tls)?);
    }
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&app)));
    let expiry = tokio::spawn(remove_expired_artifacts(Arc::clone(&app.artifacts)));
    let audit = Arc::clone(&app.audit);
    let gateway = app.gateway();
    let flight = AirlockFlightSql::new(gateway.clone());
    let service = FlightServiceServer::new(Audited::new(flight, Arc::clone(&audit)))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    // Server::tcp_nodelay only applies to listeners tonic binds itself; with
    // our own listener each accepted socket is set here. Without it, Nagle's
    // algorithm and delayed ACKs add ~40 ms to every small response.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    // One stop for both ports: the signal, or either server ending.
    let stop = CancellationToken::new();
    let flight = async {
        let served = builder
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
            .await;
        stop.cancel();
        served
    };
    let http = async {
        let Some(listener) = http else {
            return Ok(());
        };
        let listening = listener.local_addr().ok();
        let (mcp, mcp_sessions) = crate::mcp::router(
            gateway.clone(),
            &app.settings.mcp,
            listening,
            stop.child_token(),
        );
        let services = crate::http::Services {
            gateway,
            replica: Arc::clone(&app.replica),
            sync: Arc::clone(&app.sync),
            sessions: mcp_sessions,
            tls: http_tls.is_some(),
            metrics_token: app.metrics_token.clone(),
        };
        let router = crate::http::router(services.clone())
            .merge(crate::dashboard::router(services))
            .merge(mcp);
        let served =
            crate::http::serve(listener, http_tls, router, stop.clone().cancelled_owned()).await;
        stop.cancel();
        served
    };
    let signal = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
    };
    let (result, http_result, ()) = tokio::join!(flight, http, signal);
    housekeeping.abort();
    expiry.abort();
    // Records of the last requests are on disk before the process exits.
    let flushed = tokio::task::spawn_blocking(move || audit.flush(Duration::from_secs(10))).await;
    if let Err(e) = flushed {
        tracing::warn!(error = %e, "flushing the audit trail failed");
    }
    result?;
    http_result.map_err(ServerError::Http)
}

/// Periodic cleanup: forget token records a day after they expire.
async fn housekeeping(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match app
            .auth
            .tokens()
            .purge_expired(Duration::from_secs(24 * 3600))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged expired token records"),
            Err(e) => tracing::warn!(error = %e, "token purge failed"),
        }
    }
}

/// Expired artifacts are unreadable from the instant they expire; this
/// removes their records and objects soon after.
async fn remove_expired_artifacts(artifacts: Arc<ArtifactService>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        match artifacts.remove_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired artifacts"),
            Err(e) => tracing::warn!(error = %e, "removing expired artifacts failed"),
        }
    }
}

/// The data directory holds secrets and replicas: owner access only.
fn restrict_permissions(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not restrict data directory permissions");
        }
    }
}

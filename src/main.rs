//! The `airlock` binary: parse flags, set up logging, serve.

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use airlock::config::{self, Cli, Command};
use airlock::server::{App, LogFormat, Secrets, Settings, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, command) = match cli.command {
        Command::Serve(args) => (args, Mode::Serve),
        Command::Config(args) => (args, Mode::Config),
        Command::Healthcheck(args) => (args, Mode::Healthcheck),
        Command::Mcp(args) => return mcp_bridge(args),
    };
    let config = match config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("airlock: {e}");
            return ExitCode::from(2);
        }
    };
    if command == Mode::Healthcheck {
        return healthcheck(&config);
    }
    if command == Mode::Config {
        return match config::to_toml(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("airlock: cannot print the configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(&config);
    let Some(runtime) = runtime(None) else {
        return ExitCode::FAILURE;
    };
    let mut secrets = Secrets::from_env();
    if let Some(url) = &args.meta_url {
        secrets.meta_url = Some(url.clone());
    }
    match runtime.block_on(serve_until_signal(config, secrets)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "airlock stopped");
            eprintln!("airlock: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `airlock mcp`: stdio to a running server's /mcp. Logs go to stderr
/// (stdout carries the protocol), warnings only unless AIRLOCK_LOG says.
fn mcp_bridge(args: config::McpArgs) -> ExitCode {
    if args.token.trim().is_empty() {
        eprintln!("airlock: --token (or AIRLOCK_TOKEN) must not be empty");
        return ExitCode::from(2);
    }
    let filter = std::env::var("AIRLOCK_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let Some(runtime) = runtime(Some(2)) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(airlock::mcp::bridge_stdio(
        args.server.to_string(),
        args.token,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded runtime (with `workers` threads, or one per CPU);
/// none, said on stderr, when the OS refuses.
fn runtime(workers: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("airlock: cannot start the async runtime: {e}");
            None
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    Config,
    Healthcheck,
}

/// `airlock healthcheck`: GET /readyz on the configured HTTP port (on
/// loopback when it listens on every interface).
fn healthcheck(config: &Settings) -> ExitCode {
    let Some(addr) = config.http_addr.0 else {
        eprintln!(
            "airlock: the HTTP port is off (http_addr = none): set --http-addr to check readiness"
        );
        return ExitCode::from(2);
    };
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let tls = config.tls.cert.is_some();
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{}/readyz", SocketAddr::new(ip, addr.port()));
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                // The server checks itself on loopback: its certificate may
                // name another host, or be self-signed; nothing secret is sent.
                let client = reqwest::Client::builder()
                    .danger_accept_invalid_certs(tls)
                    .build()
                    .map_err(|e| e.to_string())?;
                let response = client
                    .get(&url)
                    .timeout(std::time::Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                Ok((status, body))
            })
        });
    match asked {
        Ok((status, _)) if status.is_success() => ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!("airlock: not ready ({status} from {url}): {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("airlock: cannot reach {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(
    config: Settings,
    secrets: Secrets,
) -> Result<(), Box<dyn std::error::Error>> {
    let addr = config.flight_addr;
    let demo = config.demo;
    let opened = App::open(config, secrets).await?;
    if let Some(password) = &opened.generated_password {
        // Printed once, to the terminal only: never through the log.
        eprintln!(
            "\n  airlock generated an admin password (shown only now; only its hash is stored):\n\n      {password}\n\n  \
             Set AIRLOCK_ADMIN_PASSWORD to choose your own.\n"
        );
    }
    if demo {
        let rows = airlock::demo::load(&opened.app.sync, &opened.app.settings.data_dir).await?;
        tracing::info!(rows, "demo dataset loaded into schema 'demo'");
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %opened.app.settings.data_dir.display(),
        tls = opened.app.settings.tls.cert.is_some(),
        "airlock is serving Flight SQL"
    );
    let http = match opened.app.settings.http_addr.0 {
        None => None,
        Some(addr) => {
            let http = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (HTTP): {e}"))?;
            tracing::info!(addr = %http.local_addr()?, "airlock is serving HTTP");
            Some(http)
        }
    };
    run(listener, http, opened.app, shutdown_signal()).await?;
    tracing::info!("airlock stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

fn init_tracing(config: &Settings) {
    let filter = EnvFilter::try_new(&config.log.filter).unwrap_or_else(|e| {
        eprintln!(
            "airlock: invalid log filter '{}': {e}; using 'info'",
            config.log.filter
        );
        EnvFilter::new("info")
    });
    // Colours only for a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

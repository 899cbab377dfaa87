//! The `airlock` binary: parse flags, set up logging, serve.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use airlock::config::{self, Cli, Command};
use airlock::server::{App, LogFormat, Secrets, Settings, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, serve) = match cli.command {
        Command::Serve(args) => (args, true),
        Command::Config(args) => (args, false),
    };
    let config = match config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("airlock: {e}");
            return ExitCode::from(2);
        }
    };
    if !serve {
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("airlock: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_until_signal(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "airlock stopped");
            eprintln!("airlock: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(config: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let addr = config.flight_addr;
    let demo = config.demo;
    let opened = App::open(config, Secrets::from_env()).await?;
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

//! The candlecast binary: `.env`, configuration, telemetry, listener, then the app
//! until SIGTERM or Ctrl-C. Exit codes: 0 after a shutdown signal, 2 for a
//! configuration error (naming the variable), 1 for anything else.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use candlecast::config::Config;
use candlecast::telemetry::Chain;

/// What the runtime gives its remaining tasks after the app stopped; a blocking
/// database call that hangs is abandoned, so the exit deadline holds.
const RUNTIME_STOP: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("candlecast: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve());
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

async fn serve() -> ExitCode {
    // A missing .env is normal; a malformed one is worth saying.
    let dotenv = match candlecast::config::dotenv::load() {
        Ok(dotenv) => dotenv,
        Err(err) => {
            eprintln!("candlecast: .env: {}", Chain(&err));
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("candlecast: {err}");
            return ExitCode::from(2);
        }
    };
    config.store.mongo_uri_from_dotenv = dotenv.mongo_uri_from_file;
    candlecast::telemetry::init_with(&config.log.filter, config.log.format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "starting candlecast");
    for warning in &dotenv.warnings {
        tracing::warn!("{warning}");
    }

    candlecast::http::fit_open_files(&mut config.feed);
    let address = SocketAddr::new(config.bind_addr, config.port);
    let listener = match candlecast::http::bind(address) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%address, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match candlecast::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %Chain(&err), "candlecast stopped with an error");
            if let Some(config_error) = err.config_error() {
                eprintln!("candlecast: {config_error}");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM (what Docker and Railway send).
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
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

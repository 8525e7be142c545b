//! Running the service: [`run`] and [`run_until`] for a library caller with a
//! bound listener, and [`serve`], the `serve` command as the binary runs it (stop
//! signals first, then `.env`, the configuration, telemetry, the listener and the
//! service, down to the exit code: 0 after a stop signal, 2 for a bad setting
//! naming it, 1 for anything else).

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::signals::StopSignals;
use super::{App, AppError, StartError};
use crate::config::Config;
use crate::config::dotenv::Dotenv;
use crate::telemetry::Chain;

/// Runs the service until SIGTERM, SIGINT or SIGHUP (SIGHUP: graceful stop, same
/// as SIGTERM). The signals are heard from the first instant: one during start-up
/// (a database or exchange that does not answer) ends it with exit code 0 within
/// 2 s, as PID 1 of a container too.
pub async fn serve() -> ExitCode {
    // Before anything can wait: from here no stop signal is lost or fatal.
    let stop = match StopSignals::listen() {
        Ok(signals) => signals.into_token(),
        Err(err) => {
            eprintln!("candlecast: cannot listen for stop signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (mut config, dotenv) = match configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    crate::telemetry::init_with(&config.log.filter, config.log.format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.summary(), "starting candlecast");
    for warning in &dotenv.warnings {
        tracing::warn!("{warning}");
    }

    crate::http::fit_open_files(&mut config.feed);
    let address = SocketAddr::new(config.bind_addr, config.port);
    let listener = match crate::http::bind(address) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%address, error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match run_until(config, listener, stop).await {
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

/// `.env`, then the configuration, for either command; or the exit code 2 after
/// saying why not.
pub(crate) fn configure() -> Result<(Config, Dotenv), ExitCode> {
    // A missing .env is normal; a malformed one is worth saying.
    let dotenv = match crate::config::dotenv::load() {
        Ok(dotenv) => dotenv,
        Err(err) => {
            eprintln!("candlecast: .env: {}", Chain(&err));
            return Err(ExitCode::from(2));
        }
    };
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("candlecast: {err}");
            return Err(ExitCode::from(2));
        }
    };
    config.store.mongo_uri_from_dotenv = dotenv.mongo_uri_from_file;
    Ok((config, dotenv))
}

/// Builds the app on `listener` and runs it until `shutdown` completes, which
/// also ends every wait of start-up.
///
/// # Errors
/// [`AppError`]: it could not start, or the HTTP server failed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => info!("shutdown requested"),
            _ = cancel.cancelled() => {}
        }
        cancel.cancel();
    });
    run_until(config, listener, stop).await
}

/// Builds the app on `listener` and serves until `stop` is cancelled; a stop
/// during start-up ends it there, as a stop, not a failure.
///
/// # Errors
/// [`AppError`]: it could not start, or the HTTP server failed.
pub async fn run_until(
    config: Config,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), AppError> {
    // Whatever the outcome, nothing waits on this token after it.
    let _done = stop.clone().drop_guard();
    match App::build(config, listener, stop).await {
        Ok(app) => app.serve().await,
        Err(StartError::Stopped) => {
            info!("stopped during startup");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

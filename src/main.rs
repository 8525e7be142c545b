//! The candlecast binary: the command line, `.env`, configuration, telemetry, then
//! the service until SIGTERM or Ctrl-C (`candlecast`, `candlecast serve`), or a
//! backfill of a range (`candlecast backfill`). Exit codes: 0 after a shutdown
//! signal or a complete backfill, 2 for a bad argument or configuration (naming
//! it), 1 for anything else.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use candlecast::backfill::{BackfillArgs, Console};
use candlecast::cli::Command;
use candlecast::config::Config;
use candlecast::config::dotenv::Dotenv;
use candlecast::telemetry::Chain;
use tokio_util::sync::CancellationToken;

/// What the runtime gives its remaining tasks after the app stopped; a blocking
/// database call that hangs is abandoned, so the exit deadline holds.
const RUNTIME_STOP: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let command = match candlecast::cli::parse(std::env::args_os()) {
        Ok(command) => command,
        Err(not_run) => return not_run.report(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("candlecast: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match command {
            Command::Serve => serve().await,
            Command::Backfill(args) => backfill(args).await,
        }
    });
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

/// `.env`, then the configuration; or the exit code 2 after saying why not.
fn configure() -> Result<(Config, Dotenv), ExitCode> {
    // A missing .env is normal; a malformed one is worth saying.
    let dotenv = match candlecast::config::dotenv::load() {
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

async fn serve() -> ExitCode {
    let (mut config, dotenv) = match configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
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

/// The backfill command: its report on standard output, progress and logs on
/// standard error. The first SIGINT or SIGTERM stops it after the batch in flight;
/// a second stops it at once.
async fn backfill(args: BackfillArgs) -> ExitCode {
    let (config, dotenv) = match configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let console = Console::for_stderr();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    candlecast::telemetry::init_writing_to(
        &config.log.filter,
        config.log.format,
        console.log_writer(),
        ansi,
    );
    for warning in &dotenv.warnings {
        tracing::warn!("{warning}");
    }
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!("stopping after the requests in flight; again to stop at once");
        signalled.cancel();
        shutdown_signal().await;
        eprintln!("candlecast: stopped at once");
        std::process::exit(1);
    });
    match candlecast::backfill::run(config, args, console, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("candlecast: {err}");
            ExitCode::from(err.exit_code())
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

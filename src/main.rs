//! The candlecast binary: parses the command line and hands over to the library,
//! `candlecast` / `candlecast serve` to [`candlecast::app::serve`], `candlecast
//! backfill` to [`candlecast::backfill::command`]. Exit codes: 0 after a stop
//! signal (SIGTERM, SIGINT, SIGHUP) or a complete backfill, 2 for a bad argument
//! or configuration (naming it), 1 for anything else.

use std::process::ExitCode;
use std::time::Duration;

use candlecast::cli::Command;

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
    // Each command installs its stop-signal handlers before its first wait.
    let code = runtime.block_on(async {
        match command {
            Command::Serve => candlecast::app::serve().await,
            Command::Backfill(args) => candlecast::backfill::command(args).await,
        }
    });
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

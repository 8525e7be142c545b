//! `candlecast backfill` as the binary runs it: stop signals first, then `.env`,
//! the configuration and telemetry on standard error, the backfill, the exit code.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{BackfillArgs, Console};
use crate::app::signals::StopSignals;

/// Runs the backfill: its report on standard output, progress and logs on standard
/// error. The first SIGINT, SIGTERM or SIGHUP (SIGHUP: graceful stop, same as
/// SIGTERM) stops it after the batch in flight and prints the summary; a second
/// stops it at once (exit code 1). Exit codes are [`super::BackfillError::exit_code`]'s.
pub async fn command(args: BackfillArgs) -> ExitCode {
    // Before anything can wait, so that no signal takes its default action.
    let mut signals = match StopSignals::listen() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("candlecast: cannot listen for stop signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (config, dotenv) = match crate::app::configure() {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let console = Console::for_stderr();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    crate::telemetry::init_writing_to(
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
        let signal = signals.recv().await;
        tracing::warn!(
            signal,
            "stopping after the requests in flight; again to stop at once"
        );
        signalled.cancel();
        signals.recv().await;
        eprintln!("candlecast: stopped at once");
        std::process::exit(1);
    });
    match super::run(config, args, console, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("candlecast: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

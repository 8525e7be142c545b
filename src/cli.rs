//! The command line: `candlecast` (or `candlecast serve`) runs the service,
//! `candlecast backfill …` fills the store with a range of history. Only arguments
//! live here; settings come from the environment and `.env` (see `config`).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

use crate::backfill::BackfillArgs;
use crate::config::ArgumentError;

/// Live and persisted Binance USD-M futures candles, fanned out over websockets.
#[derive(Debug, Parser)]
#[command(
    name = "candlecast",
    version,
    after_help = "Settings come from the environment and a .env file in the working \
                  directory (see .env.example); both commands read the same ones."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the binary was asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default): ingest closed candles, store them and serve
    /// them over websockets until SIGTERM, SIGHUP or Ctrl-C
    Serve,
    /// Fill the store with every closed INTERVAL candle of a range from Binance's
    /// REST API, fetching only what it lacks; safe beside a running service
    Backfill(BackfillArgs),
}

/// Why the arguments do not name a command to run.
#[derive(Debug)]
pub enum NotRun {
    /// `--help` or `--version`: printed as clap renders it, exit code 0.
    Asked(clap::Error),
    /// Arguments that cannot be used: one line, exit code 2.
    Invalid(ArgumentError),
}

impl NotRun {
    /// Prints what it has to say and returns the exit code.
    pub fn report(self) -> ExitCode {
        match self {
            NotRun::Asked(shown) => {
                let _ = shown.print();
                ExitCode::SUCCESS
            }
            NotRun::Invalid(err) => {
                eprintln!("candlecast: {err}");
                ExitCode::from(2)
            }
        }
    }
}

/// Reads the command from `args` (the program name first); no subcommand is
/// [`Command::Serve`].
///
/// # Errors
/// [`NotRun`]: help or version was asked for, or the arguments are invalid.
pub fn parse<I, T>(args: I) -> Result<Command, NotRun>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli.command.unwrap_or(Command::Serve)),
        Err(err) if !err.use_stderr() => Err(NotRun::Asked(err)),
        Err(err) => Err(NotRun::Invalid(one_line(&err))),
    }
}

/// clap's error as one line naming the argument, like a configuration error names
/// its variable (clap's own has usage and tips on further lines).
fn one_line(err: &clap::Error) -> ArgumentError {
    let named = |kind| match err.get(kind) {
        Some(ContextValue::String(name)) => Some(name.clone()),
        Some(ContextValue::Strings(names)) => names.first().cloned(),
        _ => None,
    };
    // "--from <DATE>" → "--from"
    let arg = named(ContextKind::InvalidArg)
        .or_else(|| named(ContextKind::InvalidSubcommand))
        .map(|name| name.split([' ', '=']).next().unwrap_or_default().to_owned());
    let first_line = || {
        let rendered = err.render().to_string();
        let line = rendered.lines().next().unwrap_or_default();
        line.trim_start_matches("error: ").trim().to_owned()
    };
    let reason = match (err.kind(), std::error::Error::source(err)) {
        (ErrorKind::ValueValidation, Some(why)) => why.to_string(),
        (ErrorKind::MissingRequiredArgument, _) => "is required".to_owned(),
        _ => first_line(),
    };
    match arg {
        Some(arg) => ArgumentError::new(arg, reason),
        None => ArgumentError::new("arguments", reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(args: &[&str]) -> ArgumentError {
        match parse(std::iter::once("candlecast").chain(args.iter().copied())) {
            Err(NotRun::Invalid(err)) => err,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    #[test]
    fn no_subcommand_is_serve() {
        assert!(matches!(parse(["candlecast"]), Ok(Command::Serve)));
        assert!(matches!(parse(["candlecast", "serve"]), Ok(Command::Serve)));
    }

    #[test]
    fn backfill_reads_its_range_and_symbols() {
        let Ok(Command::Backfill(args)) = parse([
            "candlecast",
            "backfill",
            "--from",
            "2025-01-01",
            "--to=2025-06-30T12:00:00Z",
            "--symbols",
            "btcusdt,ETHUSDT",
        ]) else {
            panic!("a backfill command");
        };
        assert_eq!(args.from.timestamp_millis(), 1_735_689_600_000);
        assert_eq!(args.to.unwrap().timestamp_millis(), 1_751_284_800_000);
        assert_eq!(args.symbols.unwrap().0, ["BTCUSDT", "ETHUSDT"]);
    }

    #[test]
    fn a_bad_argument_is_one_line_naming_it() {
        let err = invalid(&["backfill", "--from", "yesterday"]);
        assert_eq!(err.arg, "--from");
        assert!(err.reason.contains("YYYY-MM-DD"), "{err}");
        assert_eq!(
            invalid(&["backfill", "--from", "2025-01-01", "--symbols", ""]).arg,
            "--symbols"
        );
        assert_eq!(
            invalid(&["backfill", "--from", "2025-01-01", "--bogus"]).arg,
            "--bogus"
        );
        assert_eq!(
            invalid(&["backfill"]).to_string(),
            "invalid argument: --from: is required"
        );
        assert_eq!(invalid(&["frobnicate"]).arg, "frobnicate");
        for err in [invalid(&["backfill"]), invalid(&["serve", "--port", "1"])] {
            assert_eq!(err.to_string().lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn help_and_version_are_not_errors() {
        assert!(matches!(
            parse(["candlecast", "--help"]),
            Err(NotRun::Asked(_))
        ));
        assert!(matches!(
            parse(["candlecast", "--version"]),
            Err(NotRun::Asked(_))
        ));
        let Err(NotRun::Asked(help)) = parse(["candlecast", "--help"]) else {
            unreachable!()
        };
        let help = help.render().to_string();
        assert!(
            help.contains("serve") && help.contains("backfill"),
            "{help}"
        );
    }
}

//! `candlecast backfill` run as an operator runs it: the real binary, in a directory
//! of its own, against the fake exchange and a real database.

use std::process::Stdio;
use std::time::Duration;

use candlecast::candle::Candle;

use super::fake_exchange::RestRequest;
use super::{Backend, FakeExchange};

/// What a finished run left.
#[derive(Debug)]
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Finished {
    fn from(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Finished {
    /// Both streams, for assertion messages.
    pub fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Klines requests the fake answered with rows, oldest first.
pub fn answered(fake: &FakeExchange) -> Vec<RestRequest> {
    fake.rest_requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect()
}

/// Open times the fake served closed for `symbol`, repeats kept, in serving order.
pub fn served(fake: &FakeExchange, symbol: &str) -> Vec<i64> {
    answered(fake)
        .into_iter()
        .filter(|r| r.symbol == symbol)
        .flat_map(|r| r.closed_rows.into_iter().map(|c| c.open_time))
        .collect()
}

pub fn open_times(candles: &[Candle]) -> Vec<i64> {
    candles.iter().map(|c| c.open_time).collect()
}

/// `2025-01-01T00:00:00Z` for ms since the epoch, as `--from` and `--to` take it.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `--from` and `--to` for the open times `[from, to)`.
pub fn range(from: i64, to: i64) -> Vec<String> {
    vec!["--from".into(), rfc3339(from), "--to".into(), rfc3339(to)]
}

/// The settings of a backfill of `symbols` (`SYMBOLS`) from `fake` into `backend`.
pub fn env_for(
    fake: &FakeExchange,
    backend: &Backend,
    symbols: &[&str],
) -> Vec<(&'static str, String)> {
    let mut env = backend.env();
    env.push(("BINANCE_REST_URL", fake.rest_url()));
    env.push(("SYMBOLS", symbols.join(",")));
    env
}

/// The binary with `env` and `backfill <args>`, in a fresh directory (no `.env`).
fn command(
    env: &[(&str, String)],
    args: &[String],
) -> (tokio::process::Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_candlecast"));
    command
        .env_clear()
        .current_dir(dir.path())
        .arg("backfill")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    (command, dir)
}

/// Runs `candlecast backfill <args>` to the end (at most 60 s).
pub async fn run(env: &[(&str, String)], args: &[String]) -> Finished {
    let (mut command, _dir) = command(env, args);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the backfill ends within 60 s")
        .unwrap();
    Finished::from(output)
}

/// A backfill running in the background.
pub struct Started {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// Starts `candlecast backfill <args>`.
pub fn start(env: &[(&str, String)], args: &[String]) -> Started {
    let (mut command, dir) = command(env, args);
    Started {
        child: command.spawn().expect("start candlecast backfill"),
        _dir: dir,
    }
}

impl Started {
    /// Sends SIGINT (Ctrl-C) and waits for the process to exit (at most 15 s).
    pub async fn interrupt(self) -> Finished {
        self.stop_with("INT").await
    }

    /// Sends `signal` ("INT", "TERM", "HUP") and waits for the process to exit
    /// (at most 15 s).
    pub async fn stop_with(self, signal: &str) -> Finished {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = tokio::time::timeout(Duration::from_secs(15), self.child.wait_with_output())
            .await
            .expect("the backfill exits within 15 s of the signal")
            .unwrap();
        Finished::from(output)
    }
}

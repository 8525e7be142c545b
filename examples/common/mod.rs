//! What the single-file benchmarks share: a SQLite store seeded with the fake's
//! history and older minutes, the release binary started on it against the fake,
//! and the server's CPU time read from `/proc`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlecast::store::{CandleStore, SqliteStore};

use super::fake_exchange::{FakeExchange, MINUTE};

/// Seeds `dir/data` with each symbol's history and `older` minutes before it (the
/// recent ones repeated back in time): more than a window holds.
pub async fn seed(
    fake: &FakeExchange,
    symbols: &[&str],
    dir: &Path,
    older: i64,
) -> anyhow::Result<()> {
    let store = SqliteStore::open(&dir.join("data"))?;
    for symbol in symbols {
        let recent = fake.history(symbol);
        let first = recent[0].open_time;
        let before: Vec<_> = (1..=older)
            .rev()
            .map(|back| {
                let mut candle = recent[back as usize % recent.len()].clone();
                candle.open_time = first - back * MINUTE;
                candle.close_time = candle.open_time + MINUTE - 1;
                candle
            })
            .collect();
        store.upsert(&before).await?;
        store.upsert(&recent).await?;
    }
    Ok(())
}

/// Starts `target/release/candlecast` in `dir` on a free loopback port against
/// `fake`, with `env` on top, and waits until it listens.
///
/// # Errors
/// The release binary is missing (`cargo build --release` first), or the server did
/// not listen within 30 s.
pub fn start_release(
    fake: &FakeExchange,
    dir: &Path,
    env: &[(&str, String)],
) -> anyhow::Result<(Child, SocketAddr)> {
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("candlecast"))
        .context("locating target/release")?;
    if !binary.exists() {
        bail!(
            "{} is missing: run `cargo build --release` first",
            binary.display()
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Command::new(&binary)
        .env_clear()
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("BINANCE_WS_URL", fake.ws_url())
        .env("BINANCE_REST_URL", fake.rest_url())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("the server did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((server, addr))
}

/// Stops the server with SIGTERM and waits for it.
pub fn stop(mut server: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
}

/// User plus system CPU seconds of process `pid` (Linux, 100 ticks a second).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

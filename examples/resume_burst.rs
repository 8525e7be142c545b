//! What a burst of resuming clients costs: N websocket clients connect at once with
//! `?format=candles&since=…`, against the release binary on its embedded store,
//! once with `since` inside the window (served from memory) and once 900 minutes
//! back (one store read per coin per client, 32 at a time). Like clients coming back
//! after an outage, at most 256 handshakes are in flight at once.
//!
//! ```sh
//! cargo build --release && cargo run --release --example resume_burst -- 1000
//! ```
//!
//! Prints, per case, the time from TCP connect to holding all five resume messages
//! (p50 / p99 / max), the whole burst's wall time and the server's CPU seconds.
//! Everything stays on 127.0.0.1 and stops by itself.

#[path = "../tests/common/fake_exchange.rs"]
mod fake_exchange;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use candlecast::store::{CandleStore, SqliteStore};
use fake_exchange::{FakeExchange, MINUTE};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clients: usize = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    // 1,500 minutes per symbol in the store: far more than the 100-candle window.
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("data"))?;
    for symbol in SYMBOLS {
        let recent = fake.history(symbol);
        let first = recent[0].open_time;
        let older: Vec<_> = (1..=1400)
            .rev()
            .map(|back| {
                let mut candle = recent[back as usize % recent.len()].clone();
                candle.open_time = first - back * MINUTE;
                candle.close_time = candle.open_time + MINUTE - 1;
                candle
            })
            .collect();
        store.upsert(&older).await?;
        store.upsert(&recent).await?;
    }
    drop(store);
    let newest = fake.history("BTCUSDT").last().context("history")?.open_time;

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
    let mut server = Command::new(&binary)
        .env_clear()
        .current_dir(dir.path())
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("BINANCE_WS_URL", fake.ws_url())
        .env("BINANCE_REST_URL", fake.rest_url())
        .env("INTERVALS", "1m")
        .env("MAX_CONNECTIONS", (clients + 100).to_string())
        .env("RUST_LOG", "warn")
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
    tokio::time::sleep(Duration::from_secs(1)).await;

    println!("{clients} clients resuming at once, five coins each, SQLite store");
    println!(
        "| since | served from | connect → five messages p50 / p99 / max | burst wall time | server CPU |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (label, source, back) in [
        ("50 min back", "memory", 50),
        ("900 min back", "store", 900),
    ] {
        let since = newest - back * MINUTE;
        let cpu_before = cpu_seconds(server.id());
        let started = Instant::now();
        let mut burst = JoinSet::new();
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
        for _ in 0..clients {
            let permit = std::sync::Arc::clone(&in_flight).acquire_owned().await?;
            burst.spawn(async move {
                let resumed = resume(addr, since).await;
                drop(permit);
                resumed
            });
        }
        let mut latencies = Vec::with_capacity(clients);
        while let Some(done) = burst.join_next().await {
            latencies.push(done??);
        }
        let wall = started.elapsed();
        let cpu = cpu_seconds(server.id()) - cpu_before;
        latencies.sort();
        let at = |q: f64| {
            latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        println!(
            "| {label} | {source} | {:.1} / {:.1} / {:.1} ms | {:.2} s | {:.2} s |",
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
            wall.as_secs_f64(),
            cpu
        );
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
    Ok(())
}

/// One client: connect with `since`, read the five resume messages, leave.
async fn resume(addr: SocketAddr, since: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let url = format!("ws://{addr}/?format=candles&since={since}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    let mut received = 0;
    while received < SYMBOLS.len() {
        if let Message::Text(_) = socket.next().await.context("closed early")?? {
            received += 1;
        }
    }
    let elapsed = started.elapsed();
    let _ = socket.close(None).await;
    Ok(elapsed)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// User plus system CPU seconds of process `pid` (Linux, 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
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

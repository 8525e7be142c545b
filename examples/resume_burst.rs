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

mod common;
#[path = "../tests/common/fake_exchange.rs"]
mod fake_exchange;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
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
    common::seed(&fake, &SYMBOLS, dir.path(), 1400).await?;
    let newest = fake.history("BTCUSDT").last().context("history")?.open_time;

    let (server, addr) = common::start_release(
        &fake,
        dir.path(),
        &[
            ("INTERVALS", "1m".to_owned()),
            ("MAX_CONNECTIONS", (clients + 100).to_string()),
        ],
    )?;
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
        let cpu_before = common::cpu_seconds(server.id());
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
        let cpu = common::cpu_seconds(server.id()) - cpu_before;
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
    common::stop(server);
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

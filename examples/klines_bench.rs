//! Bots polling the Binance mirror: `GET /fapi/v1/klines?symbol=…&interval=1m&limit=500`
//! across the five symbols at a fixed rate (1,000 requests a second by default),
//! against the release binary on its embedded store with windows of 1,000 candles,
//! so every answer comes from memory. The floor, measured in the same run at the
//! same rate over the same connections, is `GET /fapi/v1/ping`: what any request
//! costs this server and this load generator, which share the machine's cores.
//!
//! ```sh
//! cargo build --release && cargo run --release --example klines_bench -- 1000 10
//! ```
//!
//! Arguments: requests a second, seconds per case. Prints per case the latency
//! (p50 / p99 / max, measured from each request's scheduled time, so a stall is not
//! hidden by the requests it delays), the server's CPU per request, and the ratio of
//! each to the floor; and how many requests reached the exchange (it must be none).
//! Everything stays on 127.0.0.1 and stops by itself.

mod common;
#[path = "../tests/common/fake_exchange.rs"]
mod fake_exchange;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use fake_exchange::FakeExchange;
use tokio::task::JoinSet;

const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];
/// Keep-alive connections the load is spread over, as a few bots would hold.
const CONNECTIONS: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate: u32 = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let seconds: u64 = std::env::args().nth(2).map_or(Ok(10), |n| n.parse())?;
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    let dir = tempfile::tempdir()?;
    common::seed(&fake, &SYMBOLS, dir.path(), 1000).await?;
    let (server, addr) = common::start_release(
        &fake,
        dir.path(),
        &[
            ("INTERVALS", "1m".to_owned()),
            ("HISTORY_MAX", "1000".to_owned()),
        ],
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()?;
    let klines: Vec<String> = SYMBOLS
        .iter()
        .map(|s| format!("http://{addr}/fapi/v1/klines?symbol={s}&interval=1m&limit=500"))
        .collect();
    let ping = vec![format!("http://{addr}/fapi/v1/ping")];
    // Every answer must be whole before anything is timed.
    for url in &klines {
        let rows: Vec<serde_json::Value> = client.get(url).send().await?.json().await?;
        if rows.len() != 500 {
            bail!("{url} answered {} rows, not 500", rows.len());
        }
    }
    let asked_before = fake.rest_requests().len();

    println!(
        "{rate} requests a second for {seconds} s, {CONNECTIONS} keep-alive connections, release binary, SQLite, HISTORY_MAX=1000"
    );
    println!("| case | p50 / p99 / max | server CPU per request | p99 / floor | CPU / floor |");
    println!("| --- | --- | --- | --- | --- |");
    let floor = run(&client, &ping, rate, seconds, server.id()).await?;
    let polled = run(&client, &klines, rate, seconds, server.id()).await?;
    for (label, case) in [("ping (floor)", &floor), ("klines limit=500", &polled)] {
        println!(
            "| {label} | {:.2} / {:.2} / {:.2} ms | {:.1} µs | {:.2}x | {:.2}x |",
            case.p50_ms,
            case.p99_ms,
            case.max_ms,
            case.cpu_per_request_us,
            case.p99_ms / floor.p99_ms,
            case.cpu_per_request_us / floor.cpu_per_request_us
        );
    }
    let asked = fake.rest_requests().len() - asked_before;
    println!("requests that reached the exchange during the load: {asked}");
    common::stop(server);
    Ok(())
}

struct Case {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_per_request_us: f64,
}

/// `rate` requests a second for `seconds`, round robin over `urls`, each sent at its
/// scheduled time whatever the earlier ones are doing (an open loop).
async fn run(
    client: &reqwest::Client,
    urls: &[String],
    rate: u32,
    seconds: u64,
    pid: u32,
) -> anyhow::Result<Case> {
    let total = u64::from(rate) * seconds;
    let spacing = Duration::from_secs(1) / rate.max(1);
    let cpu_before = common::cpu_seconds(pid);
    let start = tokio::time::Instant::now();
    let urls: Arc<[String]> = urls.into();
    let mut requests = JoinSet::new();
    for n in 0..total {
        let scheduled = start + spacing * u32::try_from(n).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let urls = Arc::clone(&urls);
        requests.spawn(async move {
            let url = &urls[usize::try_from(n).unwrap_or(0) % urls.len()];
            let answer = client.get(url).send().await?;
            let status = answer.status();
            answer.bytes().await?;
            if !status.is_success() {
                bail!("{url}: {status}");
            }
            Ok::<_, anyhow::Error>(scheduled.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while let Some(done) = requests.join_next().await {
        latencies.push(done??);
    }
    let cpu = common::cpu_seconds(pid) - cpu_before;
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[index - 1].as_secs_f64() * 1000.0
    };
    Ok(Case {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        cpu_per_request_us: cpu / total as f64 * 1e6,
    })
}

//! Helpers for the `SYMBOLS=*` tests: many contracts, what the service serves of
//! them, the fake's own candles, and the request weight the fake was asked for.

use std::time::Duration;

use super::mirror::mirror_get;
use super::{FakeExchange, MINUTE, TestApp};

pub const MAJORS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// The majors and `others` generated contracts, names as the exchange lists them.
pub fn contracts(others: usize) -> Vec<String> {
    let mut names: Vec<String> = MAJORS.iter().map(|s| s.to_string()).collect();
    names.extend((0..others).map(|i| format!("C{i:03}USDT")));
    names
}

pub async fn info_symbols(app: &TestApp) -> Vec<String> {
    let info = mirror_get(app, "/api/v1/info").await.json();
    info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `/api/v1/info` lists `expected`, in its order, failing after
/// `within`.
pub async fn wait_for_info_symbols(app: &TestApp, expected: &[String], within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let listed = info_symbols(app).await;
        if listed == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listing not followed: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Request weight the fake was asked for in the busiest 60 s, klines by their
/// `limit` (Binance's table), from its own request log.
pub fn busiest_minute_weight(fake: &FakeExchange) -> u32 {
    let requests = fake.rest_requests();
    let weighed: Vec<(std::time::Instant, u32)> = requests
        .iter()
        .map(|r| {
            (
                r.at,
                candlecast::exchange::klines_weight(r.limit.unwrap_or(500)),
            )
        })
        .collect();
    weighed
        .iter()
        .map(|(from, _)| {
            weighed
                .iter()
                .filter(|(at, _)| {
                    *at >= *from && at.duration_since(*from) < Duration::from_secs(60)
                })
                .map(|(_, w)| w)
                .sum::<u32>()
        })
        .max()
        .unwrap_or(0)
}

/// `symbol`'s candles at `interval` as the service answers them, oldest first:
/// (open time, open, high, low, close, volume).
pub async fn served(
    app: &TestApp,
    symbol: &str,
    interval: &str,
    limit: usize,
) -> Vec<(i64, f64, f64, f64, f64, f64)> {
    let path = format!("/api/v1/candles/{symbol}?interval={interval}&limit={limit}");
    let answer = mirror_get(app, &path).await;
    if answer.status != 200 {
        return Vec::new();
    }
    let mut candles: Vec<_> = answer.json()["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |name: &str| c[name].as_f64().unwrap();
            (
                c["open_time"].as_i64().unwrap(),
                f("open"),
                f("high"),
                f("low"),
                f("close"),
                f("volume"),
            )
        })
        .collect();
    candles.reverse();
    candles
}

/// The fake's own closed candles of `interval` for `symbol`, the newest `limit`.
pub fn exchange_s(
    fake: &FakeExchange,
    symbol: &str,
    interval: &str,
    limit: usize,
) -> Vec<(i64, f64, f64, f64, f64, f64)> {
    let len = super::fake_exchange::intervals::interval_ms(interval).unwrap();
    let history = fake.history(symbol);
    let buckets = super::fake_exchange::intervals::aggregate(&history, interval);
    // Closed once its last minute is: a test's closes may run ahead of the wall
    // clock (their frames say so), and the service goes by the frames.
    let closed: Vec<_> = buckets
        .into_iter()
        .filter(|c| c.open_time + len <= history.last().unwrap().open_time + MINUTE)
        .map(|c| (c.open_time, c.open, c.high, c.low, c.close, c.volume))
        .collect();
    closed[closed.len().saturating_sub(limit)..].to_vec()
}

/// Waits until every contract's window at each of `intervals` holds `len` candles
/// equal to the fake's own, failing after `within`.
pub async fn windows_full(
    app: &TestApp,
    fake: &FakeExchange,
    symbols: &[String],
    intervals: &[&str],
    len: usize,
    within: Duration,
) {
    let started = std::time::Instant::now();
    let mut waiting: Vec<(&String, &str)> = symbols
        .iter()
        .flat_map(|s| intervals.iter().map(move |i| (s, *i)))
        .collect();
    while !waiting.is_empty() {
        if started.elapsed() >= within {
            let (symbol, interval) = waiting[0];
            let ours = served(app, symbol, interval, len).await;
            let theirs = exchange_s(fake, symbol, interval, len);
            panic!(
                "{} windows not full within {within:?}, e.g. {symbol} {interval}: ours {ours:?}, the exchange's {theirs:?}",
                waiting.len(),
            );
        }
        let mut still = Vec::new();
        for (symbol, interval) in waiting {
            let ours = served(app, symbol, interval, len).await;
            if ours.len() < len || ours != exchange_s(fake, symbol, interval, len) {
                still.push((symbol, interval));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

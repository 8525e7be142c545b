//! `SYMBOLS=*` cold, at Binance's scale: about 500 contracts, every window filled
//! within the request-weight budget. In a test binary of its own: beside other
//! services on these two cores its timers would starve theirs.

mod common;

use std::time::Duration;

use common::contracts::*;
use common::*;

/// About 500 contracts cold: every 1m window full within 2 minutes, every longer
/// window seeded from the exchange's own candles of its interval, never more than
/// 1,200 request weight in any minute; plain `/` still the majors.
#[tokio::test]
async fn a_cold_start_of_500_contracts_fills_every_window_within_the_weight_budget() {
    let backend = Backend::sqlite();
    let names = contracts(495);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 400).await;
    let started = std::time::Instant::now();
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m,15m"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    assert_eq!(info_symbols(&app).await.len(), 500);

    // Every 1m window: 21 candles (HISTORY_MAX and the one before) within 2 minutes.
    let mut waiting: Vec<&String> = names.iter().collect();
    while !waiting.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} windows still not full after 2 minutes, e.g. {}",
            waiting.len(),
            waiting[0]
        );
        let mut still = Vec::new();
        for symbol in waiting {
            if served(&app, symbol, "1m", 21).await.len() < 21 {
                still.push(symbol);
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let one_minute = started.elapsed();

    // Every longer window: the exchange's own candles, as Binance aggregates them.
    let mut waiting: Vec<(&String, &str)> =
        names.iter().flat_map(|s| [(s, "5m"), (s, "15m")]).collect();
    while !waiting.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15 * 60),
            "{} longer windows not full within 15 minutes, e.g. {:?}",
            waiting.len(),
            waiting[0]
        );
        let mut still = Vec::new();
        for (symbol, interval) in waiting {
            let ours = served(&app, symbol, interval, 20).await;
            if ours.len() < 20 || ours != exchange_s(&fake, symbol, interval, 20) {
                still.push((symbol, interval));
            }
        }
        waiting = still;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let weight = busiest_minute_weight(&fake);
    assert!(weight <= 1200, "{weight} request weight in one minute");
    let requests = fake.rest_requests();
    let total: u32 = requests
        .iter()
        .map(|r| candlecast::exchange::klines_weight(r.limit.unwrap_or(500)))
        .sum();
    let per_interval = |name: &str| requests.iter().filter(|r| r.interval == name).count();
    println!(
        "500 contracts: 1m windows in {one_minute:?}, every window in {:?}, busiest minute {weight} weight, \
         {total} weight in {} klines requests (1m {}, 5m {}, 15m {})",
        started.elapsed(),
        requests.len(),
        per_interval("1m"),
        per_interval("5m"),
        per_interval("15m"),
    );
    let mut plain = app.client().await;
    let coins: Vec<String> = plain
        .next_n(5)
        .await
        .iter()
        .map(|m| m["coin"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(coins, MAJORS);
}

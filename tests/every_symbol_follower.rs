//! `SYMBOLS=*` on a follower (`INGEST=false`): the longer windows the ingesters seed
//! with the exchange's own candles and build from live minutes reach it through the
//! change stream, and so do contracts listed after it started, without a restart.

mod common;

use candlecast::candle::Candle;
use common::contracts::*;
use common::fake_exchange::intervals;
use common::*;
use mongodb::bson::{Document, doc};
use std::time::Duration;

const SETTINGS: [(&str, &str); 3] = [
    ("SYMBOLS", "*"),
    ("INTERVALS", "1m,5m,15m"),
    ("HISTORY_MAX", "20"),
];

/// `SETTINGS` and `extra` on top.
fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    SETTINGS.iter().chain(extra).copied().collect()
}

/// A fake exchange listing the majors and `others` contracts, each with `minutes`
/// of history; the names, in the exchange's order.
async fn fake_with(others: usize, minutes: i64) -> (Vec<String>, FakeExchange) {
    let names = contracts(others);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, minutes).await;
    (names, fake)
}

/// The newest 21 whole buckets of `interval` (a window of 20 and the one before)
/// of the fake's `symbol`, as an ingester seeds and stores them.
fn seeds(fake: &FakeExchange, symbol: &str, interval: &str) -> Vec<Candle> {
    let history = fake.history(symbol);
    let len = intervals::interval_ms(interval).unwrap();
    let end = history.last().unwrap().open_time + MINUTE;
    let whole: Vec<Candle> = intervals::aggregate(&history, interval)
        .into_iter()
        .filter(|c| c.open_time + len <= end)
        .collect();
    whole[whole.len().saturating_sub(21)..].to_vec()
}

/// A follower started on an empty store, before any ingester: the 5m and 15m
/// windows an ingester seeds afterwards are served whole (the minutes behind them
/// were never fetched, so the follower cannot build them). A bucket that live
/// minutes close, built and stored by the ingester and built by the follower too,
/// is served as the exchange's.
#[tokio::test]
async fn a_follower_serves_the_longer_windows_seeded_and_built_after_it_started() {
    let backend = Backend::mongo();
    let (names, fake) = fake_with(3, 400).await;
    // Only the test's closes add candles: a wall-clock minute would add one no
    // frame brings, which the ingester fetches only once the symbol looks quiet.
    fake.freeze();
    let follower_settings = settings(&[("INGEST", "false")]);
    let follower = TestApp::spawn(config_for(&fake, &backend, &follower_settings)).await;
    let ingester = TestApp::spawn(config_for(&fake, &backend, &SETTINGS)).await;
    let all = ["1m", "5m", "15m"];
    windows_full(&follower, &fake, &names, &all, 20, Duration::from_secs(60)).await;

    // Six live minutes close at least one 5m bucket, built by the ingester.
    for _ in 0..6 {
        fake.close_next("C001USDT");
    }
    let symbol = ["C001USDT".to_owned()];
    windows_full(&follower, &fake, &symbol, &all, 20, Duration::from_secs(30)).await;
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}

/// A follower that cannot resume its change stream (here: the collection replaced
/// by another, as a restore would) opens a fresh one and reloads its windows from
/// the store, the longer ones too: seeds no stream ever showed it are served.
#[tokio::test]
async fn a_follower_reloads_the_longer_windows_after_a_fresh_change_stream() {
    let backend = Backend::mongo();
    let (names, fake) = fake_with(1, 400).await;
    fake.freeze();
    let follower_settings = settings(&[("INGEST", "false")]);
    let follower = TestApp::spawn(config_for(&fake, &backend, &follower_settings)).await;
    let open = || follower.metrics.change_stream_open.get() == 1;
    eventually(20, "the change stream is open", open).await;
    // The base windows an ingester fetches: too few minutes to build the longer ones.
    let minutes = |symbol: &str| {
        let history = fake.history(symbol);
        history[history.len() - 21..].to_vec()
    };
    for symbol in &names {
        seed(&backend, &minutes(symbol)).await;
    }
    let within = Duration::from_secs(20);
    windows_full(&follower, &fake, &names, &["1m"], 20, within).await;

    // The same minutes and the ingesters' seeds, put in place of the collection in
    // one step: the follower's stream sees the collection dropped, no seed written.
    let restored: Vec<Document> = names
        .iter()
        .flat_map(|s| [minutes(s), seeds(&fake, s, "5m"), seeds(&fake, s, "15m")])
        .flatten()
        .map(|c| candle_document(&c))
        .collect();
    backend
        .collection("restored")
        .await
        .insert_many(restored)
        .await
        .unwrap();
    let Backend::Mongo { uri, database } = &backend else {
        unreachable!("a MongoDB backend")
    };
    let rename = doc! {
        "renameCollection": format!("{database}.restored"),
        "to": format!("{database}.candles"),
        "dropTarget": true,
    };
    let errors = follower.metrics.change_stream_errors.get();
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    client.database("admin").run_command(rename).await.unwrap();
    let interrupted = || follower.metrics.change_stream_errors.get() > errors;
    eventually(20, "the follower sees the collection replaced", interrupted).await;
    let within = Duration::from_secs(30);
    windows_full(&follower, &fake, &names, &["5m", "15m"], 20, within).await;
    follower.stop().await.unwrap();
}

/// `candle` as the service stores it in MongoDB (DESIGN.md §4).
fn candle_document(candle: &Candle) -> Document {
    let date = mongodb::bson::DateTime::from_millis;
    doc! {
        "symbol": &candle.symbol,
        "interval": &candle.interval,
        "open_time": date(candle.open_time),
        "close_time": date(candle.close_time),
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "quote_volume": candle.quote_volume,
        "taker_buy_volume": candle.taker_buy_volume,
        "taker_buy_quote_volume": candle.taker_buy_quote_volume,
        "trades": candle.trades,
    }
}

/// A contract listed after the follower started: the follower reads the exchange's
/// list as an ingester does (subscribing to nothing), so the new contract's
/// candles that the change stream brings are served.
#[tokio::test]
async fn a_follower_follows_contracts_listed_after_it_started() {
    let backend = Backend::mongo();
    let (names, fake) = fake_with(5, 60).await;
    // Only the test's closes add candles: a wall-clock minute would race the
    // comparisons with the fake's history.
    fake.freeze();
    let refresh = [("SYMBOLS", "*"), ("SYMBOLS_REFRESH_SECS", "1")];
    let ingester = TestApp::spawn(config_for(&fake, &backend, &refresh)).await;
    let follower_refresh = [refresh.as_slice(), &[("INGEST", "false")]].concat();
    let follower = TestApp::spawn(config_for(&fake, &backend, &follower_refresh)).await;
    assert_eq!(info_symbols(&follower).await, names);

    fake.list_new("NEWUSDT", 30);
    let mut expected = names.clone();
    expected.push("NEWUSDT".to_owned());
    let within = Duration::from_secs(20);
    wait_for_info_symbols(&follower, &expected, within).await;
    let listed = ["NEWUSDT".to_owned()];
    windows_full(&follower, &fake, &listed, &["1m"], 11, within).await;
    let url = format!("ws://{}/?symbols=NEWUSDT", follower.addr);
    let mut client = Client::connect(&url).await;
    client.next_json().await;
    fake.close_next("NEWUSDT");
    let shown = expected_message("NEWUSDT", &fake.history("NEWUSDT"), 10, chrono_tz::UTC);
    tokio::time::timeout(Duration::from_secs(20), async {
        while client.next_json().await != shown {}
    })
    .await
    .expect("the follower never showed the new contract's close");
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}

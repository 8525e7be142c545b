//! The forming candle for `live=true` clients: throttled per client to one message
//! per coin every `LIVE_INTERVAL_MS`, the newest state delivered on the trailing
//! edge, nothing for a candle the client already holds closed, and nothing at all
//! for clients that did not ask; on MongoDB and SQLite.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use common::*;
use serde_json::Value;
use tokio::time::Instant;

/// Messages arriving within `window`, with when they arrived.
async fn collect(client: &mut Client, window: Duration) -> Vec<(Instant, Value)> {
    let deadline = Instant::now() + window;
    let mut messages = Vec::new();
    while let Ok(message) = tokio::time::timeout_at(deadline, client.next_json()).await {
        messages.push((Instant::now(), message));
    }
    messages
}

async fn forming_updates_are_throttled_trailing_and_never_stale(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INTERVALS", "1m,5m"), ("LIVE_INTERVAL_MS", "300")],
    ))
    .await;
    let ws = |query: &str| format!("{}?{query}", app.ws_url());
    let mut live = Client::connect(&ws("format=candles&symbols=BTCUSDT&live=true")).await;
    let mut live_five =
        Client::connect(&ws("format=candles&symbols=BTCUSDT&interval=5m&live=true")).await;
    let mut plain = Client::connect(&ws("symbols=BTCUSDT")).await;
    for client in [&mut live, &mut live_five, &mut plain] {
        client.next_json().await;
    }
    fake.wait_for_connections(1).await;

    // Ten updates of the forming minute within about 150 ms, read as they arrive.
    let reading = tokio::spawn(async move {
        let got = collect(&mut live, Duration::from_millis(1200)).await;
        (live, got)
    });
    let started = Instant::now();
    let forming = fake.send_forming("BTCUSDT");
    let mut last_sent = forming.clone();
    for step in 1..10 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        last_sent.close = forming.close + step as f64;
        last_sent.high = last_sent.high.max(last_sent.close);
        last_sent.volume = forming.volume + step as f64;
        fake.send_update(&last_sent, false);
    }
    let last_sent_at = Instant::now();
    let (mut live, got) = reading.await.unwrap();
    assert!(!got.is_empty(), "no forming message at all");
    assert!(got.len() <= 3, "not throttled: {} messages", got.len());
    assert!(
        got[0].0 - started < Duration::from_millis(250),
        "the first update waited"
    );
    let times: Vec<_> = got
        .iter()
        .map(|(at, m)| (*at - started, m["forming"]["close"].clone()))
        .collect();
    for pair in got.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(250),
            "two forming messages closer than LIVE_INTERVAL_MS: {times:?}"
        );
    }
    let (arrived, newest) = got.last().unwrap();
    assert_eq!(newest["coin"], "BTCUSDT");
    assert_eq!(newest["interval"], "1m");
    assert_eq!(newest["forming"]["open_time"], forming.open_time);
    assert_eq!(
        newest["forming"]["close"].as_f64(),
        Some(last_sent.close),
        "the trailing update is the newest state"
    );
    assert_eq!(newest["forming"]["volume"].as_f64(), Some(last_sent.volume));
    assert!(newest["forming"]["quote_volume"].as_f64().is_some());
    assert!(
        *arrived - last_sent_at < Duration::from_millis(300 + 250),
        "the newest state came late"
    );

    // The 5m client gets the bucket so far: its closed minutes and the forming one.
    let five = collect(&mut live_five, Duration::from_millis(400)).await;
    let (_, five) = five.last().expect("a forming 5m message");
    let bucket_open = forming.open_time - forming.open_time.rem_euclid(5 * MINUTE);
    assert_eq!(five["interval"], "5m");
    assert_eq!(five["forming"]["open_time"], bucket_open);
    assert_eq!(five["forming"]["close"].as_f64(), Some(last_sent.close));
    let closed_in_bucket: Vec<Candle> = fake
        .history("BTCUSDT")
        .into_iter()
        .filter(|c| c.open_time >= bucket_open)
        .collect();
    let open = closed_in_bucket.first().map_or(forming.open, |c| c.open);
    assert_eq!(five["forming"]["open"].as_f64(), Some(open));

    // A plain client got none of it.
    let quiet = tokio::time::timeout(Duration::from_millis(100), plain.next_json()).await;
    assert!(quiet.is_err(), "a client without live=true got {quiet:?}");

    // Once the candle closed, no forming message for it follows, even a late frame.
    let closed = fake.close_next("BTCUSDT");
    assert_eq!(closed.open_time, forming.open_time);
    let window = loop {
        let message = live.next_json().await;
        if message.get("candles").is_some() {
            break message;
        }
    };
    assert_eq!(window["candles"][0]["open_time"], closed.open_time);
    fake.send_update(&last_sent, false);
    for (_, message) in collect(&mut live, Duration::from_millis(700)).await {
        if let Some(forming) = message.get("forming") {
            assert!(
                forming["open_time"].as_i64().unwrap() > closed.open_time,
                "a forming message after its close: {message}"
            );
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn forming_updates_are_throttled_trailing_and_never_stale_on_mongodb() {
    forming_updates_are_throttled_trailing_and_never_stale(Backend::mongo()).await;
}

#[tokio::test]
async fn forming_updates_are_throttled_trailing_and_never_stale_on_sqlite() {
    forming_updates_are_throttled_trailing_and_never_stale(Backend::sqlite()).await;
}

#[tokio::test]
async fn live_interval_zero_sends_every_update() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("LIVE_INTERVAL_MS", "0")])).await;
    let mut live = Client::connect(&format!("{}?symbols=ETHUSDT&live=true", app.ws_url())).await;
    live.next_json().await;
    fake.wait_for_connections(1).await;
    let mut forming = fake.send_forming("ETHUSDT");
    let mut seen = vec![live.next_json().await["forming"]["close"].as_f64().unwrap()];
    for step in 1..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        forming.close += step as f64;
        fake.send_update(&forming, false);
        seen.push(live.next_json().await["forming"]["close"].as_f64().unwrap());
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(*seen.last().unwrap(), forming.close);
    app.stop().await.unwrap();
}

/// The throttle is the client's: updates of several coins arriving one after another
/// (as Binance sends them, each its own frame) leave together when the client's
/// interval is up, each as its newest state, and none later than the interval.
#[tokio::test]
async fn updates_of_several_coins_within_an_interval_leave_together() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("LIVE_INTERVAL_MS", "400")])).await;
    let mut live = Client::connect(&format!("{}?format=candles&live=true", app.ws_url())).await;
    for _ in SYMBOLS {
        live.next_json().await;
    }
    fake.wait_for_connections(1).await;

    let reading =
        tokio::spawn(async move { collect(&mut live, Duration::from_millis(1500)).await });
    let started = Instant::now();
    let mut sent = Vec::new();
    for symbol in SYMBOLS {
        sent.push((symbol, Instant::now(), fake.send_forming(symbol)));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let got = reading.await.unwrap();
    let at = |symbol: &str| {
        let found = got.iter().find(|(_, m)| m["coin"] == symbol);
        found.unwrap_or_else(|| panic!("no forming message for {symbol}: {got:?}"))
    };
    // The first coin leaves at once; the four behind it wait for the interval and
    // leave together.
    assert!(at(SYMBOLS[0]).0 - started < Duration::from_millis(200));
    let second = at(SYMBOLS[1]).0;
    for &(symbol, handed, ref candle) in &sent[1..] {
        let (arrived, message) = at(symbol);
        assert_eq!(message["forming"]["close"].as_f64(), Some(candle.close));
        assert!(
            *arrived - second < Duration::from_millis(50),
            "{symbol} left on its own, not with the others"
        );
        assert!(
            *arrived - handed < Duration::from_millis(400 + 200),
            "{symbol} was held longer than the interval"
        );
    }
    assert!(second - at(SYMBOLS[0]).0 >= Duration::from_millis(350));
    assert_eq!(got.len(), SYMBOLS.len(), "one message per coin: {got:?}");
    app.stop().await.unwrap();
}

/// Closed candles first: right after a client is sent a close, forming updates wait
/// half an interval (out of the way of the close's fan-out to everyone else), and
/// still arrive within an interval of being sent by the exchange.
#[tokio::test]
async fn forming_updates_wait_half_an_interval_after_a_close() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("LIVE_INTERVAL_MS", "400")])).await;
    let url = format!("{}?format=candles&symbols=SOLUSDT&live=true", app.ws_url());
    let mut live = Client::connect(&url).await;
    live.next_json().await;
    fake.wait_for_connections(1).await;

    // Idle for longer than an interval: an update would leave at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    fake.close_next("SOLUSDT");
    let closed_at = loop {
        let message = live.next_json().await;
        if message.get("candles").is_some() {
            break Instant::now();
        }
    };
    let handed = Instant::now();
    let forming = fake.send_forming("SOLUSDT");
    let message = live.next_json().await;
    let arrived = Instant::now();
    assert_eq!(message["forming"]["open_time"], forming.open_time);
    assert!(
        arrived - closed_at >= Duration::from_millis(150),
        "a forming update {:?} after the close",
        arrived - closed_at
    );
    assert!(
        arrived - handed < Duration::from_millis(400 + 150),
        "held longer than the interval"
    );
    app.stop().await.unwrap();
}

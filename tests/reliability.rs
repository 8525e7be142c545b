//! Ingest that never loses a candle: each way a Binance client loses data, played by
//! the fake exchange (and a database of the test's own), ending with an exact
//! comparison of the store with the candles the exchange closed and a check of what
//! a connected client received.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::exchange::ReconnectCause;
use common::binary::{Running, fake_env};
use common::mongo_server::MongoServer;
use common::*;
use serde_json::Value;

const FAST: [(&str, &str); 2] = [
    ("UPSTREAM_STALE_SECS", "1"),
    ("UPSTREAM_BACKOFF_MAX_SECS", "1"),
];

/// Stores the fake's history of every symbol except the newest `missing` candles,
/// as a service that ran before would have left it.
async fn seed_history(fake: &FakeExchange, backend: &Backend, missing: usize) {
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        seed(backend, &history[..history.len() - missing]).await;
    }
}

/// Reads messages until `coin`'s window equals the fake's history; every message
/// on the way must be that coin's, never a repeat, never older than the one before.
async fn follow_until_caught_up(
    client: &mut Client,
    fake: &FakeExchange,
    coin: &str,
) -> Vec<Value> {
    let expected = expected_message(coin, &fake.history(coin), 10, chrono_tz::UTC);
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let message = client.next_json().await;
        assert_eq!(message["coin"], coin, "only {coin} changed: {message}");
        if let Some(previous) = seen.last() {
            assert_ne!(previous, &message, "the same window was pushed twice");
            let newest = |m: &Value| m["values"].as_array().unwrap().len();
            assert!(newest(&message) >= newest(previous), "the window shrank");
        }
        seen.push(message.clone());
        if message == expected {
            return seen;
        }
    }
}

async fn assert_store_matches_history(backend: &Backend, fake: &FakeExchange, seconds: u64) {
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        let stored = backend
            .wait_for_stored_within(seconds, symbol, &history)
            .await;
        assert_same_candles(&stored, &history, &format!("stored candles of {symbol}"));
    }
}

#[tokio::test]
async fn a_dropped_stream_reconnects_and_fetches_what_closed_meanwhile() {
    let backend = Backend::mongo();
    // History trails the clock by 30 minutes, so candles closed below are in the past.
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 3).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &FAST)).await;
    let mut client = app.client().await;
    let snapshot = client.next_n(5).await;
    assert_eq!(
        snapshot[2],
        expected_message("ETHUSDT", &fake.history("ETHUSDT"), 10, chrono_tz::UTC)
    );
    fake.wait_for_connections(1).await;
    let newest_before = fake.history("ETHUSDT").last().unwrap().open_time;
    let requests_before = fake.rest_requests().len();

    // The exchange drops the socket mid-stream and refuses reconnects while three
    // candles close; nothing missed is ever replayed on the stream.
    fake.refuse_stream(true);
    fake.disconnect_all();
    let missed: Vec<Candle> = (0..3).map(|_| fake.close_next("ETHUSDT")).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    fake.refuse_stream(false);
    fake.wait_for_connections(2).await;

    follow_until_caught_up(&mut client, &fake, "ETHUSDT").await;
    let repair: Vec<_> = fake.rest_requests()[requests_before..]
        .iter()
        .filter(|r| r.symbol == "ETHUSDT")
        .cloned()
        .collect();
    assert_eq!(
        repair[0].start_time,
        Some(newest_before + MINUTE),
        "the repair starts right after the newest candle held"
    );
    assert_eq!(repair[0].closed_rows, missed);
    // A second request may follow: this fake has nothing newer, which the service
    // cannot know until it asks.
    assert!(
        repair[1..].iter().all(|r| r.closed_rows.is_empty()),
        "{repair:?}"
    );
    assert!(
        app.metrics.reconnects_of(ReconnectCause::Eof.label())
            + app.metrics.reconnects_of(ReconnectCause::Error.label())
            >= 1
    );
    assert!(
        app.metrics
            .reconnects_of(ReconnectCause::ConnectFailed.label())
            >= 1
    );

    assert_store_matches_history(&backend, &fake, 15).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_stream_is_dropped_by_the_watchdog() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    let _ticks = fake.tick(Duration::from_millis(150));
    let app = TestApp::spawn(config_for(&fake, &backend, &FAST)).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;
    // Ticking open-candle updates keep a healthy stream alive past the 1 s window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.connections(), 1, "a live stream must not be dropped");

    fake.silence_current(); // TCP stays open, nothing arrives: a retired endpoint
    fake.wait_for_connections(2).await;
    assert!(app.metrics.reconnects_of(ReconnectCause::Stale.label()) >= 1);

    let candle = fake.close_next("BTCUSDT");
    let message = client.next_json().await;
    assert_eq!(
        (message["coin"].as_str(), message["values"][0].as_f64()),
        (Some("BTCUSDT"), Some(candle.close))
    );
    assert_store_matches_history(&backend, &fake, 15).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pings_from_the_exchange_are_answered() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    fake.wait_for_connections(1).await;
    for round in 1..=3 {
        fake.ping_all();
        eventually(5, "the service answers the ping", || fake.pongs() >= round).await;
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn refused_connections_are_retried_with_growing_capped_delays() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    fake.refuse_stream(true);
    let app = TestApp::spawn(config_for(&fake, &backend, &FAST)).await;
    eventually(20, "seven connection attempts", || {
        fake.attempts().len() >= 7
    })
    .await;

    let attempts = fake.attempts();
    let gaps: Vec<Duration> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Delays are drawn from [d/2, d] with d = 0.5 s, 1 s, then capped at 1 s.
    assert!(
        gaps[0] <= Duration::from_millis(650),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        gaps.iter().all(|gap| *gap <= Duration::from_millis(1350)),
        "capped at 1 s: {gaps:?}"
    );
    assert!(
        gaps[2..]
            .iter()
            .all(|gap| *gap >= Duration::from_millis(450)),
        "grew: {gaps:?}"
    );
    assert!(
        app.metrics
            .reconnects_of(ReconnectCause::ConnectFailed.label())
            >= 6
    );

    fake.refuse_stream(false);
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;
    let candle = fake.close_next("XRPUSDT");
    assert_eq!(
        client.next_json().await["values"][0].as_f64(),
        Some(candle.close)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_connection_is_renewed_before_its_maximum_age_without_gap_or_duplicate() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    let _ticks = fake.tick(Duration::from_millis(100));
    let mut settings = FAST.to_vec();
    settings.push(("UPSTREAM_MAX_AGE_SECS", "1"));
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;

    let mut closes = Vec::new();
    for _ in 0..14 {
        closes.push(fake.close_next("SOLUSDT"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let messages = follow_until_caught_up(&mut client, &fake, "SOLUSDT").await;
    assert!(messages.len() <= closes.len(), "at most one push per close");
    let renewals = app.metrics.renewals.get();
    assert!(
        renewals >= 2,
        "renewed {renewals} times in 3.5 s at a 1 s maximum age"
    );
    let (_, peak, closed_by_service) = fake.open_connections();
    assert!(
        peak >= 2,
        "the new connection opens before the old one closes"
    );
    assert!(
        closed_by_service >= 1,
        "the old connection is closed with a close frame"
    );
    assert_eq!(app.metrics.reconnects_of(ReconnectCause::Stale.label()), 0);

    assert!(closes.iter().all(|c| fake.history("SOLUSDT").contains(c)));
    assert_store_matches_history(&backend, &fake, 15).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn backfill_retries_server_errors_and_honours_retry_after() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 5).await;
    fake.fail_rest(&[(500, None), (429, Some(1))]);
    let app = TestApp::spawn(config_for(&fake, &backend, &FAST)).await;
    let mut client = app.client().await;
    for (message, symbol) in client.next_n(5).await.iter().zip(SYMBOLS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }

    let requests = fake.rest_requests();
    let retried_after = |status: u16| {
        let failed = requests
            .iter()
            .find(|r| r.status == status)
            .expect("the scripted failure happened");
        let retry = requests
            .iter()
            .find(|r| r.symbol == failed.symbol && r.at > failed.at)
            .expect("the failed request was retried");
        retry.at - failed.at
    };
    assert!(
        retried_after(500) >= Duration::from_millis(240),
        "backoff after a 500"
    );
    assert!(
        retried_after(429) >= Duration::from_millis(990),
        "Retry-After: 1 honoured"
    );
    assert_store_matches_history(&backend, &fake, 15).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_database_outage_stops_neither_ingest_nor_clients_and_loses_nothing() {
    let mut database = MongoServer::start().await;
    let backend = Backend::Mongo {
        uri: database.uri(),
        database: unique_database("candlecast_outage"),
    };
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    let _ticks = fake.tick(Duration::from_millis(200));
    let mut config = config_for(&fake, &backend, &FAST);
    // A tiny queue, so the outage also overflows it and the store needs a repair.
    config.store.write_queue_batches = 2;
    let app = TestApp::spawn(config).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;

    database.stop().await;
    for _ in 0..6 {
        let candle = fake.close_next("BTCUSDT");
        let message = client.next_json().await;
        assert_eq!(
            message["values"][0].as_f64(),
            Some(candle.close),
            "clients keep getting closes"
        );
    }
    fake.ping_all();
    eventually(5, "pings are answered while the store is down", || {
        fake.pongs() >= 1
    })
    .await;
    eventually(30, "a store write failed", || {
        app.metrics.store_errors.get() >= 1
    })
    .await;
    assert!(
        app.metrics.dropped_writes.get() >= 1,
        "the small queue overflowed"
    );
    assert_eq!(fake.connections(), 1, "the stream stayed up throughout");

    database.resume().await;
    assert_store_matches_history(&backend, &fake, 60).await;
    assert!(app.metrics.store_repairs.get() >= 1);
    eventually(10, "the queue drains", || {
        app.metrics.pending_writes.get() == 0
    })
    .await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn after_sigkill_a_restart_brings_the_store_up_to_date() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_history(&fake, &backend, 0).await;
    let mut env = fake_env(&fake);
    env.extend(backend.env());

    let mut first = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = first.wait_for_address().await;
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;
    for _ in 0..2 {
        let candle = fake.close_next("ETHUSDT");
        assert_eq!(
            client.next_json().await["values"][0].as_f64(),
            Some(candle.close)
        );
    }
    assert_store_matches_history(&backend, &fake, 15).await;
    let dir = first.kill9();

    // While nothing runs, the exchange closes more candles.
    for _ in 0..3 {
        fake.close_next("ETHUSDT");
        fake.close_next("SOLUSDT");
    }
    let mut second = Running::start(dir, &env);
    let address = second.wait_for_address().await;
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    for (message, symbol) in client.next_n(5).await.iter().zip(SYMBOLS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }
    assert_store_matches_history(&backend, &fake, 15).await;
    let (code, output, _) = second.terminate().await;
    assert_eq!(code, 0, "{output}");
}

//! Candles the exchange closed but the stream never delivered, and holes behind the
//! newest stored candle: each is fetched from REST, on both stores, and a client and
//! the store end with exactly what the exchange closed.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::exchange::ReconnectCause;
use common::fake_exchange::kline_frame_at;
use common::*;
use serde_json::Value;

/// Reads until `coin`'s window equals the fake's history, within `seconds`.
async fn until_window_matches(client: &mut Client, fake: &FakeExchange, coin: &str) -> Value {
    let expected = expected_message(coin, &fake.history(coin), 10, chrono_tz::UTC);
    loop {
        let message = client.next_json().await;
        if message == expected {
            return message;
        }
    }
}

async fn history_api(app: &TestApp, symbol: &str) -> Vec<i64> {
    let url = format!("http://{}/api/v1/candles/{symbol}?limit=1000", app.addr);
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect()
}

/// ETHUSDT's close for minute M never comes; M+1 arrives as usual. M must be
/// fetched at once (well before any watchdog), not left as a hole for good.
async fn a_close_that_never_arrives_is_fetched_at_once(backend: Backend, forming_only: bool) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;

    // The reconnect's own backfill ends first (it would cover the gap anyway).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let skipped = fake.close_next_silently("ETHUSDT");
    if forming_only {
        // Only a forming update of the next minute: the stream has moved past M.
        fake.send_forming("ETHUSDT");
    } else {
        fake.close_next("ETHUSDT");
    }
    let window = tokio::time::timeout(
        Duration::from_secs(5),
        until_window_matches(&mut client, &fake, "ETHUSDT"),
    )
    .await
    .expect("the skipped minute reaches clients within seconds");
    assert_eq!(window["values"].as_array().unwrap().len(), 10);
    assert!(app.metrics.skipped_minutes.get() >= 1);
    let stored = backend
        .wait_for_stored("ETHUSDT", &fake.history("ETHUSDT"))
        .await;
    assert_same_candles(&stored, &fake.history("ETHUSDT"), "stored ETHUSDT");
    assert!(
        history_api(&app, "ETHUSDT")
            .await
            .contains(&skipped.open_time)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_skipped_close_is_fetched_when_the_next_candle_closes_sqlite() {
    a_close_that_never_arrives_is_fetched_at_once(Backend::sqlite(), false).await;
}

#[tokio::test]
async fn a_skipped_close_is_fetched_when_the_next_candle_closes_mongo() {
    a_close_that_never_arrives_is_fetched_at_once(Backend::mongo(), false).await;
}

#[tokio::test]
async fn a_skipped_close_is_fetched_on_the_next_forming_update() {
    a_close_that_never_arrives_is_fetched_at_once(Backend::sqlite(), true).await;
}

#[tokio::test]
async fn a_quiet_symbol_is_caught_up_from_rest_while_others_flow() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let settings = [
        ("UPSTREAM_STALE_SECS", "2"),
        ("UPSTREAM_BACKOFF_MAX_SECS", "1"),
    ];
    let config = config_for(&fake, &backend, &settings);
    let fake = std::sync::Arc::new(fake);
    let trading = {
        let fake = std::sync::Arc::clone(&fake);
        tokio::spawn(async move {
            loop {
                for symbol in ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT"] {
                    fake.send_forming(symbol);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Every symbol but XRPUSDT trades from before the service connects; XRPUSDT's
    // closes reach REST only.
    let app = TestApp::spawn(config).await;
    fake.wait_for_connections(1).await;
    // After the connection's own backfill, which would fetch them at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let missed: Vec<Candle> = (0..2)
        .map(|_| fake.close_next_silently("XRPUSDT"))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline
        && (backend.stored("XRPUSDT").await.last() != missed.last()
            || app.metrics.quiet_symbols.get() == 0)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.metrics.quiet_symbols.get() >= 1,
        "the quiet symbol is counted"
    );
    assert_same_candles(
        &backend.stored("XRPUSDT").await,
        &fake.history("XRPUSDT"),
        "XRPUSDT caught up from REST",
    );
    // The stream did not deliver what REST found: the connection is renewed, not
    // dropped as stale (the others kept it alive).
    eventually(6, "the connection is renewed", || fake.connections() >= 2).await;
    assert_eq!(app.metrics.reconnects_of(ReconnectCause::Stale.label()), 0);
    trading.abort();
    app.stop().await.unwrap();
}

#[tokio::test]
async fn acknowledgements_alone_do_not_keep_a_stream_alive() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let settings = [
        ("UPSTREAM_STALE_SECS", "2"),
        ("UPSTREAM_BACKOFF_MAX_SECS", "1"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    fake.wait_for_connections(1).await;
    let ready = format!("http://{}/ready", app.addr);
    eventually_async(5, "ready with klines flowing", || async {
        fake.send_forming("BTCUSDT");
        reqwest::get(&ready).await.unwrap().status() == 200
    })
    .await;

    fake.acks_only(true);
    fake.wait_for_connections(2).await;
    assert!(app.metrics.reconnects_of(ReconnectCause::Stale.label()) >= 1);
    let answer = reqwest::get(&ready).await.unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert!(body["reasons"].to_string().contains("upstream"), "{body}");
    let scrape = format!("http://{}/metrics", app.addr);
    eventually_async(5, "acknowledgements are counted by kind", || async {
        reqwest::get(&scrape)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(r#"candlecast_upstream_ignored_frames_total{kind="ack"}"#)
    })
    .await;
    app.stop().await.unwrap();
}

/// A hole cut in the middle of the store while the service is down is filled at the
/// next start, not only the minutes after the newest candle.
async fn a_hole_behind_the_newest_candle_is_filled_at_start(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        let mut history = fake.history(symbol);
        let len = history.len();
        history.drain(len - 40..len - 37); // three minutes, 40 to 38 minutes back
        history.remove(len - 10); // and one more, inside the served window
        seed(&backend, &history).await;
    }
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    for symbol in SYMBOLS {
        let stored = backend.wait_for_stored(symbol, &fake.history(symbol)).await;
        assert_same_candles(&stored, &fake.history(symbol), symbol);
    }
    let mut client = app.client().await;
    let snapshot = client.next_n(5).await;
    assert_eq!(
        snapshot[0],
        expected_message("BTCUSDT", &fake.history("BTCUSDT"), 10, chrono_tz::UTC)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_hole_behind_the_newest_candle_is_filled_at_start_sqlite() {
    a_hole_behind_the_newest_candle_is_filled_at_start(Backend::sqlite()).await;
}

#[tokio::test]
async fn a_hole_behind_the_newest_candle_is_filled_at_start_mongo() {
    a_hole_behind_the_newest_candle_is_filled_at_start(Backend::mongo()).await;
}

#[tokio::test]
async fn a_far_future_candle_is_refused_and_later_candles_still_arrive() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    fake.wait_for_connections(1).await;

    let mut future = fake.history("BTCUSDT").last().unwrap().clone();
    future.open_time += 365 * 24 * 60 * MINUTE;
    future.close_time += 365 * 24 * 60 * MINUTE;
    let now = chrono::Utc::now().timestamp_millis();
    fake.send_raw(&kline_frame_at(&future, true, now));
    // Misaligned and wrongly closed candles are refused too.
    let mut misaligned = fake.history("BTCUSDT").last().unwrap().clone();
    misaligned.open_time += 1_000;
    misaligned.close_time += 1_000;
    fake.send_raw(&kline_frame_at(&misaligned, true, now));

    let next = fake.close_next("BTCUSDT");
    let message = client.next_json().await;
    assert_eq!(message["values"][0].as_f64(), Some(next.close), "{message}");
    assert_eq!(app.metrics.rejected_candles.get(), 2);
    let stored = backend
        .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
        .await;
    assert_same_candles(
        &stored,
        &fake.history("BTCUSDT"),
        "only real candles are stored",
    );
    app.stop().await.unwrap();
}

/// A candle stored with a far-future open time (by hand, by an older version) is
/// never the window's newest, and repairs still start from the real newest.
#[tokio::test]
async fn a_far_future_candle_in_the_store_poisons_nothing() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        seed(&backend, &history[..history.len() - 3]).await;
    }
    let mut future = fake.history("BTCUSDT").last().unwrap().clone();
    future.open_time += 365 * 24 * 60 * MINUTE;
    future.close_time += 365 * 24 * 60 * MINUTE;
    seed(&backend, &[future]).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let snapshot = app.client().await.next_n(5).await;
    assert_eq!(
        snapshot[0],
        expected_message("BTCUSDT", &fake.history("BTCUSDT"), 10, chrono_tz::UTC),
        "the window ends at the real newest, with the three missing minutes fetched"
    );
    app.stop().await.unwrap();
}

/// Our clock two minutes ahead of the exchange's: the last two minutes are still
/// open there, and REST rows for them must not be stored as closed.
#[tokio::test]
async fn what_is_closed_is_decided_by_the_exchanges_clock() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.set_clock_offset_ms(-2 * MINUTE);
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let snapshot = app.client().await.next_n(5).await;
    let exchange_now = chrono::Utc::now().timestamp_millis() - 2 * MINUTE;
    for (message, symbol) in snapshot.iter().zip(SYMBOLS) {
        let closed = served_closed(&fake, symbol);
        assert!(closed.iter().all(|c| c.close_time < exchange_now + 1_000));
        assert_eq!(
            message,
            &expected_message(symbol, &closed, 10, chrono_tz::UTC)
        );
        let stored = backend.wait_for_stored(symbol, &closed).await;
        assert_same_candles(
            &stored,
            &closed,
            &format!("{symbol}: only what the exchange closed"),
        );
        let open_there = fake
            .history(symbol)
            .into_iter()
            .filter(|c| c.close_time >= exchange_now + 1_000)
            .count();
        assert!(
            open_there >= 1,
            "the test must leave candles open on the exchange"
        );
    }
    app.stop().await.unwrap();
}

//! The whole service against a fake exchange and a real database: what a websocket
//! client sees and what the store holds, on MongoDB and on the embedded store.

mod common;

use std::sync::Arc;

use candlecast::candle::Candle;
use candlecast::store::{CandleStore, MongoStore, SqliteStore};
use common::*;

/// The fake's history of `symbol` up to the newest candle the service could know at
/// startup (what it fetched by REST or got from the stream's replay).
fn known_at_startup(fake: &FakeExchange, symbol: &str) -> Vec<Candle> {
    let newest = merged(&[&served_closed(fake, symbol), &fake.replayed(symbol)])
        .last()
        .map(|c| c.open_time)
        .expect("the service fetched some history");
    fake.history(symbol)
        .into_iter()
        .filter(|c| c.open_time <= newest)
        .collect()
}

/// A client connects, gets every coin's window, then each close as it happens; the
/// database ends up with one document per closed candle and nothing else.
async fn client_sees_windows_and_closes_and_the_store_holds_each_closed_candle_once(
    backend: Backend,
) {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.replay_last_close_on_connect(true);
    let zone = chrono_tz::Asia::Kolkata;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("TIME_ZONE", "Asia/Kolkata")],
    ))
    .await;
    fake.wait_for_connections(1).await;
    assert_eq!(
        fake.stream_queries()[0],
        "btcusdt@kline_1m/bnbusdt@kline_1m/ethusdt@kline_1m/solusdt@kline_1m/xrpusdt@kline_1m"
    );

    let mut client = app.client().await;
    let snapshot = client.next_n(5).await;
    for (message, symbol) in snapshot.iter().zip(SYMBOLS) {
        assert!(
            served_closed(&fake, symbol).len() >= 11,
            "startup backfill must fetch at least HISTORY_LEN + 1 candles of {symbol}"
        );
        let expected = expected_message(symbol, &known_at_startup(&fake, symbol), 10, zone);
        assert_eq!(message, &expected, "first message for {symbol}");
        assert_eq!(message["values"].as_array().unwrap().len(), 10);
    }

    // Open updates, garbage and a repeated close are interleaved with real closes.
    fake.send_raw("{this is not json");
    fake.send_raw(r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","k":{"t":"soon"}}}"#);
    let expect_close = |candle: &Candle| {
        let history = merged(&[
            &known_at_startup(&fake, &candle.symbol),
            std::slice::from_ref(candle),
        ]);
        expected_message(&candle.symbol, &history, 10, zone)
    };
    let btc = fake.close_next("BTCUSDT");
    assert_eq!(client.next_json().await, expect_close(&btc));
    fake.send_update(&btc, true); // the same close again, after clients got it
    let eth = fake.close_next("ETHUSDT");
    fake.send_raw(r#"{"result":null,"id":1}"#);
    let sol = fake.close_next("SOLUSDT");
    let live = client.next_n(2).await;
    assert_eq!(live, [expect_close(&eth), expect_close(&sol)]);
    // Had the repeated BTC close been pushed again, it would arrive before this one.
    let xrp = fake.close_next("XRPUSDT");
    assert_eq!(client.next_json().await["coin"], "XRPUSDT");

    for symbol in SYMBOLS {
        let live: Vec<Candle> = [&btc, &eth, &sol, &xrp]
            .into_iter()
            .filter(|c| c.symbol == symbol)
            .cloned()
            .collect();
        let expected = merged(&[&served_closed(&fake, symbol), &fake.replayed(symbol), &live]);
        let stored = backend.wait_for_stored(symbol, &expected).await;
        assert_same_candles(&stored, &expected, &format!("stored candles of {symbol}"));
        for request in fake.rest_requests().iter().filter(|r| r.symbol == symbol) {
            if let Some(open) = &request.open_row {
                assert!(
                    !stored.contains(open),
                    "the still-open candle {open:?} was stored"
                );
            }
        }
    }
    app.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn mongo_client_sees_windows_and_closes_and_the_store_holds_each_closed_candle_once() {
    client_sees_windows_and_closes_and_the_store_holds_each_closed_candle_once(Backend::mongo())
        .await;
}

#[tokio::test]
async fn sqlite_client_sees_windows_and_closes_and_the_store_holds_each_closed_candle_once() {
    client_sees_windows_and_closes_and_the_store_holds_each_closed_candle_once(Backend::sqlite())
        .await;
}

async fn open_backend_store(backend: &Backend) -> Arc<dyn CandleStore> {
    match backend {
        Backend::Mongo { uri, database } => {
            let uri = candlecast::store::MongoUri::parse(uri).unwrap();
            Arc::new(
                MongoStore::connect(&uri, database, "candles")
                    .await
                    .unwrap(),
            )
        }
        Backend::Sqlite { dir } => Arc::new(SqliteStore::open(dir.path()).unwrap()),
    }
}

/// After downtime the service fetches everything since the newest stored candle,
/// page by page, and serves the window from it.
async fn a_restart_backfills_everything_since_the_newest_stored_candle(backend: Backend) {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.set_page_cap(7);
    let mut seeded = Vec::new();
    {
        let store = open_backend_store(&backend).await;
        for symbol in SYMBOLS {
            let history = fake.history(symbol);
            let old = history[..history.len() - 40].to_vec();
            store.upsert(&old).await.unwrap();
            seeded.push(old);
        }
    }

    // A ten-candle window is full with the 80 seeded candles, so the service resumes
    // right after the newest one.
    let app = TestApp::spawn(config_for(&fake, &backend, &[("HISTORY_MAX", "10")])).await;
    let mut client = app.client().await;
    let snapshot = client.next_n(5).await;

    for ((symbol, old), message) in SYMBOLS.iter().zip(&seeded).zip(&snapshot) {
        let requests: Vec<_> = fake
            .rest_requests()
            .into_iter()
            .filter(|r| &r.symbol == symbol)
            .collect();
        let newest_seeded = old.last().unwrap().open_time;
        assert_eq!(
            requests[0].start_time,
            Some(newest_seeded + MINUTE),
            "{symbol} resumes after its newest stored candle"
        );
        assert!(
            requests.len() >= 5,
            "{symbol}: 40 missing candles at 7 per page need several pages"
        );
        assert!(requests.iter().all(|r| r.limit.is_some_and(|l| l <= 1500)));

        let expected = merged(&[old, &served_closed(&fake, symbol)]);
        let stored = backend.wait_for_stored(symbol, &expected).await;
        assert_same_candles(&stored, &expected, symbol);
        // No gap: every minute from the first seeded candle to the newest is there.
        assert!(
            stored
                .windows(2)
                .all(|pair| pair[1].open_time - pair[0].open_time == MINUTE),
            "{symbol} has a gap"
        );
        assert!(stored.last().unwrap().open_time >= newest_seeded + 38 * MINUTE);
        assert_eq!(
            message,
            &expected_message(symbol, &known_at_startup(&fake, symbol), 10, chrono_tz::UTC)
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn mongo_a_restart_backfills_everything_since_the_newest_stored_candle() {
    a_restart_backfills_everything_since_the_newest_stored_candle(Backend::mongo()).await;
}

#[tokio::test]
async fn sqlite_a_restart_backfills_everything_since_the_newest_stored_candle() {
    a_restart_backfills_everything_since_the_newest_stored_candle(Backend::sqlite()).await;
}

#[tokio::test]
async fn configured_symbols_come_in_their_order_and_history_len_sets_the_length() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("SYMBOLS", "solusdt,BTCUSDT"), ("HISTORY_LEN", "3")],
    ))
    .await;
    let mut client = app.client().await;
    let messages = client.next_n(2).await;
    assert_eq!(messages[0]["coin"], "SOLUSDT");
    assert_eq!(messages[1]["coin"], "BTCUSDT");
    for (message, symbol) in messages.iter().zip(["SOLUSDT", "BTCUSDT"]) {
        assert_eq!(
            message,
            &expected_message(symbol, &known_at_startup(&fake, symbol), 3, chrono_tz::UTC)
        );
    }
    assert!(
        fake.rest_requests()
            .iter()
            .all(|r| r.symbol == "SOLUSDT" || r.symbol == "BTCUSDT")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_answers_and_a_plain_get_serves_the_page() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let health = reqwest::get(format!("http://{}/health", app.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let plain = reqwest::get(format!("http://{}/", app.addr)).await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(
        plain
            .text()
            .await
            .unwrap()
            .contains("<title>candlecast</title>")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_clients_with_going_away() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    let stopping = tokio::spawn(app.stop());
    match client.next_raw().await {
        Some(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1001)
        }
        other => panic!("expected a 1001 close frame, got {other:?}"),
    }
    stopping.await.unwrap().unwrap();
}

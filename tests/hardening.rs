//! Inputs nobody should send, answered without losing anything: documents that are
//! not candles, symbols the exchange refuses or lists under unusual names, bans.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{DateTime, doc};
use serde_json::Value;

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_document_that_is_not_a_candle_is_skipped_everywhere() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let Backend::Mongo { uri, database } = &backend else {
        unreachable!()
    };
    let client = mongodb::Client::with_uri_str(uri).await.unwrap();
    let candles = client
        .database(database)
        .collection::<mongodb::bson::Document>("candles");
    // A manual insert from another schema, inside the window that is loaded.
    let newest = fake.history("BTCUSDT").last().unwrap().open_time;
    candles
        .insert_one(doc! {"symbol": "BTCUSDT", "interval": "1m", "open_time": DateTime::from_millis(newest + 7), "close": "oops"})
        .await
        .unwrap();

    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut ws = app.client().await;
    let snapshot = ws.next_n(5).await;
    assert_eq!(
        snapshot[0],
        expected_message("BTCUSDT", &fake.history("BTCUSDT"), 10, chrono_tz::UTC)
    );
    let (status, body) = get_json(&format!(
        "http://{}/api/v1/candles/BTCUSDT?limit=5",
        app.addr
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["candles"].as_array().unwrap().len(), 4, "{body}");
    assert!(app.metrics.skipped_documents.get() >= 1);

    // While running: a bad document on the change stream stalls nothing.
    fake.wait_for_connections(1).await;
    candles
        .insert_one(doc! {"symbol": "ETHUSDT", "interval": "1m", "open_time": "never"})
        .await
        .unwrap();
    let next = fake.close_next("ETHUSDT");
    let message = ws.next_json().await;
    assert_eq!(message["values"][0].as_f64(), Some(next.close), "{message}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_that_is_not_a_candle_is_skipped_on_sqlite() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let Backend::Sqlite { dir } = &backend else {
        unreachable!()
    };
    let connection =
        rusqlite::Connection::open(dir.path().join(candlecast::store::SQLITE_FILE)).unwrap();
    let newest = fake.history("SOLUSDT").last().unwrap().open_time;
    connection
        .execute(
            "INSERT INTO candles VALUES ('SOLUSDT', '1m', ?1, ?2, 'x', 1, 1, 'oops', 1, 1, 1, 1, 1)",
            [newest - 30, newest + 1],
        )
        .unwrap();
    drop(connection);
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let snapshot = app.client().await.next_n(5).await;
    assert_eq!(
        snapshot[3],
        expected_message("SOLUSDT", &fake.history("SOLUSDT"), 10, chrono_tz::UTC)
    );
    assert!(app.metrics.skipped_documents.get() >= 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_rest_ban_is_named_by_readiness_and_waited_out_in_full() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        seed(&backend, &history[..history.len() - 2]).await;
    }
    fake.ban_rest(418, 6);
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    fake.wait_for_connections(1).await;
    fake.send_forming("BTCUSDT");
    let (status, body) = get_json(&format!("http://{}/ready", app.addr)).await;
    assert_eq!(status, 503, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("banned") && reasons.contains("418"),
        "{reasons}"
    );
    // Nothing is asked again before the ban ends; then everything arrives.
    let banned_requests = fake
        .rest_requests()
        .iter()
        .filter(|r| r.status == 418)
        .count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.rest_requests()
            .iter()
            .filter(|r| r.status == 418)
            .count(),
        banned_requests,
        "no request while banned"
    );
    for symbol in SYMBOLS {
        let stored = backend.wait_for_stored(symbol, &fake.history(symbol)).await;
        assert_same_candles(&stored, &fake.history(symbol), symbol);
    }
    app.stop().await.unwrap();
}

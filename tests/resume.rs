//! Resuming without gaps: a client that reconnects with `since` set to the newest
//! open time it holds gets every candle closed while it was away exactly once, from
//! memory or, when more closed than a window holds, from the store; on MongoDB and
//! SQLite.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use candlecast::candle::Candle;
use common::*;
use serde_json::Value;

/// The open times in a `candles` message, newest first as sent.
fn open_times(message: &Value) -> Vec<i64> {
    message["candles"]
        .as_array()
        .expect("a candles message")
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect()
}

async fn a_reconnecting_client_gets_what_closed_while_it_was_away(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("HISTORY_MAX", "20"), ("INTERVALS", "1m,5m")],
    ))
    .await;
    let url = |query: &str| {
        format!(
            "{}?format=candles&symbols=BTCUSDT,ETHUSDT&{query}",
            app.ws_url()
        )
    };

    // What a client holds: its candles by open time, per coin.
    let mut held: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    let keep = |message: &Value, held: &mut BTreeMap<String, BTreeMap<i64, f64>>| {
        let coin = held
            .entry(message["coin"].as_str().unwrap().to_owned())
            .or_default();
        for candle in message["candles"].as_array().unwrap() {
            coin.insert(
                candle["open_time"].as_i64().unwrap(),
                candle["close"].as_f64().unwrap(),
            );
        }
    };
    let mut client = Client::connect(&url("limit=20")).await;
    for message in client.next_n(2).await {
        keep(&message, &mut held);
    }
    drop(client);
    fake.wait_for_connections(1).await;

    // Away for a few candles: the window still holds them.
    let newest = *held["BTCUSDT"].keys().last().unwrap();
    let closed: Vec<Candle> = (0..3).map(|_| fake.close_next("BTCUSDT")).collect();
    backend
        .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
        .await;
    let mut client = Client::connect(&url(&format!("since={newest}"))).await;
    let resumed = client.next_n(2).await;
    let expected: Vec<i64> = closed.iter().rev().map(|c| c.open_time).collect();
    assert_eq!(
        open_times(&resumed[0]),
        expected,
        "BTCUSDT: exactly the candles closed meanwhile, newest first"
    );
    assert_eq!(
        resumed[0]["candles"][0]["close"].as_f64(),
        Some(closed[2].close)
    );
    assert_eq!(
        open_times(&resumed[1]),
        Vec::<i64>::new(),
        "ETHUSDT closed nothing meanwhile"
    );
    for message in &resumed {
        keep(message, &mut held);
    }
    drop(client);

    // Away for longer than a window: 30 closes, of which 10 are only in the store.
    let newest = *held["BTCUSDT"].keys().last().unwrap();
    let closed: Vec<Candle> = (0..30).map(|_| fake.close_next("BTCUSDT")).collect();
    backend
        .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
        .await;
    let mut client = Client::connect(&url(&format!("since={newest}&indicators=sma3"))).await;
    let resumed = client.next_n(2).await;
    let times = open_times(&resumed[0]);
    assert_eq!(
        times,
        closed.iter().rev().map(|c| c.open_time).collect::<Vec<_>>()
    );
    assert!(
        times.iter().all(|t| !held["BTCUSDT"].contains_key(t)),
        "nothing it already had"
    );
    let sma = resumed[0]["candles"][29]["indicators"]["sma3"]
        .as_f64()
        .expect("indicators on resumed candles");
    let history = fake.history("BTCUSDT");
    let at = history
        .iter()
        .position(|c| c.open_time == closed[0].open_time)
        .unwrap();
    let want = (history[at - 2].close + history[at - 1].close + history[at].close) / 3.0;
    assert!(
        (sma - want).abs() < 1e-9 * want,
        "sma3 of a candle read from the store: {sma} vs {want}"
    );
    for message in &resumed {
        keep(message, &mut held);
    }
    // Then live as before.
    let next = fake.close_next("BTCUSDT");
    let live = client.next_json().await;
    assert_eq!(live["candles"][0]["open_time"], next.open_time);
    keep(&live, &mut held);
    let expected: Vec<i64> = fake
        .history("BTCUSDT")
        .iter()
        .map(|c| c.open_time)
        .filter(|t| *t >= *held["BTCUSDT"].keys().next().unwrap())
        .collect();
    assert_eq!(
        held["BTCUSDT"].keys().copied().collect::<Vec<_>>(),
        expected,
        "the client holds every candle, no hole"
    );

    // An interval resumes the same way; `since` at or after the newest gives nothing.
    let mut five = Client::connect(&format!(
        "{}?format=candles&symbols=BTCUSDT&interval=5m",
        app.ws_url()
    ))
    .await;
    let window = five.next_json().await;
    let newest_bucket = open_times(&window)[0];
    let mut resumed = Client::connect(&format!(
        "{}?format=candles&symbols=BTCUSDT&interval=5m&since={}",
        app.ws_url(),
        newest_bucket - 10 * MINUTE
    ))
    .await;
    assert_eq!(
        open_times(&resumed.next_json().await),
        vec![newest_bucket, newest_bucket - 5 * MINUTE]
    );
    let mut nothing =
        Client::connect(&url(&format!("since={}", next.open_time + 3 * MINUTE))).await;
    assert_eq!(open_times(&nothing.next_json().await), Vec::<i64>::new());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_closed_while_it_was_away_on_mongodb() {
    a_reconnecting_client_gets_what_closed_while_it_was_away(Backend::mongo()).await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_closed_while_it_was_away_on_sqlite() {
    a_reconnecting_client_gets_what_closed_while_it_was_away(Backend::sqlite()).await;
}

#[tokio::test]
async fn since_too_far_back_or_with_the_compact_format_is_a_400() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let now = chrono::Utc::now().timestamp_millis();
    for (query, why) in [
        (
            format!("?since={}", now - 5 * MINUTE),
            "needs format=candles",
        ),
        (
            format!("?format=candles&since={}", now - 2000 * MINUTE),
            "GET /api/v1/candles",
        ),
        ("?format=candles&since=soon".to_owned(), "whole number"),
    ] {
        let (status, body) = refused_upgrade(&app, &query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["parameter"], "since", "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{query}: {body}"
        );
    }
    // 999 candles back is still served.
    let mut client = Client::connect(&format!(
        "{}?format=candles&symbols=SOLUSDT&since={}",
        app.ws_url(),
        now - 990 * MINUTE
    ))
    .await;
    let message = tokio::time::timeout(Duration::from_secs(10), client.next_json())
        .await
        .unwrap();
    assert_eq!(
        open_times(&message).len(),
        fake.history("SOLUSDT").len(),
        "every stored candle after since"
    );
    app.stop().await.unwrap();
}

/// After a resume, a change of the window that the client's view does not show (a
/// corrected candle older than its `limit`) sends it nothing, as it sends a plain
/// client nothing; the next close reaches both once.
#[tokio::test]
async fn a_resumed_client_gets_no_more_messages_than_a_plain_one() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("HISTORY_MAX", "20")])).await;
    fake.wait_for_connections(1).await;
    let url = format!("{}?format=candles&symbols=BTCUSDT&limit=2", app.ws_url());
    let newest = open_times(&Client::connect(&url).await.next_json().await)[0];
    let closed: Vec<Candle> = (0..5).map(|_| fake.close_next("BTCUSDT")).collect();
    let mut plain = Client::connect(&url).await;
    assert_eq!(open_times(&plain.next_json().await)[0], closed[4].open_time);
    let mut resumed = Client::connect(&format!("{url}&since={newest}")).await;
    assert_eq!(open_times(&resumed.next_json().await).len(), 5);

    // The exchange corrects a candle the window holds but neither view shows.
    let mut corrected = closed[1].clone();
    corrected.volume += 1.0;
    fake.send_update(&corrected, true);
    let next = fake.close_next("BTCUSDT");
    for (who, client) in [("plain", &mut plain), ("resumed", &mut resumed)] {
        let message = client.next_json().await;
        assert_eq!(
            open_times(&message)[0],
            next.open_time,
            "{who}: the next message is the next close"
        );
    }
    app.stop().await.unwrap();
}

//! Per-client views of the feed: their cached renderings go when their clients go,
//! a client never gets one window twice, and a client that answers pings but never
//! reads is still closed by the send timeout.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono_tz::Tz;
use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// `candlecast_cached_views` as `/metrics` reports it.
async fn cached_views(app: &TestApp) -> i64 {
    let body = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("candlecast_cached_views "))
        .expect("the cached_views gauge")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_view_cache_shrinks_back_to_the_views_clients_hold() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    let url = |query: &str| format!("{}?{query}", app.ws_url());
    let mut kept = Client::connect(&url("limit=50&format=candles")).await;
    kept.next_n(5).await;
    let mut plain = app.client().await;
    plain.next_n(5).await;

    for round in 0..3 {
        let mut passing = Vec::new();
        for limit in 1..=30 {
            let mut client = Client::connect(&url(&format!("limit={}", limit + round))).await;
            client.next_n(5).await;
            passing.push(client);
        }
        assert!(cached_views(&app).await >= 30);
        drop(passing);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while cached_views(&app).await != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cached views stayed at {} after their clients left",
                cached_views(&app).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The held view still gets its updates.
    fake.wait_for_connections(1).await;
    let close = fake.close_next("BTCUSDT");
    let message = kept.next_json().await;
    assert_eq!(message["candles"][0]["open_time"], close.open_time);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn clients_of_one_view_never_get_the_same_window_twice() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    let url = format!("{}?limit=3", app.ws_url());
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = Client::connect(&url).await;
        client.next_n(5).await;
        clients.push(client);
    }
    // Closes sent before the service's stream is open would never reach it.
    fake.wait_for_connections(1).await;
    let rounds = 20;
    for _ in 0..rounds {
        for symbol in SYMBOLS {
            fake.close_next(symbol);
        }
    }
    let finals: HashMap<String, Value> = SYMBOLS
        .iter()
        .map(|s| {
            (
                s.to_string(),
                expected_message(s, &fake.history(s), 3, Tz::UTC),
            )
        })
        .collect();
    for client in &mut clients {
        // A client may skip windows it was too slow for, never repeat one.
        let mut last: HashMap<String, Value> = HashMap::new();
        while last != finals {
            let Ok(message) =
                tokio::time::timeout(Duration::from_secs(5), client.next_json()).await
            else {
                let behind: Vec<_> = finals
                    .iter()
                    .filter(|(coin, m)| last.get(*coin) != Some(m))
                    .map(|(coin, m)| format!("{coin}: holds {:?}, expected {m}", last.get(coin)))
                    .collect();
                panic!("a client never got the final windows: {behind:?}");
            };
            let coin = message["coin"].as_str().unwrap().to_owned();
            assert_ne!(last.get(&coin), Some(&message), "{coin} sent twice");
            last.insert(coin, message);
        }
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_only_sends_pongs_and_never_reads_is_closed_by_the_send_timeout() {
    let fake = FakeExchange::start_sized(&SYMBOLS, 1100).await;
    let settings = [("CLIENT_SEND_TIMEOUT_SECS", "2"), ("CLIENT_PING_SECS", "1")];
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &settings)).await;
    fake.wait_for_connections(1).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let url = format!("{}?limit=100&format=candles", app.ws_url());
    let (mut client, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();

    let slow_before = app.metrics.slow_clients_closed.get();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.metrics.slow_clients_closed.get() == slow_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that never reads was not closed"
        );
        for symbol in SYMBOLS {
            fake.close_next(symbol);
        }
        // Alive by every measure but reading: pongs, unasked, all the time.
        if client
            .send(Message::Pong(Default::default()))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metrics.slow_clients_closed.get(), slow_before + 1);
    app.stop().await.unwrap();
}

//! A follower (`INGEST=false`) judges time by the database's clock, as the ingesters
//! do, never by its own alone: with its clock 15 minutes behind it serves every
//! followed close; 15 minutes ahead it still refuses a candle from the future.

mod common;

use std::time::Duration;

use candlecast::clock::Clock;
use common::*;
use serde_json::Value;

const FIFTEEN_MINUTES: i64 = 15 * 60_000;

/// An ingester on a fake exchange whose history runs up to now (frozen: only the
/// test's closes add candles), and a follower whose clock is `skew_ms` off.
async fn ingester_and_follower(skew_ms: i64) -> (FakeExchange, Backend, TestApp, TestApp) {
    let backend = Backend::mongo();
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    seed_all(&fake, &backend).await;
    let ingester = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    fake.wait_for_connections(1).await;
    let follower = TestApp::spawn_with_clock(
        config_for(&fake, &backend, &[("INGEST", "false")]),
        Clock::skewed(skew_ms),
    )
    .await;
    (fake, backend, ingester, follower)
}

/// Reads `client`'s messages until `coin`'s is the fake's window; fails after 20 s.
async fn until_window(client: &mut Client, fake: &FakeExchange, coin: &str) -> Value {
    let expected = expected_message(coin, &fake.history(coin), 10, chrono_tz::UTC);
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = client.next_json().await;
            if message == expected {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the follower never showed {coin}'s close: {expected}"))
}

#[tokio::test]
async fn a_follower_whose_clock_is_fifteen_minutes_behind_serves_every_close() {
    let (fake, _backend, ingester, follower) = ingester_and_follower(-FIFTEEN_MINUTES).await;
    let mut client = follower.client().await;
    // The first snapshot holds the newest stored candles, though by the follower's
    // own clock they open in its future.
    for (message, symbol) in client.next_n(5).await.iter().zip(SYMBOLS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }
    for close in 1..=5 {
        fake.close_next("BTCUSDT");
        let message = until_window(&mut client, &fake, "BTCUSDT").await;
        assert_eq!(message["coin"], "BTCUSDT", "close {close}");
    }
    // Ready, and truly so: it serves what the ingesters write.
    let ready = format!("http://{}/ready", follower.addr);
    eventually_async(20, "the follower is ready", || async {
        reqwest::get(&ready).await.unwrap().status() == 200
    })
    .await;
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}

#[tokio::test]
async fn a_follower_whose_clock_is_ahead_still_refuses_a_candle_from_the_future() {
    let (fake, backend, ingester, follower) = ingester_and_follower(FIFTEEN_MINUTES).await;
    let mut client = follower.client().await;
    client.next_n(5).await;
    // Written by hand, opening 20 minutes from now: within the follower's own clock
    // plus the 10 minutes' tolerance, but not the database's.
    let mut future = fake.history("BTCUSDT").last().unwrap().clone();
    future.open_time = (chrono::Utc::now().timestamp_millis() / MINUTE + 20) * MINUTE;
    future.close_time = future.open_time + MINUTE - 1;
    seed(&backend, &[future]).await;
    // Not silently: readiness says why the newest followed candle is not shown.
    let ready = format!("http://{}/ready", follower.addr);
    eventually_async(20, "/ready names the refused candle", || async {
        let body = reqwest::get(&ready).await.unwrap().text().await.unwrap();
        body.contains("newest followed candle") && body.contains("not shown")
    })
    .await;
    // The next real close shows the fake's window, without the candle from the future.
    for _ in 0..2 {
        fake.close_next("BTCUSDT");
        until_window(&mut client, &fake, "BTCUSDT").await;
    }
    eventually_async(20, "/ready forgets it once a candle is shown", || async {
        let body = reqwest::get(&ready).await.unwrap().text().await.unwrap();
        !body.contains("newest followed candle")
    })
    .await;
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}

//! Every close once: at the base interval, a served longer one, an unserved one
//! built from base candles, and a continuous-contract stream, each bucket the
//! moment its last base candle closes.

use std::collections::HashMap;
use std::time::Duration;

use candlecast::candle::Candle;
use serde_json::Value;
use tokio::time::Instant;

use super::client::*;
use super::common::*;

/// Sixteen minutes closed on BTCUSDT, read from one combined connection.
pub async fn every_close_once(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("INTERVALS", "1m,5m")])).await;
    fake.wait_for_connections(1).await;
    fake.freeze();
    let streams =
        "btcusdt@kline_1m/btcusdt@kline_5m/btcusdt@kline_3m/btcusdt_perpetual@continuousKline_5m";
    let mut client = Market::connect(&app, &format!("/market/stream?streams={streams}")).await;
    let mut closed = Vec::new();
    for _ in 0..16 {
        closed.push(fake.close_next("BTCUSDT"));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let last = closed.last().unwrap().open_time;
    let mut events = client
        .events_until(Duration::from_secs(20), |stream, d| {
            stream == "btcusdt@kline_1m" && is_close(d, last)
        })
        .await;
    events.extend(
        client
            .events_until(Duration::from_millis(500), |_, _| false)
            .await,
    );
    let mut closes: HashMap<String, Vec<(Instant, Value)>> = HashMap::new();
    for (at, stream, data) in events {
        if data["k"]["x"] == true {
            closes.entry(stream).or_default().push((at, data));
        }
    }
    // Every minute once, in order, as the fake closed it.
    let minutes = &closes["btcusdt@kline_1m"];
    assert_eq!(minutes.len(), closed.len(), "1m closes");
    for ((_, event), candle) in minutes.iter().zip(&closed) {
        assert_kline(event, candle, "1m", true);
    }
    let history = fake.history("BTCUSDT");
    for (stream, length) in [
        ("btcusdt@kline_5m", 5),
        ("btcusdt@kline_3m", 3),
        ("btcusdt_perpetual@continuousKline_5m", 5),
    ] {
        let span = length * MINUTE;
        // Buckets whose last minute closed during the test.
        let buckets: Vec<i64> = closed
            .iter()
            .filter(|c| (c.open_time + MINUTE) % span == 0)
            .map(|c| c.open_time + MINUTE - span)
            .collect();
        let got = &closes[stream];
        let opens: Vec<i64> = got
            .iter()
            .map(|(_, e)| e["k"]["t"].as_i64().unwrap())
            .collect();
        assert_eq!(opens, buckets, "{stream}: each bucket closed once");
        for (at, event) in got {
            let open = event["k"]["t"].as_i64().unwrap();
            let parts: Vec<&Candle> = history
                .iter()
                .filter(|c| c.open_time >= open && c.open_time < open + span)
                .collect();
            assert_eq!(parts.len(), length as usize);
            let k = &event["k"];
            assert_eq!(k["T"], open + span - 1);
            assert_eq!(k["i"], format!("{length}m"));
            assert_eq!(k["o"], btc_price(parts[0].open));
            assert_eq!(k["c"], btc_price(parts[parts.len() - 1].close));
            let high = parts.iter().map(|c| c.high).fold(f64::MIN, f64::max);
            let low = parts.iter().map(|c| c.low).fold(f64::MAX, f64::min);
            assert_eq!(k["h"], btc_price(high));
            assert_eq!(k["l"], btc_price(low));
            assert_eq!(k["n"], parts.iter().map(|c| c.trades).sum::<i64>());
            let volume: f64 = k["v"].as_str().unwrap().parse().unwrap();
            let expected: f64 = parts.iter().map(|c| c.volume).sum();
            assert!(
                (volume - expected).abs() < 1e-6 * expected.max(1.0),
                "{stream} volume"
            );
            // Closed the moment its last minute did.
            let last_minute = open + span - MINUTE;
            let (minute_at, _) = minutes
                .iter()
                .find(|(_, e)| e["k"]["t"] == last_minute)
                .unwrap();
            assert!(
                at.saturating_duration_since(*minute_at) < Duration::from_millis(500),
                "{stream} closed late"
            );
        }
    }
}

/// A minute the exchange's stream skipped, fetched by REST after the next one
/// arrived, still completes its bucket: the 3m close comes once, whole.
pub async fn a_repaired_minute_completes_its_bucket() {
    let (fake, app, _backend) = start("1m").await;
    fake.freeze();
    let mut client = Market::connect(&app, "/market/ws/btcusdt@kline_3m").await;
    // Up to the start of a 3m bucket.
    while (fake.history("BTCUSDT").last().unwrap().open_time + MINUTE) % (3 * MINUTE) != 0 {
        fake.close_next("BTCUSDT");
    }
    // After the stream connection's own backfill, which would fetch gaps at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = fake.close_next("BTCUSDT");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let skipped = fake.close_next_silently("BTCUSDT");
    let last = fake.close_next("BTCUSDT");
    let events = client
        .events_until(Duration::from_secs(15), |_, d| is_close(d, first.open_time))
        .await;
    let closes: Vec<&Value> = events
        .iter()
        .map(|(_, _, e)| e)
        // The buckets closed on the way to this one came first.
        .filter(|e| e["k"]["x"] == true && e["k"]["t"].as_i64() >= Some(first.open_time))
        .collect();
    assert_eq!(closes.len(), 1, "one 3m close: {closes:?}");
    let k = &closes[0]["k"];
    let parts = [&first, &skipped, &last];
    assert_eq!(k["t"], first.open_time);
    assert_eq!(k["o"], btc_price(first.open));
    assert_eq!(k["c"], btc_price(last.close));
    let high = parts.iter().map(|c| c.high).fold(f64::MIN, f64::max);
    assert_eq!(k["h"], btc_price(high));
    assert_eq!(k["n"], parts.iter().map(|c| c.trades).sum::<i64>());
    let more = client
        .events_until(Duration::from_millis(500), |_, d| d["k"]["x"] == true)
        .await;
    assert!(
        more.iter().all(|(_, _, e)| e["k"]["x"] == false),
        "a second close"
    );
}

/// An unserved 15m stream on a hub keeping four minutes: the base candles of the
/// bucket still open that the window no longer holds are read from the store, and
/// the bucket's close is whole.
pub async fn the_open_bucket_is_read_back_beyond_the_window() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let extra = [("HISTORY_LEN", "3"), ("HISTORY_MAX", "3")];
    let app = TestApp::spawn(config_for(&fake, &backend, &extra)).await;
    fake.wait_for_connections(1).await;
    fake.freeze();
    let span = 15 * MINUTE;
    // Eight minutes into a 15m bucket: more than the window holds.
    while (fake.history("BTCUSDT").last().unwrap().open_time + MINUTE) % span != 8 * MINUTE {
        fake.close_next("BTCUSDT");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = Market::connect(&app, "/market/ws/btcusdt@kline_15m").await;
    let mut closed = Vec::new();
    for _ in 0..7 {
        closed.push(fake.close_next("BTCUSDT"));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let open = closed[0].open_time - 8 * MINUTE;
    let events = client
        .events_until(Duration::from_secs(10), |_, d| is_close(d, open))
        .await;
    let (_, _, event) = events.last().expect("events");
    assert!(is_close(event, open), "no 15m close: {events:?}");
    let parts: Vec<Candle> = fake
        .history("BTCUSDT")
        .into_iter()
        .filter(|c| c.open_time >= open && c.open_time < open + span)
        .collect();
    assert_eq!(parts.len(), 15);
    let k = &event["k"];
    assert_eq!(k["o"], btc_price(parts[0].open));
    assert_eq!(k["c"], btc_price(parts[14].close));
    let low = parts.iter().map(|c| c.low).fold(f64::MAX, f64::min);
    assert_eq!(k["l"], btc_price(low));
    assert_eq!(k["n"], parts.iter().map(|c| c.trades).sum::<i64>());
}

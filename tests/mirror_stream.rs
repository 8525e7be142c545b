//! Binance's websocket market streams, served by candlecast: the combined, raw and
//! legacy paths, each control message and error, the limits, forming conflation,
//! every close once (1m, a served 5m, an unserved 3m), and continuousKline events,
//! all over real sockets with the fake exchange driving the candles.

#[path = "mirror_stream/client.rs"]
mod client;
#[path = "mirror_stream/closes.rs"]
mod closes;
mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use client::*;
use closes::{
    a_repaired_minute_completes_its_bucket, every_close_once,
    the_open_bucket_is_read_back_beyond_the_window,
};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn combined_raw_and_legacy_paths_carry_binances_kline_events() {
    let (fake, app, _backend) = start("1m").await;
    fake.freeze();
    let mut combined = Market::connect(
        &app,
        "/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m",
    )
    .await;
    let mut raw = Market::connect(&app, "/market/ws/btcusdt@kline_1m").await;
    let mut legacy_combined = Market::connect(&app, "/stream?streams=btcusdt@kline_1m").await;
    let mut legacy_raw = Market::connect(&app, "/ws/btcusdt@kline_1m").await;

    let closed = fake.close_next("BTCUSDT");
    let open_time = closed.open_time;
    for (client, stream) in [
        (&mut combined, "btcusdt@kline_1m"),
        (&mut raw, ""),
        (&mut legacy_combined, "btcusdt@kline_1m"),
        (&mut legacy_raw, ""),
    ] {
        let events = client
            .events_until(Duration::from_secs(10), |_, data| is_close(data, open_time))
            .await;
        let (_, name, event) = events.last().expect("events");
        assert_eq!(name, stream);
        assert_kline(event, &closed, "1m", true);
        assert!(event["E"].as_i64().unwrap() > closed.close_time);
        // Forming updates before it, if any, are of the same candle.
        for (_, _, event) in &events[..events.len() - 1] {
            assert_eq!(event["k"]["x"], false);
            assert_eq!(event["k"]["t"], open_time);
        }
    }

    // The other stream of the combined connection.
    let eth = fake.close_next("ETHUSDT");
    let events = combined
        .events_until(Duration::from_secs(10), |_, data| {
            is_close(data, eth.open_time)
        })
        .await;
    let (_, name, event) = events.last().unwrap();
    assert_eq!(name, "ethusdt@kline_1m");
    assert_kline(event, &eth, "1m", true);
}

#[tokio::test]
async fn control_messages_get_binances_answers_with_timestamp_ids() {
    let (fake, app, _backend) = start("1m").await;
    fake.freeze();
    // ccxt's connection number as the path: a connection without streams.
    let mut client = Market::connect(&app, "/market/ws/0").await;
    let id = chrono::Utc::now().timestamp_millis() as u64;
    let answer = client
        .ask(json!({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "solusdt_perpetual@continuousKline_1m"], "id": id}))
        .await;
    assert_eq!(answer, json!({"result": null, "id": id}));
    let answer = client
        .ask(json!({"method": "LIST_SUBSCRIPTIONS", "id": id + 1}))
        .await;
    assert_eq!(
        answer,
        json!({"result": ["btcusdt@kline_1m", "solusdt_perpetual@continuousKline_1m"], "id": id + 1})
    );
    let answer = client
        .ask(json!({"method": "GET_PROPERTY", "params": ["combined"], "id": u64::MAX}))
        .await;
    assert_eq!(answer, json!({"result": false, "id": u64::MAX}));

    // Raw events until combined is set.
    let closed = fake.close_next("BTCUSDT");
    let events = client
        .events_until(Duration::from_secs(10), |_, d| {
            is_close(d, closed.open_time)
        })
        .await;
    assert_eq!(events.last().unwrap().1, "");
    assert_kline(&events.last().unwrap().2, &closed, "1m", true);

    // The continuous stream: pair, contract type, no symbol inside k.
    let sol = fake.close_next("SOLUSDT");
    let events = client
        .events_until(Duration::from_secs(10), |_, d| is_close(d, sol.open_time))
        .await;
    let event = &events.last().unwrap().2;
    assert_eq!(event["e"], "continuous_kline");
    assert_eq!(event["ps"], "SOLUSDT");
    assert_eq!(event["ct"], "PERPETUAL");
    assert!(event.get("s").is_none());
    assert!(event["k"].get("s").is_none());
    assert_eq!(event["k"].as_object().unwrap().len(), 16);
    assert_kline_body(&event["k"], &sol, "1m", true);

    let answer = client
        .ask(json!({"method": "SET_PROPERTY", "params": ["combined", true], "id": 5}))
        .await;
    assert_eq!(answer, json!({"result": null, "id": 5}));
    let answer = client
        .ask(json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 6}))
        .await;
    assert_eq!(answer, json!({"result": true, "id": 6}));
    let closed = fake.close_next("BTCUSDT");
    let events = client
        .events_until(Duration::from_secs(10), |_, d| {
            is_close(d, closed.open_time)
        })
        .await;
    assert_eq!(events.last().unwrap().1, "btcusdt@kline_1m");

    // Unsubscribed, nothing more of that stream.
    let answer = client
        .ask(json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}))
        .await;
    assert_eq!(answer, json!({"result": null, "id": 7}));
    let answer = client
        .ask(json!({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        .await;
    assert_eq!(
        answer["result"],
        json!(["solusdt_perpetual@continuousKline_1m"])
    );
    fake.close_next("BTCUSDT");
    let quiet = client
        .events_until(Duration::from_millis(700), |_, _| false)
        .await;
    assert!(quiet.is_empty(), "events after UNSUBSCRIBE: {quiet:?}");
}

#[tokio::test]
async fn bad_control_messages_get_binances_errors() {
    let (_fake, app, _backend) = start("1m").await;
    let mut client = Market::connect(&app, "/market/ws").await;
    let cases = [
        (
            "{\"method\":",
            json!({"error": {"code": 3, "msg": "Invalid JSON: EOF while parsing a value at line 1 column 10"}, "id": null}),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_7m"],"id":1}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 1}),
        ),
        (
            r#"{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":"a"}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": null}),
        ),
        (
            r#"{"method":"PING","id":2}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: unknown variant `PING`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 16"}, "id": null}),
        ),
        (
            r#"{"params":[],"id":2}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 20"}, "id": null}),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":3}"#,
            json!({"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 3}),
        ),
        (
            r#"{"method":"GET_PROPERTY","params":["colour"],"id":4}"#,
            json!({"error": {"code": 0, "msg": "Unknown property"}, "id": 4}),
        ),
        (
            r#"{"method":"GET_PROPERTY","params":[true],"id":5}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: property name must be a string"}, "id": 5}),
        ),
        (
            r#"{"method":"SET_PROPERTY","params":["combined",true,true],"id":6}"#,
            json!({"error": {"code": 2, "msg": "Invalid request: too many parameters"}, "id": 6}),
        ),
    ];
    for (index, (request, expected)) in cases.into_iter().enumerate() {
        // Within Binance's ten messages a second.
        if index % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        client.send(request).await;
        assert_eq!(client.next().await.unwrap(), expected, "{request}");
    }
    // An unknown but well-formed symbol is accepted, as Binance does, and listed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = client
        .ask(json!({"method": "SUBSCRIBE", "params": ["dogeusdt@kline_1m"], "id": 9}))
        .await;
    assert_eq!(answer, json!({"result": null, "id": 9}));
    let answer = client
        .ask(json!({"method": "LIST_SUBSCRIPTIONS", "id": 10}))
        .await;
    assert_eq!(answer, json!({"result": ["dogeusdt@kline_1m"], "id": 10}));
}

#[tokio::test]
async fn binances_limits_hold_ten_messages_a_second_and_1024_streams() {
    let (_fake, app, _backend) = start("1m").await;
    let mut client = Market::connect(&app, "/market/ws").await;
    let names: Vec<String> = (0..1024).map(|i| format!("coin{i}usdt@kline_1m")).collect();
    let answer = client
        .ask(json!({"method": "SUBSCRIBE", "params": names, "id": 1}))
        .await;
    assert_eq!(answer, json!({"result": null, "id": 1}));
    let answer = client
        .ask(json!({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 2}))
        .await;
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["code"], 2, "{answer}");
    let answer = client
        .ask(json!({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        .await;
    assert_eq!(answer["result"].as_array().unwrap().len(), 1024);

    // Ten messages within a second are answered; the eleventh drops the connection.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut fast = Market::connect(&app, "/market/ws").await;
    for id in 0..10 {
        fast.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": id}).to_string())
            .await;
    }
    for id in 0..10 {
        assert_eq!(fast.next().await.unwrap()["id"], id);
    }
    fast.send(&json!({"method": "LIST_SUBSCRIPTIONS", "id": 10}).to_string())
        .await;
    let after = fast.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(after, None, "the eleventh message was answered");

    // 1,025 streams in the path are refused (short names: the URL fits in 16 KiB).
    let many: Vec<String> = (0..1025).map(|i| format!("{i}@kline_1m")).collect();
    let url = format!("ws://{}/market/ws/{}", app.addr, many.join("/"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
        }
        other => panic!("1,025 streams accepted: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn forming_updates_are_conflated_to_one_per_250_ms_with_the_newest_state() {
    let (fake, app, _backend) = start("1m").await;
    fake.freeze();
    let mut client = Market::connect(&app, "/market/ws/btcusdt@kline_1m").await;
    // Read as they arrive, while the fake sends.
    let reading = tokio::spawn(async move {
        client
            .events_until(Duration::from_millis(1200), |_, _| false)
            .await
    });
    // An interval the hub does not serve: the bucket so far, built here.
    let mut three = Market::connect(&app, "/market/stream?streams=btcusdt@kline_3m").await;
    let reading_three = tokio::spawn(async move {
        three
            .events_until(Duration::from_millis(1200), |_, _| false)
            .await
    });
    let forming = fake.send_forming("BTCUSDT");
    let mut last = forming.clone();
    for step in 1..=12 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        last.close = forming.close + step as f64;
        last.high = last.high.max(last.close);
        last.volume = forming.volume + step as f64;
        fake.send_update(&last, false);
    }
    let events = reading.await.unwrap();
    assert!(!events.is_empty(), "no forming event");
    assert!(events.len() <= 3, "not conflated: {} events", events.len());
    let spacing: Vec<(Duration, Value)> = events
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].0, pair[1].2["k"]["c"].clone()))
        .collect();
    for (gap, _) in &spacing {
        assert!(
            *gap >= Duration::from_millis(240),
            "two forming events closer than 250 ms: {spacing:?}"
        );
    }
    let (_, _, newest) = events.last().unwrap();
    assert_kline(newest, &last, "1m", false);

    let events = reading_three.await.unwrap();
    assert!(
        events.len() <= 3,
        "3m not conflated: {} events",
        events.len()
    );
    let (_, stream, newest) = events.last().expect("a forming 3m event");
    assert_eq!(stream, "btcusdt@kline_3m");
    let bucket = forming.open_time - forming.open_time.rem_euclid(3 * MINUTE);
    let mut parts: Vec<Candle> = fake
        .history("BTCUSDT")
        .into_iter()
        .filter(|c| c.open_time >= bucket)
        .collect();
    parts.push(last.clone());
    let k = &newest["k"];
    assert_eq!(k["t"], bucket);
    assert_eq!(k["T"], bucket + 3 * MINUTE - 1);
    assert_eq!(k["i"], "3m");
    assert_eq!(k["x"], false);
    assert_eq!(k["o"], btc_price(parts[0].open));
    assert_eq!(k["c"], btc_price(last.close));
    let high = parts.iter().map(|c| c.high).fold(f64::MIN, f64::max);
    assert_eq!(k["h"], btc_price(high));
    assert_eq!(k["n"], parts.iter().map(|c| c.trades).sum::<i64>());
}

#[tokio::test]
async fn every_close_is_sent_once_at_1m_5m_and_an_unserved_3m_on_sqlite() {
    every_close_once(Backend::sqlite()).await;
}

#[tokio::test]
async fn every_close_is_sent_once_at_1m_5m_and_an_unserved_3m_on_mongodb() {
    every_close_once(Backend::mongo()).await;
}

#[tokio::test]
async fn the_server_pings_and_answers_pings() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("CLIENT_PING_SECS", "1")])).await;
    let mut client = Market::connect(&app, "/market/ws/btcusdt@kline_1m").await;
    client
        .socket
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let (mut pong, mut ping) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(pong && ping) {
        match tokio::time::timeout_at(deadline, client.socket.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => pong |= payload.as_ref() == b"hi",
            Ok(Some(Ok(Message::Ping(_)))) => ping = true,
            Ok(Some(Ok(_))) => {}
            other => panic!("pong {pong}, ping {ping}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_minute_the_exchange_skipped_still_completes_its_3m_bucket() {
    a_repaired_minute_completes_its_bucket().await;
}

#[tokio::test]
async fn an_unserved_bucket_older_than_the_window_is_read_back_and_closes_whole() {
    the_open_bucket_is_read_back_beyond_the_window().await;
}

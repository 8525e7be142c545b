//! Binance's websocket market streams, served by candlecast: the combined, raw and
//! legacy paths, each control message and error, the limits, forming conflation,
//! every close once (1m, a served 5m, an unserved 3m), and continuousKline events,
//! all over real sockets with the fake exchange driving the candles.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use candlecast::candle::Candle;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client of candlecast's Binance streams.
struct Market {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Market {
    async fn connect(app: &TestApp, path: &str) -> Self {
        let url = format!("ws://{}{path}", app.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Self { socket }
    }

    async fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Sends a control message and reads its answer (skipping events).
    async fn ask(&mut self, request: Value) -> Value {
        self.send(&request.to_string()).await;
        loop {
            let message = self.next().await.expect("an answer");
            if message.get("result").is_some() || message.get("error").is_some() {
                return message;
            }
        }
    }

    /// The next text message as JSON; `None` when the connection ended.
    async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("no message within 10 s")
    }

    async fn next_within(&mut self, within: Duration) -> Result<Option<Value>, ()> {
        let deadline = Instant::now() + within;
        loop {
            let read = tokio::time::timeout_at(deadline, self.socket.next()).await;
            match read.map_err(|_| ())? {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Some(serde_json::from_str(text.as_str()).unwrap()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) | Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Events (unwrapped from combined payloads, with their stream) until `until`
    /// returns true for one, or `within` passes.
    async fn events_until(
        &mut self,
        within: Duration,
        mut until: impl FnMut(&str, &Value) -> bool,
    ) -> Vec<(Instant, String, Value)> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while let Ok(Some(message)) = self.next_within(deadline - Instant::now()).await {
            let (stream, data) = match message.get("stream") {
                Some(stream) => (stream.as_str().unwrap().to_owned(), message["data"].clone()),
                None => (String::new(), message),
            };
            let done = until(&stream, &data);
            events.push((Instant::now(), stream, data));
            if done {
                break;
            }
        }
        events
    }
}

/// A fake whose history trails the wall clock by 30 minutes (so closing candles
/// faster than the clock never runs into the future), stored, and the service on it.
async fn start(intervals: &str) -> (FakeExchange, TestApp, Backend) {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("INTERVALS", intervals)])).await;
    fake.wait_for_connections(1).await;
    (fake, app, backend)
}

fn decimal(value: f64) -> Value {
    Value::String(format!("{value}"))
}

/// Asserts `event` is Binance's kline event for `candle` (`closed` or forming).
#[track_caller]
fn assert_kline(event: &Value, candle: &Candle, interval: &str, closed: bool) {
    assert_eq!(event["e"], "kline", "{event}");
    assert_eq!(event["s"], candle.symbol.as_str());
    assert!(event["E"].as_i64().unwrap() >= candle.open_time);
    assert_kline_body(&event["k"], candle, interval, closed);
    assert_eq!(event["k"]["s"], candle.symbol.as_str());
    let fields: Vec<&str> = event["k"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields.len(),
        17,
        "t T s i f L o c h l v n x q V Q B: {fields:?}"
    );
}

#[track_caller]
fn assert_kline_body(k: &Value, candle: &Candle, interval: &str, closed: bool) {
    assert_eq!(k["t"], candle.open_time, "{k}");
    assert_eq!(k["T"], candle.close_time);
    assert_eq!(k["i"], interval);
    assert_eq!(k["o"], decimal(candle.open));
    assert_eq!(k["c"], decimal(candle.close));
    assert_eq!(k["h"], decimal(candle.high));
    assert_eq!(k["l"], decimal(candle.low));
    assert_eq!(k["v"], decimal(candle.volume));
    assert_eq!(k["n"], candle.trades);
    assert_eq!(k["x"], closed);
    assert_eq!(k["q"], decimal(candle.quote_volume));
    assert_eq!(k["V"], decimal(candle.taker_buy_volume));
    assert_eq!(k["Q"], decimal(candle.taker_buy_quote_volume));
    assert_eq!(k["B"], "0");
    assert_eq!(k["f"], 0);
    assert_eq!(k["L"], candle.trades - 1);
}

fn is_close(data: &Value, open_time: i64) -> bool {
    data["k"]["x"] == true && data["k"]["t"] == open_time
}

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
}

async fn every_close_once(backend: Backend) {
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
            assert_eq!(k["o"], decimal(parts[0].open));
            assert_eq!(k["c"], decimal(parts[parts.len() - 1].close));
            let high = parts.iter().map(|c| c.high).fold(f64::MIN, f64::max);
            let low = parts.iter().map(|c| c.low).fold(f64::MAX, f64::min);
            assert_eq!(k["h"], decimal(high));
            assert_eq!(k["l"], decimal(low));
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

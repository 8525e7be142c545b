//! The test client of candlecast's Binance streams, the service started for them,
//! and what a Binance kline event must hold for a candle.

use std::time::Duration;

use candlecast::candle::Candle;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::common::*;

/// A client of candlecast's Binance streams.
pub struct Market {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Market {
    pub async fn connect(app: &TestApp, path: &str) -> Self {
        let url = format!("ws://{}{path}", app.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Self { socket }
    }

    pub async fn send(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Sends a control message and reads its answer (skipping events).
    pub async fn ask(&mut self, request: Value) -> Value {
        self.send(&request.to_string()).await;
        loop {
            let message = self.next().await.expect("an answer");
            if message.get("result").is_some() || message.get("error").is_some() {
                return message;
            }
        }
    }

    /// The next text message as JSON; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("no message within 10 s")
    }

    pub async fn next_within(&mut self, within: Duration) -> Result<Option<Value>, ()> {
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
    pub async fn events_until(
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
pub async fn start(intervals: &str) -> (FakeExchange, TestApp, Backend) {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("INTERVALS", intervals)])).await;
    fake.wait_for_connections(1).await;
    (fake, app, backend)
}

/// A BTCUSDT price as the fake exchange writes it (padded to its precision).
pub fn btc_price(value: f64) -> Value {
    let (price, _) = fake_exchange::precisions("BTCUSDT");
    Value::String(fake_exchange::exchange_decimal(value, price))
}

/// Asserts `event` is Binance's kline event for `candle` (`closed` or forming).
#[track_caller]
pub fn assert_kline(event: &Value, candle: &Candle, interval: &str, closed: bool) {
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
pub fn assert_kline_body(k: &Value, candle: &Candle, interval: &str, closed: bool) {
    assert_eq!(k["t"], candle.open_time, "{k}");
    assert_eq!(k["T"], candle.close_time);
    assert_eq!(k["i"], interval);
    // Digit for digit as the fake exchange writes the candle.
    let [o, h, l, c, v, q, taker_v, taker_q] = fake_exchange::exchange_decimals(candle);
    assert_eq!(k["o"], o);
    assert_eq!(k["c"], c);
    assert_eq!(k["h"], h);
    assert_eq!(k["l"], l);
    assert_eq!(k["v"], v);
    assert_eq!(k["n"], candle.trades);
    assert_eq!(k["x"], closed);
    assert_eq!(k["q"], q);
    assert_eq!(k["V"], taker_v);
    assert_eq!(k["Q"], taker_q);
    assert_eq!(k["B"], "0");
    assert_eq!(k["f"], 0);
    assert_eq!(k["L"], candle.trades - 1);
}

pub fn is_close(data: &Value, open_time: i64) -> bool {
    data["k"]["x"] == true && data["k"]["t"] == open_time
}

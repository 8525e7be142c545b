//! Checks the fake exchange's combined stream against Binance's rules for control
//! messages and limits, with a plain tokio-tungstenite client: no candlecast service
//! is started.

#[path = "common/fake_exchange.rs"]
mod fake_exchange;

use std::time::Duration;

use fake_exchange::FakeExchange;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect to the fake stream")
        .0
}

async fn send(ws: &mut Ws, request: Value) {
    ws.send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
}

/// The next text frame as JSON, within 5 s.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}usdt@kline_1m")).collect()
}

#[tokio::test]
async fn subscriptions_are_answered_as_binance_does_and_only_subscribed_streams_flow() {
    let fake = FakeExchange::start_lagging(&["BTCUSDT", "ETHUSDT"], 30).await;
    let mut ws = connect(&format!("{}?streams=btcusdt@kline_1m", fake.ws_url())).await;
    fake.wait_for_connections(1).await;

    // ETHUSDT is not subscribed: only BTCUSDT's frame arrives.
    fake.send_forming("ETHUSDT");
    fake.send_forming("BTCUSDT");
    assert_eq!(next_json(&mut ws).await["stream"], "btcusdt@kline_1m");

    send(
        &mut ws,
        json!({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 7}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 7}));
    fake.send_forming("ETHUSDT");
    assert_eq!(next_json(&mut ws).await["stream"], "ethusdt@kline_1m");

    send(&mut ws, json!({"method": "LIST_SUBSCRIPTIONS", "id": 8})).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"result": ["btcusdt@kline_1m", "ethusdt@kline_1m"], "id": 8})
    );
    send(
        &mut ws,
        json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 9}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 9}));
    fake.send_forming("BTCUSDT");
    fake.send_forming("ETHUSDT");
    assert_eq!(next_json(&mut ws).await["stream"], "ethusdt@kline_1m");

    ws.send(Message::Text("{".into())).await.unwrap();
    let invalid = next_json(&mut ws).await;
    assert_eq!(invalid["error"]["code"], 3, "{invalid}");
    assert_eq!(invalid["id"], Value::Null);

    let seen = &fake.stream_connections()[0];
    assert_eq!(seen.query, "btcusdt@kline_1m");
    assert_eq!(seen.streams, ["ethusdt@kline_1m"]);
    assert_eq!(fake.subscriptions(), [["ethusdt@kline_1m"]]);
    let methods: Vec<&str> = seen.control.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        ["SUBSCRIBE", "LIST_SUBSCRIPTIONS", "UNSUBSCRIBE", ""]
    );
}

#[tokio::test]
async fn a_connection_listens_to_at_most_1024_streams() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let mut ws = connect(&fake.ws_url()).await;
    send(
        &mut ws,
        json!({"method": "SUBSCRIBE", "params": names(1000), "id": 1}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 1}));
    // 25 more would make 1,025: refused whole.
    send(
        &mut ws,
        json!({"method": "SUBSCRIBE", "params": names(1025)[1000..], "id": 2}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"error": {"code": 2, "msg": "Invalid request: too many streams"}, "id": 2})
    );
    send(
        &mut ws,
        json!({"method": "SUBSCRIBE", "params": names(1024)[1000..], "id": 3}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"result": null, "id": 3}));
    assert_eq!(fake.subscriptions()[0].len(), 1024);
}

#[tokio::test]
async fn more_than_ten_messages_in_a_second_close_the_connection() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let mut steady = connect(&fake.ws_url()).await;
    let mut hasty = connect(&fake.ws_url()).await;
    for id in 0..10 {
        let list = json!({"method": "LIST_SUBSCRIPTIONS", "id": id});
        send(&mut hasty, list.clone()).await;
        send(&mut steady, list).await;
    }
    for _ in 0..10 {
        next_json(&mut hasty).await;
    }
    send(
        &mut hasty,
        json!({"method": "LIST_SUBSCRIPTIONS", "id": 10}),
    )
    .await;
    match tokio::time::timeout(Duration::from_secs(5), hasty.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1008);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Ten within a second are within the limit, and five a second after them too.
    for _ in 0..10 {
        next_json(&mut steady).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in 10..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(
            &mut steady,
            json!({"method": "LIST_SUBSCRIPTIONS", "id": id}),
        )
        .await;
        assert_eq!(next_json(&mut steady).await["id"], id);
    }
    let connections = fake.stream_connections();
    assert!(!connections[0].over_rate && connections[1].over_rate);
}

#[tokio::test]
async fn a_handshake_over_8_kib_is_refused() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let refused = |url: String| async move {
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    };
    // 506 streams in the URL: over 8 KiB.
    let long = format!("{}?streams={}", fake.ws_url(), names(506).join("/"));
    assert!(long.len() > 8 * 1024);
    assert_eq!(refused(long).await, 414);
    assert_eq!(fake.refused_handshakes(), [414]);
    assert_eq!(fake.connections(), 0);
    // Ten streams, as the service names in a URL, are well within it.
    let short = format!("{}?streams={}", fake.ws_url(), names(10).join("/"));
    connect(&short).await;
    fake.wait_for_connections(1).await;
    assert_eq!(fake.subscriptions()[0].len(), 10);
}

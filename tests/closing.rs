//! How a websocket connection on `/` ends, as a client sees it: every close, the
//! client's or the server's, is a complete closing handshake (RFC 6455 §5.5.1,
//! §7.1.2): each side sends a Close frame and receives the other's before TCP closes.
//! And a ping is answered at once, whatever else the connection is doing (§5.5.2).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

fn close_frame(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })
}

/// Reads past any messages to the server's Close frame, then to the end of the
/// connection, and returns that frame. tungstenite ends the stream (`None`) only
/// after a clean closing handshake; a TCP close without the server's Close frame
/// is an error (`ResetWithoutClosingHandshake`).
async fn server_close(socket: &mut Socket, what: &str) -> Option<CloseFrame> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let frame = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Err(_) => panic!("{what}: no close frame within 5 s"),
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(err))) => panic!("{what}: the connection ended without a close: {err}"),
            Ok(None) => panic!("{what}: the stream ended without a close frame"),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), socket.next()).await {
        Ok(None) => frame,
        Ok(Some(Err(Error::ConnectionClosed))) => frame,
        other => panic!("{what}: after the close frame, expected the end, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_own_code_on_every_view() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    let cases = [
        ("", close_frame(1000, "")),
        ("", close_frame(1000, "bye")),
        ("", close_frame(4000, "app-defined")),
        ("", close_frame(1001, "")),
        ("", None),
        ("?live=true", close_frame(1000, "")),
        ("?format=candles", close_frame(1000, "")),
        ("?format=candles&interval=1m&live=true", None),
    ];
    for (query, sent) in cases {
        let what = format!("{query:?} closing with {sent:?}");
        // Before and after the snapshot: the reply must not depend on what was sent.
        for read_first in [false, true] {
            let mut socket = connect(&format!("{}{query}", app.ws_url())).await;
            if read_first {
                let first = socket.next().await.unwrap().unwrap();
                assert!(first.is_text(), "{what}: {first:?}");
            }
            let started = Instant::now();
            socket.send(Message::Close(sent.clone())).await.unwrap();
            let answered = server_close(&mut socket, &what).await;
            assert_eq!(answered, sent, "{what}: the server echoes the code");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what}: the handshake took {:?}",
                started.elapsed()
            );
        }
    }
    eventually(5, "every connection's slot is given back", || {
        app.metrics.clients_connected.get() == 0
    })
    .await;
}

#[tokio::test]
async fn a_close_code_not_allowed_on_the_wire_is_answered_with_1002() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    let mut socket = connect(&app.ws_url()).await;
    // 1005 means "no status" and must never be sent (RFC 6455 §7.4.1).
    socket
        .send(Message::Close(close_frame(1005, "")))
        .await
        .unwrap();
    let answered = server_close(&mut socket, "1005").await;
    assert_eq!(answered.map(|f| u16::from(f.code)), Some(1002));
}

#[tokio::test]
async fn a_close_while_a_forming_update_is_held_back_is_answered() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let extra = [("LIVE_INTERVAL_MS", "5000")];
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &extra)).await;
    fake.wait_for_connections(1).await;
    let mut socket = connect(&format!("{}?symbols=BTCUSDT&live=true", app.ws_url())).await;
    fake.send_forming("BTCUSDT");
    let mut texts = 0;
    // The snapshot, then the first forming candle; the next is held for 5 s.
    while texts < 2 {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the snapshot and a forming candle")
            .unwrap()
            .unwrap();
        texts += usize::from(message.is_text());
    }
    fake.send_forming("BTCUSDT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    socket
        .send(Message::Close(close_frame(1000, "")))
        .await
        .unwrap();
    let answered = server_close(&mut socket, "held forming update").await;
    assert_eq!(answered, close_frame(1000, ""));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_close_sent_while_messages_are_still_arriving_is_answered_after_them() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    fake.wait_for_connections(1).await;
    let mut socket = connect(&format!("{}?format=candles", app.ws_url())).await;
    // Not reading while many closes are fanned out: the server is mid-write.
    for _ in 0..20 {
        for symbol in SYMBOLS {
            fake.close_next(symbol);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
        .send(Message::Close(close_frame(1000, "")))
        .await
        .unwrap();
    let answered = server_close(&mut socket, "mid-write").await;
    assert_eq!(answered, close_frame(1000, ""));
}

#[tokio::test]
async fn a_shutdown_close_is_a_complete_handshake() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    let mut sockets = Vec::new();
    for query in ["", "?live=true", "?format=candles"] {
        let mut socket = connect(&format!("{}{query}", app.ws_url())).await;
        assert!(socket.next().await.unwrap().unwrap().is_text());
        sockets.push(socket);
    }
    let stopping = tokio::spawn(app.stop());
    for socket in &mut sockets {
        // The client's reply to the server's close is sent on this read.
        let answered = server_close(socket, "shutdown").await;
        assert_eq!(answered.map(|f| u16::from(f.code)), Some(1001));
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_ping_is_answered_at_once_while_nothing_else_is_sent() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), &[])).await;
    for query in ["", "?live=true", "?format=candles"] {
        let mut socket = connect(&format!("{}{query}", app.ws_url())).await;
        for _ in 0..SYMBOLS.len() {
            assert!(socket.next().await.unwrap().unwrap().is_text());
        }
        for round in 0..3u8 {
            let payload = vec![round; 4];
            socket
                .send(Message::Ping(payload.clone().into()))
                .await
                .unwrap();
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(1), socket.next())
                .await
                .unwrap_or_else(|_| panic!("{query:?}: no pong within 1 s"))
                .unwrap()
                .unwrap();
            assert_eq!(answer, Message::Pong(payload.into()), "{query:?}");
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }
}

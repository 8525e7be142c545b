//! The binary where platforms run it: the database variable the platform gives
//! (`MONGO_URL` and the other aliases of `MONGO_URI`), a disk that does not survive a
//! redeploy, and a load balancer that speaks the PROXY protocol.

mod common;
#[path = "common/raw_http.rs"]
mod raw_http;

use std::time::Duration;

use common::binary::{Running, binary, fake_env};
use common::*;
use futures_util::StreamExt;
use raw_http::read_response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const EPHEMERAL: &str = "will not survive a redeploy";

#[tokio::test]
async fn mongo_url_alone_puts_the_candles_in_mongodb() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let database = unique_database("candlecast_alias");
    let mut env = fake_env(&fake);
    env.push(("MONGO_URL", mongo_test_uri()));
    env.push(("MONGO_DATABASE", database.clone()));
    // Another database's URL beside it, as Railway's Postgres would set it.
    env.push(("DATABASE_URL", "postgres://app:Pg5ecret@pg:5432/app".into()));
    let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = running.wait_for_address().await;
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    client.next_n(5).await;
    let backend = Backend::Mongo {
        uri: mongo_test_uri(),
        database,
    };
    // Stored before the stop, not raced against the shutdown's write grace.
    let stored: Vec<usize> = futures_util::future::join_all(
        SYMBOLS
            .iter()
            .map(|symbol| backend.wait_for_at_least(symbol, 11)),
    )
    .await;

    let (code, output, dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    let used: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("using MongoDB store"))
        .collect();
    assert_eq!(used.len(), 1, "{output}");
    assert!(
        used[0].contains("MONGO_URL"),
        "names the variable: {used:?}"
    );
    let ignored: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("DATABASE_URL") && l.contains("WARN"))
        .collect();
    assert_eq!(ignored.len(), 1, "DATABASE_URL passed over: {output}");
    assert!(!output.contains("Pg5ecret"), "no password: {output}");
    assert!(!output.contains("embedded SQLite"), "{output}");
    assert!(!dir.path().join("data").exists(), "nothing under ./data");
    for (symbol, stored) in SYMBOLS.iter().zip(stored) {
        assert!(stored >= 11, "{symbol}: {stored} in MongoDB\n{output}");
    }
}

#[tokio::test]
async fn on_railway_without_a_volume_the_embedded_store_warns_once() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push(("RAILWAY_ENVIRONMENT", "production".into()));
    let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = running.wait_for_address().await;
    Client::connect(&format!("ws://{address}/"))
        .await
        .next_n(5)
        .await;
    let (code, output, _dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("using the embedded SQLite store"),
        "{output}"
    );
    let warnings: Vec<&str> = output.lines().filter(|l| l.contains(EPHEMERAL)).collect();
    assert_eq!(warnings.len(), 1, "exactly once: {output}");
    assert!(warnings[0].contains("Railway (production)"), "{warnings:?}");
}

#[test]
fn a_bad_proxy_protocol_value_stops_startup_naming_it() {
    for value in ["v3", "yes please"] {
        let dir = tempfile::tempdir().unwrap();
        let output = binary()
            .current_dir(dir.path())
            .env("PROXY_PROTOCOL", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert!(stderr.contains("PROXY_PROTOCOL"), "{stderr}");
    }
}

/// `GET path` after `header` on a new connection: the response, or `None` when the
/// server closes the connection without one.
async fn get_after(address: &str, header: &[u8], path: &str) -> Option<raw_http::RawResponse> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(header).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // The server may have closed already: a failed write is a refusal too.
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    read_response(&mut stream).await
}

/// The first `n` feed messages read over a websocket opened after `header`.
async fn feed_after(address: &str, header: &[u8], n: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(header).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{address}/"), stream)
        .await
        .expect("websocket upgrade after the PROXY header");
    let mut texts = Vec::new();
    while texts.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(text) = message {
            texts.push(text.to_string());
        }
    }
    texts
}

const V1_HEADER: &[u8] = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n";

/// A v2 header: PROXY command, TCP over IPv6, from `[2001:db8::7]:5555`.
fn v2_header() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
    header.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend_from_slice(&5555u16.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    header
}

async fn start_with_proxy_protocol(value: &str) -> (Running, String, FakeExchange) {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push(("PROXY_PROTOCOL", value.into()));
    // The feed's debug lines carry the client's span, with its address.
    env.push(("RUST_LOG", "info,candlecast::http=debug".into()));
    let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = running.wait_for_address().await;
    (running, address, fake)
}

#[tokio::test]
async fn behind_a_v1_load_balancer_the_header_gives_the_client_address() {
    let (running, address, _fake) = start_with_proxy_protocol("v1").await;
    let health = get_after(&address, V1_HEADER, "/health").await.unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(feed_after(&address, V1_HEADER, 5).await.len(), 5);
    running.wait_for_output("peer=\"1.2.3.4:1111\"", 10).await;
    // A header that arrives in two pieces is waited for.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(&V1_HEADER[..12]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest = [&V1_HEADER[12..], b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
    stream.write_all(&rest).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);

    // Straight to the port, without the header: closed, counted.
    assert!(get_after(&address, b"", "/health").await.is_none());
    // A v2 header where v1 is configured: closed too.
    assert!(get_after(&address, &v2_header(), "/health").await.is_none());
    let metrics = get_after(&address, V1_HEADER, "/metrics").await.unwrap();
    assert!(
        metrics
            .body
            .contains("proxy_headers_refused_total{reason=\"missing\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("proxy_headers_refused_total{reason=\"version\"} 1"),
        "{}",
        metrics.body
    );
    let (code, output, _dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("sent no PROXY protocol header"), "{output}");
}

#[tokio::test]
async fn behind_a_v2_load_balancer_the_binary_header_gives_the_client_address() {
    let (running, address, _fake) = start_with_proxy_protocol("any").await;
    let health = get_after(&address, &v2_header(), "/health").await.unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    // Either version under `any`.
    let health = get_after(&address, V1_HEADER, "/health").await.unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(feed_after(&address, &v2_header(), 5).await.len(), 5);
    running
        .wait_for_output("peer=\"[2001:db8::7]:5555\"", 10)
        .await;
    let (code, output, _dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
}

#[tokio::test]
async fn with_proxy_protocol_off_a_header_is_refused_and_said_once() {
    let (running, address, _fake) = start_with_proxy_protocol("off").await;
    for _ in 0..3 {
        assert!(get_after(&address, V1_HEADER, "/health").await.is_none());
    }
    assert!(get_after(&address, &v2_header(), "/health").await.is_none());
    // Plain clients are served as ever.
    let health = get_after(&address, b"", "/health").await.unwrap();
    assert_eq!(health.status, 200);
    let metrics = get_after(&address, b"", "/metrics").await.unwrap();
    assert!(
        metrics
            .body
            .contains("proxy_headers_refused_total{reason=\"unexpected\"} 4"),
        "{}",
        metrics.body
    );
    let (code, output, _dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    let said: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("PROXY protocol header"))
        .collect();
    assert_eq!(said.len(), 1, "once for four connections: {output}");
    assert!(said[0].contains("set PROXY_PROTOCOL="), "{said:?}");
}

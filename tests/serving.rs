//! The HTTP side of the service as browsers, proxies and hand-written clients meet
//! it: broken websocket handshakes, cross-origin reads, and the bounds on
//! connections before they upgrade.

mod common;
#[path = "common/raw_http.rs"]
mod raw_http;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use candlecast::http::{ProxyProtocol, ServeLimits};
use candlecast::metrics::{Metrics, ReasonLabel};
use common::*;
use raw_http::{closed_within, read_response, send};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

async fn app_with(extra: &[(&str, &str)]) -> (TestApp, FakeExchange) {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let app = TestApp::spawn(config_for(&fake, &Backend::sqlite(), extra)).await;
    (app, fake)
}

fn refused(metrics: &Metrics, reason: &'static str) -> u64 {
    metrics
        .serving
        .upgrades_refused
        .get_or_create(&ReasonLabel { reason })
        .get()
}

#[tokio::test]
async fn a_broken_handshake_is_told_what_it_lacks_and_a_browser_still_gets_the_page() {
    let (app, _fake) = app_with(&[]).await;
    let get = |headers: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");

    // A proxy that drops `Connection: upgrade` (half-configured nginx).
    let response = send(
        app.addr,
        &get(&format!(
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}"
        )),
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(
        response.body.contains("Connection: upgrade"),
        "{}",
        response.body
    );
    assert_eq!(refused(&app.metrics, "no_connection_upgrade"), 1);

    // No version, no key: both named.
    let response = send(
        app.addr,
        &get("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
    )
    .await;
    assert_eq!(response.status, 400);
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(
        body["missing"],
        serde_json::json!(["Sec-WebSocket-Key", "Sec-WebSocket-Version: 13"])
    );
    assert_eq!(refused(&app.metrics, "no_key"), 1);
    assert_eq!(refused(&app.metrics, "no_version"), 1);

    // A version this server does not speak: 426 saying which one it does.
    let response = send(
        app.addr,
        &get(&format!("Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 8\r\n{KEY}")),
    )
    .await;
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(refused(&app.metrics, "unsupported_version"), 1);

    // A plain GET is a browser: the page, byte for byte.
    let response = send(app.addr, &get("")).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let page = std::fs::read_to_string(repo_root().join("web/index.html")).unwrap();
    assert_eq!(response.body, page);

    // And a valid handshake still upgrades.
    let response = send(
        app.addr,
        &get(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}"
        )),
    )
    .await;
    assert_eq!(response.status, 101, "{response:?}");
    // RFC 6455 §1.3's own example key and answer.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(response.header("upgrade"), Some("websocket"));

    // Right headers on a connection that cannot switch protocols: 400 saying why.
    let response = send(
        app.addr,
        &format!("GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
    )
    .await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("HTTP/1.1"), "{}", response.body);
    assert_eq!(refused(&app.metrics, "not_upgradable"), 1);
    let mut client = app.client().await;
    assert_eq!(client.next_json().await["coin"], "BTCUSDT");
}

#[tokio::test]
async fn the_api_answers_cross_origin_reads_and_preflights() {
    let (app, _fake) = app_with(&[]).await;
    for path in ["/health", "/ready", "/metrics", "/api/v1/candles/BTCUSDT"] {
        let response = send(
            app.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://charts.example.com\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(
            response.header("access-control-allow-origin"),
            Some("*"),
            "{path}: {response:?}"
        );
    }
    let preflight = "OPTIONS /api/v1/candles/BTCUSDT HTTP/1.1\r\nHost: x\r\nOrigin: https://charts.example.com\r\n\
                     Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-chart-app\r\nConnection: close\r\n\r\n";
    let response = send(app.addr, preflight).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(
        response
            .header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );

    // A list lets its origins in and no one else.
    let (listed, _fake) = app_with(&[(
        "CORS_ALLOW_ORIGINS",
        "https://charts.example.com,http://localhost:3000",
    )])
    .await;
    let from = |origin: &str| {
        format!("GET /health HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n")
    };
    let response = send(listed.addr, &from("https://charts.example.com")).await;
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("https://charts.example.com")
    );
    let response = send(listed.addr, &from("https://evil.example")).await;
    assert_eq!(response.header("access-control-allow-origin"), None);

    // Empty turns CORS off: no headers, and OPTIONS is not a route.
    let (off, _fake) = app_with(&[("CORS_ALLOW_ORIGINS", "")]).await;
    let response = send(off.addr, &from("https://charts.example.com")).await;
    assert_eq!(response.header("access-control-allow-origin"), None);
    assert_eq!(send(off.addr, preflight).await.status, 405);
}

/// Runs tests/browser/cors.mjs: a page on `origin` reading `app`'s API.
async fn read_from_another_origin(app: &TestApp, origin: &str) -> Value {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./scripts/test"
    );
    let api = format!("http://{}", app.addr);
    let origin = origin.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("node")
            .current_dir(&browser_dir)
            .args(["cors.mjs", &api, &origin])
            .stderr(Stdio::inherit())
            .output()
            .expect("node is needed for the browser test");
        assert!(output.status.success(), "the browser driver failed");
        let line = BufReader::new(&output.stdout[..])
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("RESULT ").map(str::to_owned))
            .expect("a RESULT line");
        serde_json::from_str(&line).unwrap()
    })
    .await
    .unwrap()
}

/// Another site on this machine: a blank page on a port of its own (an origin of its
/// own), served from loopback as the API is, so Chromium's local-network rules do
/// not get in the way.
async fn another_site() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let page = Router::new().route(
        "/",
        get(|| async { axum::response::Html("<!doctype html><title>a chart app</title>") }),
    );
    tokio::spawn(async move { axum::serve(listener, page).await });
    origin
}

#[tokio::test]
async fn a_page_on_another_origin_reads_the_api_in_chromium() {
    let (app, _fake) = app_with(&[]).await;
    let origin = another_site().await;
    let seen = read_from_another_origin(&app, &origin).await;
    assert_eq!(seen["origin"], origin, "the page runs on its own origin");
    for read in ["history", "health", "metrics", "preflighted"] {
        assert_eq!(seen[read]["status"], 200, "{read}: {seen}");
    }
    assert!(seen["ready"]["status"].is_u64(), "{seen}");

    let (listed, _fake) = app_with(&[("CORS_ALLOW_ORIGINS", "http://127.0.0.1:8")]).await;
    let seen = read_from_another_origin(&listed, &origin).await;
    for read in ["history", "health", "preflighted"] {
        assert!(
            seen[read]["error"].is_string(),
            "{read} should be refused: {seen}"
        );
    }
}

/// The HTTP server alone, with short bounds, serving `ok` on `/`.
async fn small_server(limits: ServeLimits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "ok" }));
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(candlecast::http::serve(
        listener,
        router,
        limits,
        metrics,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

fn short_limits(max_connections: usize) -> ServeLimits {
    ServeLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        max_header_bytes: 16 * 1024,
        max_connections,
        drain_timeout: Duration::from_secs(1),
        proxy_protocol: ProxyProtocol::Off,
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn idle_keep_alive_gets_its_own_timeout_and_a_started_request_the_header_timeout() {
    let (addr, _shutdown) = small_server(short_limits(16)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
    // Idle for longer than the header timeout: still open, and serves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
    // Then closed once idle for the idle timeout.
    let idle = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    let waited = idle.elapsed();
    assert!(
        waited > Duration::from_millis(2500),
        "closed after {waited:?}"
    );

    // A later request that starts but never finishes has the header timeout from its
    // first byte, not the idle one.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(2000),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_at_once() {
    let (addr, shutdown) = small_server(short_limits(4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert_eq!(read_response(&mut stream).await.unwrap().status, 200);
        held.push(stream);
    }
    let response = send(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("1"));
    // One closes: a new connection is served again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        send(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.status,
        200
    );
    shutdown.cancel();
}

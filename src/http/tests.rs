//! Handler tests through the router with `tower::ServiceExt::oneshot`: no socket,
//! a real SQLite store in a temporary directory.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::candle::Interval;
use crate::health::{StoreHealth, UpstreamHealth};
use crate::hub::{Hub, WindowOptions};
use crate::read::CandleReader;
use crate::store::{SqliteStore, Unacknowledged};

fn state(dir: &std::path::Path) -> AppState {
    let symbols = ["BTCUSDT".to_owned(), "ETHUSDT".to_owned()];
    let hub = Hub::new(
        &symbols,
        &[
            Interval::parse("1m").unwrap(),
            Interval::parse("5m").unwrap(),
        ],
        &WindowOptions {
            history_len: 10,
            history_max: 100,
            time_zone: chrono_tz::Tz::UTC,
            seeded: false,
        },
    );
    let store = Arc::new(SqliteStore::open(dir).unwrap());
    AppState::new(Parts {
        mirror: None,
        reader: CandleReader::new(hub.clone(), Unacknowledged::default(), store),
        hub,
        interval: Interval::parse("1m").unwrap(),
        feed: FeedOptions {
            send_timeout: Duration::from_secs(10),
            ping_every: Duration::from_secs(30),
            max_connections: 10,
            live_interval: Duration::from_millis(250),
        },
        readiness: Readiness {
            ingest: true,
            upstream_stale_after: Duration::from_secs(30),
        },
        metrics: Arc::new(Metrics::new()),
        health: Arc::new(UpstreamHealth::default()),
        store_health: Arc::new(StoreHealth::default()),
        shutdown: CancellationToken::new(),
        clock: crate::clock::Clock::system(),
    })
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Option<String>, Value) {
    let response = router(state.clone(), &CorsOrigins::Off)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        retry_after,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bad_parameters_are_named_with_the_same_words_as_ever() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let cases = [
        (
            "/api/v1/candles/BTCUSDT?limit=0",
            json!({"error": "limit must be a whole number from 1 to 1000, got \"0\"", "parameter": "limit"}),
        ),
        (
            "/api/v1/candles/BTCUSDT?bogus=1",
            json!({"error": "unknown parameter \"bogus\"; expected one of limit, before, from, to, interval, indicators, format", "parameter": "bogus"}),
        ),
        (
            "/api/v1/candles/BTCUSDT?limit=1&limit=2",
            json!({"error": "limit is given more than once", "parameter": "limit"}),
        ),
        (
            "/api/v1/candles/BTCUSDT?before=-1",
            json!({"error": "before must be a whole number from 0 to 9223372036854775807, got \"-1\"", "parameter": "before"}),
        ),
    ];
    for (uri, expected) in cases {
        let (status, _, body) = get(&state, uri).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, expected), "{uri}");
    }
}

#[tokio::test]
async fn an_unknown_symbol_is_404_before_any_parameter_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, body) = get(&state(dir.path()), "/api/v1/candles/dogeusdt?limit=0").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"error": "unknown symbol DOGEUSDT", "symbols": ["BTCUSDT", "ETHUSDT"]})
    );
}

#[tokio::test]
async fn history_reads_beyond_the_bound_get_503_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let held = state.parts.reader.occupy_store_reads();
    let (status, retry_after, body) = get(&state, "/api/v1/candles/BTCUSDT").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    drop(held);
    let (status, _, body) = get(&state, "/api/v1/candles/BTCUSDT").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["candles"], json!([]));
}

#[tokio::test]
async fn readiness_says_what_is_wrong_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    state.parts.store_health.set_reachable(false);
    state
        .parts
        .health
        .rest_banned_for(418, Duration::from_secs(120));
    state
        .parts
        .health
        .refuse_symbol("ETHUSDT", "GET … answered 400".to_owned());
    let (status, _, body) = get(&state, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"store: not reachable"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("exchange: REST requests banned (HTTP 418) until ")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("ETHUSDT")), "{reasons:?}");
    assert!(reasons.contains(&"upstream: no data received from the exchange yet"));
}

#[tokio::test]
async fn every_symbol_has_a_newest_candle_age_even_without_candles() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let response = router(state, &CorsOrigins::Off)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let series = format!("candlecast_newest_candle_age_seconds{{symbol=\"{symbol}\"}} NaN");
        assert!(text.contains(&series), "{text}");
    }
}

/// Log lines written while `run` runs, as the service writes them (no colour).
async fn logged<F: Future>(run: F) -> (F::Output, String) {
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread test runtime: everything `run` logs is on this thread.
    let _default = tracing::subscriber::set_default(subscriber);
    let output = run.await;
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    (output, text)
}

fn errors(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains("ERROR")).collect()
}

#[tokio::test]
async fn refusals_are_counted_and_never_logged_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path());
    let held = state.parts.reader.occupy_store_reads();
    let ((), log) = logged(async {
        for _ in 0..10 {
            let (status, _, _) = get(&state, "/api/v1/candles/BTCUSDT").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let (status, _, _) = get(&state, "/ready").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
    })
    .await;
    drop(held);
    assert_eq!(errors(&log), Vec::<&str>::new(), "{log}");
    let refused = |reason| {
        let label = crate::metrics::ReasonLabel { reason };
        state
            .parts
            .metrics
            .serving
            .http_refused
            .get_or_create(&label)
            .get()
    };
    assert_eq!((refused("too_many_reads"), refused("not_ready")), (10, 10));
}

async fn boom() -> &'static str {
    panic!("the candles are on fire")
}

#[tokio::test]
async fn a_handler_that_panics_answers_500_and_is_logged_once_at_error() {
    let metrics = Arc::new(Metrics::new());
    let app = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(request_log::catch_panics())
        .layer(request_log::request_log(Arc::clone(&metrics)));
    let (response, log) =
        logged(app.oneshot(Request::get("/boom").body(Body::empty()).unwrap())).await;
    assert_eq!(
        response.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let errors = errors(&log);
    assert_eq!(errors.len(), 1, "{log}");
    for part in ["path=/boom", "status=500", "the candles are on fire"] {
        assert!(errors[0].contains(part), "{part} in {}", errors[0]);
    }
}

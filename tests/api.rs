//! What operators and browser users reach over HTTP: health, readiness, metrics, the
//! websocket's options, the history API, the page, and JSON logs.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use common::binary::{Running, fake_env};
use common::mongo_server::MongoServer;
use common::*;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", app.addr))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let (status, body) = get(app, path).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path} answered non-JSON: {body}")),
    )
}

/// Lagging fake with a seeded store: a history no clock tick changes.
async fn steady_app(backend: &Backend, extra: &[(&str, &str)]) -> (FakeExchange, TestApp) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(backend, &fake.history(symbol)).await;
    }
    let app = TestApp::spawn(config_for(&fake, backend, extra)).await;
    (fake, app)
}

#[tokio::test]
async fn readiness_follows_the_exchange_and_the_store() {
    let mut database = MongoServer::start().await;
    let backend = Backend::Mongo {
        uri: database.uri(),
        database: unique_database("candlecast_ready"),
    };
    let (fake, app) = steady_app(&backend, &[("UPSTREAM_STALE_SECS", "1")]).await;
    let ticks = fake.tick(Duration::from_millis(100));
    assert_eq!(get(&app, "/health").await.0, 200);
    let mut ready = (0, Value::Null);
    for _ in 0..100 {
        ready = get_json(&app, "/ready").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, (200, json!({"status": "ready"})));

    // The exchange goes quiet: not ready, and the answer says why.
    ticks.abort();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = get_json(&app, "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not ready");
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("upstream: no data from the exchange"),
        "{body}"
    );
    assert_eq!(get(&app, "/health").await.0, 200, "alive all the same");

    // Data again, but the database is down. Readiness answers from a ping made in
    // the background (never waiting on the database), so it says so within seconds.
    let _ticks = fake.tick(Duration::from_millis(100));
    database.stop().await;
    let mut body = Value::Null;
    for _ in 0..100 {
        let (status, answer) = get_json(&app, "/ready").await;
        body = answer;
        if status == 503 && body["reasons"].to_string().contains("store: ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"store: not reachable"), "{body}");
    app.stop().await.unwrap();
}

/// Reads one sample (`name{labels} value`) from a scrape.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let backend = Backend::sqlite();
    let (fake, app) = steady_app(&backend, &[("MAX_CONNECTIONS", "2")]).await;
    let mut client = app.client().await;
    client.next_n(5).await;
    let _other = app.client().await;
    assert_eq!(refused_upgrade(&app, "").await.0, 503);
    fake.wait_for_connections(1).await;
    fake.send_raw("not a kline");
    let candle = fake.close_next("BTCUSDT");
    assert_eq!(
        client.next_json().await["values"][0].as_f64(),
        Some(candle.close)
    );
    fake.disconnect_all();
    fake.wait_for_connections(2).await;
    eventually(10, "the closed candle is stored", || {
        app.metrics.stored.get() >= 1
    })
    .await;

    let response = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let scrape = response.text().await.unwrap();
    assert_eq!(sample(&scrape, "candlecast_clients_connected"), 2.0);
    assert!(
        sample(&scrape, "candlecast_messages_sent_total") >= 11.0,
        "5 + 5 snapshots and one update"
    );
    assert!(sample(&scrape, "candlecast_bytes_sent_total") > 1000.0);
    assert_eq!(
        sample(&scrape, "candlecast_connections_rejected_total"),
        1.0
    );
    assert_eq!(
        sample(&scrape, "candlecast_upstream_parse_errors_total"),
        1.0
    );
    assert_eq!(
        sample(&scrape, "candlecast_upstream_closed_candles_total"),
        1.0
    );
    assert!(sample(&scrape, "candlecast_upstream_frames_total") >= 2.0);
    assert!(
        sample(
            &scrape,
            r#"candlecast_upstream_reconnects_total{cause="eof"}"#
        ) >= 1.0
    );
    assert_eq!(sample(&scrape, "candlecast_upstream_connected"), 1.0);
    assert!(sample(&scrape, "candlecast_store_written_candles_total") >= 1.0);
    assert_eq!(sample(&scrape, "candlecast_store_errors_total"), 0.0);
    assert_eq!(sample(&scrape, "candlecast_store_pending_candles"), 0.0);
    assert!(sample(&scrape, "candlecast_store_write_seconds_count") >= 1.0);
    assert!(scrape.contains("candlecast_backfilled_candles_total"));
    assert_eq!(sample(&scrape, "candlecast_slow_clients_closed_total"), 0.0);
    // The fake lags 30 minutes; BTC's newest candle is the one just closed (later).
    let btc_age = sample(
        &scrape,
        r#"candlecast_newest_candle_age_seconds{symbol="BTCUSDT"}"#,
    );
    let eth_age = sample(
        &scrape,
        r#"candlecast_newest_candle_age_seconds{symbol="ETHUSDT"}"#,
    );
    assert!(
        eth_age > 29.0 * 60.0 && btc_age < eth_age,
        "ages: BTC {btc_age}, ETH {eth_age}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_plain_feed_keeps_the_documented_format_byte_for_byte() {
    let backend = Backend::sqlite();
    let (_fake, app) = steady_app(&backend, &[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    use futures_util::StreamExt;
    let text = match socket.next().await.unwrap().unwrap() {
        tokio_tungstenite::tungstenite::Message::Text(text) => text.to_string(),
        other => panic!("{other:?}"),
    };
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let list = |key: &str| serde_json::to_string(&parsed[key]).unwrap();
    let expected = format!(
        r#"{{"coin":"BTCUSDT","values":{},"operations":{},"time":{}}}"#,
        list("values"),
        list("operations"),
        list("time")
    );
    assert_eq!(
        text, expected,
        "key order and spacing are part of the contract"
    );
    assert_eq!(parsed["values"].as_array().unwrap().len(), 10);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_options_choose_coins_length_and_format() {
    let backend = Backend::sqlite();
    let (fake, app) = steady_app(&backend, &[]).await;
    let history = |symbol: &str| fake.history(symbol);

    let mut chosen = Client::connect(&format!(
        "ws://{}/?symbols=ethusdt,BTCUSDT&limit=3",
        app.addr
    ))
    .await;
    let first = chosen.next_n(2).await;
    assert_eq!(
        first[0],
        expected_message("ETHUSDT", &history("ETHUSDT"), 3, chrono_tz::UTC)
    );
    assert_eq!(
        first[1],
        expected_message("BTCUSDT", &history("BTCUSDT"), 3, chrono_tz::UTC)
    );

    let mut candles = Client::connect(&format!(
        "ws://{}/?format=candles&symbols=solusdt&limit=50",
        app.addr
    ))
    .await;
    let message = candles.next_json().await;
    let sol = history("SOLUSDT");
    let newest_first: Vec<&Candle> = sol.iter().rev().take(50).collect();
    let expected: Vec<Value> = newest_first
        .iter()
        .map(|c| {
            json!({"open_time": c.open_time, "close_time": c.close_time, "open": c.open, "high": c.high,
                   "low": c.low, "close": c.close, "volume": c.volume, "trades": c.trades})
        })
        .collect();
    assert_eq!(
        message,
        json!({"coin": "SOLUSDT", "interval": "1m", "candles": expected})
    );

    // Updates reach only the clients that chose the coin, in their format.
    fake.wait_for_connections(1).await;
    fake.close_next("XRPUSDT");
    let sol_close = fake.close_next("SOLUSDT");
    let btc_close = fake.close_next("BTCUSDT");
    assert_eq!(
        chosen.next_json().await,
        expected_message("BTCUSDT", &history("BTCUSDT"), 3, chrono_tz::UTC)
    );
    let update = candles.next_json().await;
    assert_eq!(
        update["candles"][0]["close"].as_f64(),
        Some(sol_close.close)
    );
    assert_eq!(update["candles"].as_array().unwrap().len(), 50);
    let _ = btc_close;

    for (query, parameter) in [
        ("?symbols=DOGEUSDT", "symbols"),
        ("?symbols=", "symbols"),
        ("?symbols=btcusdt,BTCUSDT", "symbols"),
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?format=xml", "format"),
        ("?colour=blue", "colour"),
        ("?limit=5&limit=6", "limit"),
    ] {
        let (status, body) = refused_upgrade(&app, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Refused upgrades take no connection slot.
    assert_eq!(app.metrics.clients_connected.get(), 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_history_api_pages_stored_candles_newest_first() {
    let backend = Backend::mongo();
    let (fake, app) = steady_app(&backend, &[]).await;
    let stored = fake.history("ETHUSDT");

    let (status, body) = get_json(&app, "/api/v1/candles/ethusdt?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(body["symbol"], "ETHUSDT");
    assert_eq!(body["interval"], "1m");
    let page: Vec<i64> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect();
    let newest: Vec<i64> = stored.iter().rev().take(5).map(|c| c.open_time).collect();
    assert_eq!(page, newest);
    let first = &body["candles"][0];
    let c = stored.last().unwrap();
    assert_eq!(
        first,
        &json!({"open_time": c.open_time, "close_time": c.close_time, "open": c.open, "high": c.high, "low": c.low,
                "close": c.close, "volume": c.volume, "quote_volume": c.quote_volume, "taker_buy_volume": c.taker_buy_volume,
                "taker_buy_quote_volume": c.taker_buy_quote_volume, "trades": c.trades})
    );

    // The next page starts before the oldest candle of this one.
    let before = page.last().unwrap();
    let (_, next) = get_json(
        &app,
        &format!("/api/v1/candles/ETHUSDT?limit=5&before={before}"),
    )
    .await;
    let next: Vec<i64> = next["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = stored
        .iter()
        .rev()
        .skip(5)
        .take(5)
        .map(|c| c.open_time)
        .collect();
    assert_eq!(next, expected);

    let (_, all) = get_json(&app, "/api/v1/candles/ETHUSDT").await;
    assert_eq!(
        all["candles"].as_array().unwrap().len(),
        100,
        "default limit"
    );
    let (_, none) = get_json(&app, "/api/v1/candles/ETHUSDT?before=0").await;
    assert_eq!(none["candles"], json!([]));

    let (status, body) = get_json(&app, "/api/v1/candles/DOGEUSDT").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("DOGEUSDT"));
    for (query, parameter) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?before=yesterday", "before"),
        ("?sort=asc", "sort"),
    ] {
        let (status, body) = get_json(&app, &format!("/api/v1/candles/ETHUSDT{query}")).await;
        assert_eq!(
            (status, body["parameter"].as_str()),
            (400, Some(parameter)),
            "{query}: {body}"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_browser_gets_the_page_and_its_chart_library_from_the_binary() {
    let backend = Backend::sqlite();
    let (_fake, app) = steady_app(&backend, &[]).await;
    let page = reqwest::get(format!("http://{}/", app.addr)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/lightweight-charts.standalone.production.js"));
    assert!(!html.contains("unpkg") && !html.contains("cdn"), "no CDN");
    let script = reqwest::get(format!(
        "http://{}/assets/lightweight-charts.standalone.production.js",
        app.addr
    ))
    .await
    .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("TradingView Lightweight Charts")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_effective_configuration() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push(("LOG_FORMAT", "json".into()));
    env.push((
        "MONGO_URI",
        "mongodb://reader:pa55word@127.0.0.1:1/?serverSelectionTimeoutMS=300".into(),
    ));
    let running = Running::start(tempfile::tempdir().unwrap(), &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let output = loop {
        let output = running.output();
        if output.contains("MongoDB is not reachable") || std::time::Instant::now() > deadline {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!output.contains("pa55word"), "{output}");
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let startup = lines
        .iter()
        .find(|l| l["fields"]["message"] == "starting candlecast")
        .expect("a startup line");
    let config = startup["fields"]["config"].as_str().unwrap();
    assert!(
        config.contains("MONGO_URI=mongodb://reader:***@127.0.0.1:1/"),
        "{config}"
    );
    assert!(config.contains("SYMBOLS=BTCUSDT,BNBUSDT,ETHUSDT,SOLUSDT,XRPUSDT"));
    assert!(config.contains("LOG_FORMAT=json"));
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
}

//! Longer intervals built from the one-minute stream, against the candles the fake
//! exchange closed: bucket values and edges, the first partial bucket, late minutes,
//! the history API, `/api/v1/info` and every 400, on MongoDB and SQLite.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use common::*;
use serde_json::{Value, json};

/// The whole buckets of `length` ms in `minutes` (oldest first), built here
/// independently of the service, as `candles`-format entries, oldest first.
fn buckets(minutes: &[Candle], length: i64) -> Vec<Value> {
    let per_bucket = (length / MINUTE) as usize;
    let mut out = Vec::new();
    let mut index = 0;
    while index < minutes.len() {
        let open = minutes[index].open_time - minutes[index].open_time.rem_euclid(length);
        let members: Vec<&Candle> = minutes[index..]
            .iter()
            .take_while(|c| c.open_time < open + length)
            .collect();
        index += members.len();
        if members.len() != per_bucket {
            continue;
        }
        let (first, last) = (members[0], members[members.len() - 1]);
        out.push(json!({
            "open_time": open,
            "close_time": open + length - 1,
            "open": first.open,
            "high": members.iter().map(|c| c.high).fold(f64::MIN, f64::max),
            "low": members.iter().map(|c| c.low).fold(f64::MAX, f64::min),
            "close": last.close,
            "volume": members.iter().map(|c| c.volume).sum::<f64>(),
            "trades": members.iter().map(|c| c.trades).sum::<i64>(),
        }));
    }
    out
}

/// `candles` as the service sends them (newest first), compared with `expected`
/// (oldest first) field by field, sums within 1e-9 relative.
fn assert_buckets(candles: &Value, expected: &[Value], what: &str) {
    let candles: Vec<&Value> = candles
        .as_array()
        .expect("a candles array")
        .iter()
        .rev()
        .collect();
    assert_eq!(candles.len(), expected.len(), "{what}: how many buckets");
    for (got, want) in candles.iter().zip(expected) {
        for field in ["open_time", "close_time", "trades"] {
            assert_eq!(got[field], want[field], "{what}: {field} of {want}");
        }
        for field in ["open", "high", "low", "close", "volume"] {
            let (g, w) = (got[field].as_f64().unwrap(), want[field].as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-9 * w.abs(),
                "{what}: {field} {g} != {w}"
            );
        }
    }
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", app.addr))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A lagging fake (its history stays put until the test closes candles) with the
/// store seeded, served at 1m, 5m and 15m with 20 candles per window.
async fn steady(backend: &Backend) -> (FakeExchange, TestApp) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        backend,
        &[("INTERVALS", "5m,15m"), ("HISTORY_MAX", "20")],
    ))
    .await;
    (fake, app)
}

async fn buckets_match_what_the_fake_closed(backend: Backend) {
    let (fake, app) = steady(&backend).await;
    let (_, info) = get_json(&app, "/api/v1/info").await;
    assert_eq!(info["intervals"], json!(["1m", "5m", "15m"]));
    assert_eq!(info["base_interval"], "1m");

    let url = format!(
        "{}?format=candles&interval=5m&limit=20&symbols=BTCUSDT",
        app.ws_url()
    );
    let mut five = Client::connect(&url).await;
    let first = five.next_json().await;
    assert_eq!(first["coin"], "BTCUSDT");
    assert_eq!(first["interval"], "5m");
    let expected = buckets(&fake.history("BTCUSDT"), 5 * MINUTE);
    assert_buckets(
        &first["candles"],
        &expected[expected.len() - 20..],
        "first 5m window",
    );
    let mut compact =
        Client::connect(&format!("{}?interval=15m&symbols=BTCUSDT", app.ws_url())).await;
    let first_compact = compact.next_json().await;
    let fifteen = buckets(&fake.history("BTCUSDT"), 15 * MINUTE);
    let newest = fifteen.last().unwrap();
    assert_eq!(
        first_compact["values"][0].as_f64(),
        newest["close"].as_f64()
    );
    let closed_at = newest["close_time"].as_i64().unwrap() + 1;
    let label = chrono::DateTime::from_timestamp_millis(closed_at)
        .unwrap()
        .format("%H:%M")
        .to_string();
    assert_eq!(first_compact["time"][0], label);

    // Close minutes one by one: the 5m window changes exactly when a bucket's last
    // minute closes, with the bucket the fake's minutes make.
    fake.wait_for_connections(1).await;
    let mut published = 0;
    for _ in 0..7 {
        let minute = fake.close_next("BTCUSDT");
        let completes = (minute.open_time + MINUTE) % (5 * MINUTE) == 0;
        if completes {
            let message = five.next_json().await;
            let expected = buckets(&fake.history("BTCUSDT"), 5 * MINUTE);
            assert_buckets(
                &message["candles"],
                &expected[expected.len() - 20..],
                "after a close",
            );
            assert_eq!(
                message["candles"][0]["open_time"],
                minute.open_time + MINUTE - 5 * MINUTE
            );
            published += 1;
        } else {
            let quiet = tokio::time::timeout(Duration::from_millis(300), five.next_json()).await;
            assert!(
                quiet.is_err(),
                "a 5m message before its bucket closed: {quiet:?}"
            );
        }
    }
    assert!(published >= 1);

    // The history API builds the same buckets from the store, pages by `before`.
    let expected = buckets(
        &backend
            .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
            .await,
        5 * MINUTE,
    );
    let (status, page) = get_json(&app, "/api/v1/candles/BTCUSDT?interval=5m&limit=6").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["interval"], "5m");
    assert_buckets(
        &page["candles"],
        &expected[expected.len() - 6..],
        "history API",
    );
    let before = page["candles"][5]["open_time"].as_i64().unwrap();
    let (_, older) = get_json(
        &app,
        &format!("/api/v1/candles/BTCUSDT?interval=5m&limit=3&before={before}"),
    )
    .await;
    assert_buckets(
        &older["candles"],
        &expected[expected.len() - 9..expected.len() - 6],
        "older page",
    );
    assert!(page["candles"][0]["quote_volume"].as_f64().is_some());
    // A `before` past any date a database keeps is simply "up to the newest".
    let (status, far) = get_json(
        &app,
        "/api/v1/candles/BTCUSDT?limit=1&before=9223372036854775807",
    )
    .await;
    assert_eq!(status, 200, "{far}");
    assert_eq!(
        far["candles"][0]["open_time"],
        fake.history("BTCUSDT").last().unwrap().open_time
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn buckets_match_what_the_fake_closed_on_mongodb() {
    buckets_match_what_the_fake_closed(Backend::mongo()).await;
}

#[tokio::test]
async fn buckets_match_what_the_fake_closed_on_sqlite() {
    buckets_match_what_the_fake_closed(Backend::sqlite()).await;
}

async fn a_partial_first_bucket_is_left_out(backend: Backend) {
    // Two hours of history that do not start on an hour: the first hour is partial.
    let fake = FakeExchange::start_sized(&SYMBOLS, 150).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INTERVALS", "1m,1h"), ("HISTORY_MAX", "5")],
    ))
    .await;
    let history = fake.history("ETHUSDT");
    let first_minute = history[0].open_time;
    let expected = buckets(&history, 60 * MINUTE);
    // The deep history arrives in the background: wait until every whole hour is in.
    let url = format!(
        "{}?format=candles&interval=1h&symbols=ETHUSDT",
        app.ws_url()
    );
    let mut hours = Value::Null;
    for _ in 0..100 {
        hours = Client::connect(&url).await.next_json().await;
        if hours["candles"].as_array().unwrap().len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = hours["candles"].as_array().unwrap();
    assert!(
        held.iter()
            .all(|h| h["open_time"].as_i64().unwrap() >= first_minute),
        "a bucket older than the first minute: {hours}"
    );
    let whole: Vec<Value> = expected
        .iter()
        .rev()
        .take(held.len())
        .rev()
        .cloned()
        .collect();
    assert_buckets(&hours["candles"], &whole, "hours");
    for hour in held {
        assert_eq!(
            hour["open_time"].as_i64().unwrap() % (60 * MINUTE),
            0,
            "hours open on the hour"
        );
    }
    app.stop().await.unwrap();
}

/// A minute the stream skipped (no frame) is fetched by REST: its 5m bucket is
/// published only then, whole, with that minute in it.
async fn a_late_minute_completes_its_bucket(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("INTERVALS", "5m")])).await;
    let mut five = Client::connect(&format!(
        "{}?format=candles&interval=5m&symbols=SOLUSDT",
        app.ws_url()
    ))
    .await;
    five.next_json().await;
    fake.wait_for_connections(1).await;
    // Close up to the end of a bucket, skipping a frame in the middle.
    let mut skipped = None;
    loop {
        let next_open = fake.history("SOLUSDT").last().unwrap().open_time + MINUTE;
        let last_of_bucket = (next_open + MINUTE) % (5 * MINUTE) == 0;
        if skipped.is_none() && !last_of_bucket {
            skipped = Some(fake.close_next_silently("SOLUSDT"));
            continue;
        }
        fake.close_next("SOLUSDT");
        if last_of_bucket && skipped.is_some() {
            break;
        }
    }
    let skipped = skipped.unwrap();
    let bucket_open = skipped.open_time - skipped.open_time.rem_euclid(5 * MINUTE);
    let message = loop {
        let message = five.next_json().await;
        if message["candles"][0]["open_time"] == bucket_open {
            break message;
        }
    };
    let bucket = &message["candles"][0];
    let expected = buckets(&fake.history("SOLUSDT"), 5 * MINUTE);
    assert_buckets(
        &json!([bucket]),
        &expected[expected.len() - 1..],
        "the bucket with a late minute",
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_partial_first_bucket_is_left_out_on_mongodb() {
    a_partial_first_bucket_is_left_out(Backend::mongo()).await;
}

#[tokio::test]
async fn a_partial_first_bucket_is_left_out_on_sqlite() {
    a_partial_first_bucket_is_left_out(Backend::sqlite()).await;
}

#[tokio::test]
async fn a_late_minute_completes_its_bucket_on_mongodb() {
    a_late_minute_completes_its_bucket(Backend::mongo()).await;
}

#[tokio::test]
async fn a_late_minute_completes_its_bucket_on_sqlite() {
    a_late_minute_completes_its_bucket(Backend::sqlite()).await;
}

#[tokio::test]
async fn every_bad_interval_or_indicator_is_a_400_naming_it() {
    let backend = Backend::sqlite();
    let (_fake, app) = steady(&backend).await;
    for (query, parameter) in [
        ("?interval=1h", "interval"),
        ("?interval=7m", "interval"),
        ("?interval=", "interval"),
        ("?live=yes", "live"),
        ("?indicators=rsi14", "indicators"),
        ("?format=compact&indicators=rsi14", "indicators"),
        ("?format=candles&indicators=rsi1", "indicators"),
        ("?format=candles&indicators=rsi501", "indicators"),
        ("?format=candles&indicators=foo", "indicators"),
        ("?format=candles&indicators=rsi14,rsi14", "indicators"),
        (
            "?format=candles&indicators=sma2,sma3,sma4,sma5,sma6,sma7,sma8,sma9,sma10",
            "indicators",
        ),
        ("?format=candles&indicators=", "indicators"),
    ] {
        let (status, body) = refused_upgrade(&app, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
        let (status, body) = get_json(
            &app,
            &format!(
                "/api/v1/candles/BTCUSDT{}",
                query
                    .replace("format=candles&", "")
                    .replace("format=compact&", "")
            ),
        )
        .await;
        if parameter != "live" && !query.contains("compact") && query != "?indicators=rsi14" {
            assert_eq!(
                (status, body["parameter"].as_str()),
                (400, Some(parameter)),
                "API {query}: {body}"
            );
        }
    }
    // A served interval and valid indicators are fine on both.
    let (status, body) = get_json(
        &app,
        "/api/v1/candles/BTCUSDT?interval=15m&indicators=rsi14,macd&limit=2",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["candles"][0]["indicators"].get("rsi14").is_some());
    let mut client = Client::connect(&format!(
        "{}?format=candles&interval=15m&indicators=bb20,ema5&live=true",
        app.ws_url()
    ))
    .await;
    let message = client.next_json().await;
    assert_eq!(message["interval"], "15m");
    let keys: Vec<&String> = message["candles"][0]["indicators"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys.len(), 2);
    app.stop().await.unwrap();
}

/// The first start fetches the history the longest interval needs in the background,
/// in 1,000-row requests paced under 1,200 weight a minute; a later start on the same
/// store fetches none of it again.
#[tokio::test]
async fn the_deep_history_is_paced_and_fetched_once() {
    let backend = Backend::sqlite();
    // 52 hours of minutes: HISTORY_MAX=50 hours need 51 whole hours before this one.
    let fake = FakeExchange::start_sized(&["BTCUSDT", "ETHUSDT"], 52 * 60).await;
    let env = [
        ("SYMBOLS", "BTCUSDT,ETHUSDT"),
        ("INTERVALS", "1m,1h"),
        ("HISTORY_MAX", "50"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &env)).await;
    let deep = |fake: &FakeExchange| -> Vec<(std::time::Instant, Option<usize>)> {
        fake.rest_requests()
            .iter()
            .filter(|r| r.limit == Some(1000))
            .map(|r| (r.at, r.limit))
            .collect()
    };
    let url = format!(
        "{}?format=candles&interval=1h&symbols=ETHUSDT&limit=50",
        app.ws_url()
    );
    let mut hours = 0;
    for _ in 0..200 {
        hours = Client::connect(&url).await.next_json().await["candles"]
            .as_array()
            .unwrap()
            .len();
        if hours == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hours, 50, "the 1h window filled from the deep history");
    // Every minute from the first whole hour of the 51 on is stored.
    let first_hour = fake.history("ETHUSDT").last().unwrap().open_time / (60 * MINUTE)
        * (60 * MINUTE)
        - 51 * 60 * MINUTE;
    eventually_async(30, "the deep history is stored", || async {
        let stored = backend.stored("ETHUSDT").await;
        stored.first().is_some_and(|c| c.open_time <= first_hour) && stored.len() as i64 >= 51 * 60
    })
    .await;
    app.stop().await.unwrap();
    let served_requests = fake.rest_requests().len();
    let requests = deep(&fake);
    assert!(requests.len() >= 4, "{} deep requests", requests.len());
    // Weight 5 each, at most 1,200 a minute: at least 250 ms apart.
    for pair in requests.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(240),
            "deep requests {gap:?} apart"
        );
    }

    // A later start finds the history stored and fetches only the recent gap.
    let app = TestApp::spawn(config_for(&fake, &backend, &env)).await;
    let url = format!(
        "{}?format=candles&interval=1h&symbols=ETHUSDT&limit=50",
        app.ws_url()
    );
    let mut client = Client::connect(&url).await;
    assert_eq!(
        client.next_json().await["candles"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later: Vec<String> = fake.rest_requests()[served_requests..]
        .iter()
        .map(|r| {
            format!(
                "{} {:?}..{:?} limit {:?}",
                r.symbol, r.start_time, r.end_time, r.limit
            )
        })
        .collect();
    assert_eq!(
        deep(&fake).len(),
        requests.len(),
        "no deep request on a later start: {later:?}; history from {}",
        fake.history("BTCUSDT")[0].open_time
    );
    app.stop().await.unwrap();
}

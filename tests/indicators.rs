//! Indicators end to end: the fake exchange's history is a series TA-Lib was run on
//! (src/candle/testdata/talib_reference.json, made by scripts/talib-reference.py),
//! and what the socket and the history API answer must be TA-Lib's values, on
//! MongoDB and SQLite.

mod common;

use candlecast::candle::Candle;
use common::*;
use serde_json::Value;

/// The `btc` series of the reference file: its closes and TA-Lib's outputs.
fn reference() -> (Vec<f64>, Value) {
    let text =
        std::fs::read_to_string(repo_root().join("src/candle/testdata/talib_reference.json"))
            .unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let series = file["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "btc")
        .expect("the btc series")
        .clone();
    let closes = series["closes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    (closes, series["indicators"].clone())
}

/// One-minute candles closing at `closes`, ending `lag` minutes before now.
fn minutes(symbol: &str, closes: &[f64], end: i64) -> Vec<Candle> {
    let first = end - closes.len() as i64 * MINUTE;
    closes
        .iter()
        .enumerate()
        .map(|(i, &close)| {
            let open = if i == 0 { close } else { closes[i - 1] };
            Candle {
                symbol: symbol.into(),
                interval: "1m".into(),
                open_time: first + i as i64 * MINUTE,
                close_time: first + (i as i64 + 1) * MINUTE - 1,
                open,
                high: open.max(close),
                low: open.min(close),
                close,
                volume: 10.0,
                quote_volume: 10.0 * close,
                taker_buy_volume: 5.0,
                taker_buy_quote_volume: 5.0 * close,
                trades: 100,
            }
        })
        .collect()
}

/// Whether `got` (the service's) is TA-Lib's `want` within 1e-6 relative, numbers
/// and objects alike; `null` only where TA-Lib has none.
fn agrees(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Null, Value::Null) => true,
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            (g - w).abs() <= 1e-6 * w.abs().max(1.0)
        }
        (Value::Object(g), Value::Object(w)) => {
            g.len() == w.len()
                && w.iter()
                    .all(|(k, w)| g.get(k).is_some_and(|g| agrees(g, w)))
        }
        _ => false,
    }
}

/// Checks every candle in `candles` (newest first) whose index in the series has
/// at least `warmup` earlier candles, for each indicator requested.
fn assert_talib(candles: &Value, first_open: i64, talib: &Value, names: &[&str], what: &str) {
    let mut checked = 0;
    for candle in candles.as_array().unwrap() {
        let index = ((candle["open_time"].as_i64().unwrap() - first_open) / MINUTE) as usize;
        for name in names {
            let period: usize = name
                .trim_start_matches(char::is_alphabetic)
                .parse()
                .unwrap_or(0);
            let warmup = if *name == "macd" { 400 } else { 15 * period };
            if index < warmup {
                continue;
            }
            let got = &candle["indicators"][name];
            let want = &talib[name][index];
            assert!(
                agrees(got, want),
                "{what}: {name} at candle {index}: {got} but TA-Lib says {want}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{what}: nothing was compared");
}

async fn indicators_agree_with_talib(backend: Backend) {
    let (closes, talib) = reference();
    let fake = FakeExchange::start_lagging(&["BTCUSDT"], 30).await;
    let end = fake.history("BTCUSDT").last().unwrap().open_time + MINUTE;
    let series = minutes("BTCUSDT", &closes, end);
    fake.set_history("BTCUSDT", series.clone());
    seed(&backend, &series).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("SYMBOLS", "BTCUSDT"), ("INTERVALS", "1m,5m")],
    ))
    .await;
    let names = ["sma20", "ema20", "ema200", "rsi14", "bb20", "macd"];
    let query = names.join(",");

    let mut client = Client::connect(&format!(
        "{}?format=candles&limit=100&indicators={query}",
        app.ws_url()
    ))
    .await;
    let message = client.next_json().await;
    assert_eq!(message["candles"].as_array().unwrap().len(), 100);
    let keys: Vec<&str> = message["candles"][0]["indicators"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), names.len());
    assert_talib(
        &message["candles"],
        series[0].open_time,
        &talib,
        &names,
        "socket",
    );

    let response = reqwest::get(format!(
        "http://{}/api/v1/candles/BTCUSDT?limit=1000&indicators={query}",
        app.addr
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_talib(
        &page["candles"],
        series[0].open_time,
        &talib,
        &names,
        "history API",
    );
    // The oldest candles of the series have too few before them: null, as in TA-Lib.
    let response = reqwest::get(format!(
        "http://{}/api/v1/candles/BTCUSDT?limit=5&before={}&indicators=sma20,macd",
        app.addr, series[5].open_time
    ))
    .await
    .unwrap();
    let oldest: Value = response.json().await.unwrap();
    for candle in oldest["candles"].as_array().unwrap() {
        assert_eq!(candle["indicators"]["sma20"], Value::Null);
        assert_eq!(candle["indicators"]["macd"], Value::Null);
    }

    // A longer interval's indicators are the same on the socket and the API.
    let mut five = Client::connect(&format!(
        "{}?format=candles&interval=5m&limit=20&indicators=rsi14,bb20",
        app.ws_url()
    ))
    .await;
    let socket = five.next_json().await;
    let api: Value = reqwest::get(format!(
        "http://{}/api/v1/candles/BTCUSDT?interval=5m&limit=20&indicators=rsi14,bb20",
        app.addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    for (s, a) in socket["candles"]
        .as_array()
        .unwrap()
        .iter()
        .zip(api["candles"].as_array().unwrap())
    {
        assert_eq!(s["open_time"], a["open_time"]);
        assert!(
            agrees(&s["indicators"]["rsi14"], &a["indicators"]["rsi14"]),
            "{s} vs {a}"
        );
        assert!(
            agrees(&s["indicators"]["bb20"], &a["indicators"]["bb20"]),
            "{s} vs {a}"
        );
    }
    assert!(socket["candles"][0]["indicators"]["rsi14"].is_number());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn indicators_agree_with_talib_on_mongodb() {
    indicators_agree_with_talib(Backend::mongo()).await;
}

#[tokio::test]
async fn indicators_agree_with_talib_on_sqlite() {
    indicators_agree_with_talib(Backend::sqlite()).await;
}

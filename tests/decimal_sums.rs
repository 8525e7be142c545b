//! A bucket's volumes are the decimal sums of its minutes' volumes, digit for digit,
//! as Binance's own candle of that interval says: on the socket, in the history API
//! and in the CSV export, on MongoDB and SQLite.

mod common;

use candlecast::candle::Candle;
use common::*;
use serde_json::Value;

const FIVE: i64 = 5 * MINUTE;
/// The example, minute by minute within each 5m bucket, in thousandths:
/// 0.1, 0.2, 0.1, 0.2, 0.1 sum to 0.7 (f64 addition says 0.7000000000000001).
const VOLUMES: [u64; 5] = [100, 200, 100, 200, 100];

/// The four volumes of the minute opened at `open_time`, in units of 10^-3 (base)
/// and 10^-5 (quote): the pattern and scattered realistic values.
fn units(open_time: i64) -> [(u64, u32); 4] {
    let n = (open_time / MINUTE) as u64;
    [
        (VOLUMES[(n % 5) as usize], 3),
        ((n * 7_919 + 12_345) % 90_000_000, 5),
        ((n * 104_729) % 100_000, 3),
        ((n * 1_299_709) % 900_000_000, 5),
    ]
}

/// `units` × 10^-`decimals` as the exchange writes it, e.g. `"12.340"`.
fn text(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let width = decimals as usize;
    format!("{}.{:0width$}", units / scale, units % scale)
}

/// `candle` with the volumes of [`units`], parsed from the exchange's strings.
fn with_volumes(mut candle: Candle) -> Candle {
    let [v, q, tv, tq] = units(candle.open_time).map(|(u, d)| text(u, d).parse().unwrap());
    (
        candle.volume,
        candle.quote_volume,
        candle.taker_buy_volume,
        candle.taker_buy_quote_volume,
    ) = (v, q, tv, tq);
    candle
}

/// The four volumes of the 5m bucket opened at `open`: the decimal sums, computed
/// with integers, read as the f64 nearest each (the one that prints as the sum).
fn expected(open: i64) -> [f64; 4] {
    let mut sums = [(0u64, 0u32); 4];
    for minute in 0..5 {
        for (sum, (units, decimals)) in sums.iter_mut().zip(units(open + minute * MINUTE)) {
            *sum = (sum.0 + units, decimals);
        }
    }
    sums.map(|(units, decimals)| text(units, decimals).parse().unwrap())
}

/// Asserts that every bucket in `candles` (JSON, any order) has the exact sums, of
/// every volume it carries (the socket's `candles` format carries `volume` alone).
fn assert_exact(candles: &Value, what: &str) {
    let candles = candles.as_array().expect("a candles array");
    assert!(!candles.is_empty(), "{what}: no buckets");
    let fields = [
        "volume",
        "quote_volume",
        "taker_buy_volume",
        "taker_buy_quote_volume",
    ];
    for bucket in candles {
        let open = bucket["open_time"].as_i64().unwrap();
        for (field, want) in fields.iter().zip(expected(open)) {
            if let Some(got) = bucket[field].as_f64() {
                assert_eq!(got, want, "{what}: {field} of bucket {open}");
            }
        }
        assert_eq!(bucket["volume"].to_string(), "0.7", "{what}: bucket {open}");
    }
}

async fn bucket_volumes_are_decimal_sums(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    let history: Vec<Candle> = fake
        .history("BTCUSDT")
        .into_iter()
        .map(with_volumes)
        .collect();
    fake.set_history("BTCUSDT", history);
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INTERVALS", "1m,5m"), ("HISTORY_MAX", "20")],
    ))
    .await;

    // The socket: the first window, then a bucket closed live on the stream.
    let url = format!(
        "{}?interval=5m&format=candles&limit=20&symbols=BTCUSDT",
        app.ws_url()
    );
    let mut client = Client::connect(&url).await;
    assert_exact(&client.next_json().await["candles"], "first 5m window");
    fake.wait_for_connections(1).await;
    let closed_bucket = loop {
        let mut history = fake.history("BTCUSDT");
        fake.close_next_silently("BTCUSDT");
        let candle = with_volumes(fake.history("BTCUSDT").pop().unwrap());
        history.push(candle.clone());
        fake.set_history("BTCUSDT", history);
        fake.send_update(&candle, false);
        fake.send_update(&candle, true);
        if (candle.open_time + MINUTE) % FIVE == 0 {
            break candle.open_time + MINUTE - FIVE;
        }
    };
    let message = loop {
        let message = client.next_json().await;
        if message["candles"][0]["open_time"] == closed_bucket {
            break message;
        }
    };
    assert_exact(&message["candles"], "5m window after a live close");

    // The history API and the CSV export, once the store holds every minute.
    backend
        .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
        .await;
    let api = format!("http://{}/api/v1/candles/BTCUSDT", app.addr);
    let page: Value = reqwest::get(format!("{api}?interval=5m&limit=20"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_exact(&page["candles"], "history API");
    assert!(page["candles"][0]["taker_buy_quote_volume"].is_number());
    assert_eq!(page["candles"][0]["open_time"], closed_bucket);

    let csv = reqwest::get(format!("{api}?interval=5m&format=csv"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.len() >= 20, "{csv}");
    for row in rows {
        let open: i64 = row[0].parse().unwrap();
        let got = [row[5], row[7], row[9], row[10]].map(|v| v.parse::<f64>().unwrap());
        assert_eq!(got, expected(open), "CSV row {row:?}");
        assert_eq!(row[5], "0.7", "CSV row {row:?}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bucket_volumes_are_decimal_sums_on_mongodb() {
    bucket_volumes_are_decimal_sums(Backend::mongo()).await;
}

#[tokio::test]
async fn bucket_volumes_are_decimal_sums_on_sqlite() {
    bucket_volumes_are_decimal_sums(Backend::sqlite()).await;
}

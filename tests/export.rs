//! CSV export: what the fake closed, row for row, for 1m and an aggregated interval,
//! in the columns of Binance's kline files; `from`/`to` on the JSON API too; every
//! 400; and a year of minutes streamed without the service's memory growing, on
//! MongoDB and SQLite.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::store::{CandleStore, SqliteStore};
use common::binary::Running;
use common::*;
use serde_json::Value;

const HEADER: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore";

/// A CSV answer: status, headers and rows (header row checked and removed).
async fn csv(app: &TestApp, query: &str) -> (reqwest::header::HeaderMap, Vec<Vec<String>>) {
    let response = reqwest::get(format!("http://{}/api/v1/candles/{query}", app.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER), "{query}");
    (
        headers,
        lines
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect(),
    )
}

/// Asserts that `row` is `candle` in the file's column order.
fn assert_row(row: &[String], c: &Candle) {
    assert_eq!(row.len(), 12, "{row:?}");
    let number = |i: usize| {
        row[i]
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("column {i} of {row:?}"))
    };
    assert_eq!(row[0].parse::<i64>().unwrap(), c.open_time);
    assert_eq!(
        [number(1), number(2), number(3), number(4), number(5)],
        [c.open, c.high, c.low, c.close, c.volume],
        "{row:?}"
    );
    assert_eq!(row[6].parse::<i64>().unwrap(), c.close_time);
    assert_eq!(number(7), c.quote_volume);
    assert_eq!(row[8].parse::<i64>().unwrap(), c.trades);
    assert_eq!(
        [number(9), number(10)],
        [c.taker_buy_volume, c.taker_buy_quote_volume]
    );
    assert_eq!(row[11], "0");
    // Shortest exact form: no padding zeros, no exponent.
    for field in &row[1..11] {
        assert!(
            !(field.contains('e') || field.contains('.') && field.ends_with('0')),
            "{field} in {row:?}"
        );
    }
}

/// Whole buckets of `length` ms of `minutes`, oldest first.
fn buckets(minutes: &[Candle], length: i64) -> Vec<Candle> {
    let mut out: Vec<Candle> = Vec::new();
    let per_bucket = (length / MINUTE) as usize;
    for chunk in
        minutes.chunk_by(|a, b| a.open_time.div_euclid(length) == b.open_time.div_euclid(length))
    {
        if chunk.len() != per_bucket {
            continue;
        }
        let open_time = chunk[0].open_time.div_euclid(length) * length;
        out.push(Candle {
            interval: format!("{}m", length / MINUTE),
            open_time,
            close_time: open_time + length - 1,
            high: chunk.iter().map(|c| c.high).fold(f64::MIN, f64::max),
            low: chunk.iter().map(|c| c.low).fold(f64::MAX, f64::min),
            close: chunk[chunk.len() - 1].close,
            volume: chunk.iter().map(|c| c.volume).sum(),
            quote_volume: chunk.iter().map(|c| c.quote_volume).sum(),
            taker_buy_volume: chunk.iter().map(|c| c.taker_buy_volume).sum(),
            taker_buy_quote_volume: chunk.iter().map(|c| c.taker_buy_quote_volume).sum(),
            trades: chunk.iter().map(|c| c.trades).sum(),
            ..chunk[0].clone()
        });
    }
    out
}

async fn csv_is_what_the_fake_closed(backend: Backend) {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[("INTERVALS", "1m,5m")])).await;
    let history = fake.history("BTCUSDT");
    let (from, to) = (history[10].open_time, history[100].open_time);

    let (headers, rows) = csv(&app, &format!("BTCUSDT?format=csv&from={from}&to={to}")).await;
    assert_eq!(headers["content-type"], "text/csv");
    let date = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        format!(
            "attachment; filename=\"BTCUSDT-1m-{}-{}.csv\"",
            date(from),
            date(to)
        )
    );
    assert_eq!(rows.len(), 90, "from ≤ open_time < to");
    for (row, candle) in rows.iter().zip(&history[10..100]) {
        assert_row(row, candle);
    }

    // An aggregated interval: whole buckets opened in the range.
    let rfc3339 = |t: i64| {
        chrono::DateTime::from_timestamp_millis(t)
            .unwrap()
            .to_rfc3339()
    };
    let (headers, rows) = csv(
        &app,
        &format!(
            "BTCUSDT?format=csv&interval=5m&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ),
    )
    .await;
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("BTCUSDT-5m-")
    );
    let expected: Vec<Candle> = buckets(&history, 5 * MINUTE)
        .into_iter()
        .filter(|b| b.open_time >= from && b.open_time < to)
        .collect();
    assert_eq!(rows.len(), expected.len());
    for (row, bucket) in rows.iter().zip(&expected) {
        assert_eq!(row[0].parse::<i64>().unwrap(), bucket.open_time);
        for (i, want) in [
            (1, bucket.open),
            (2, bucket.high),
            (3, bucket.low),
            (4, bucket.close),
            (5, bucket.volume),
            (7, bucket.quote_volume),
        ] {
            let got: f64 = row[i].parse().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs(),
                "column {i}: {got} vs {want}"
            );
        }
        assert_eq!(row[8].parse::<i64>().unwrap(), bucket.trades);
    }

    // Defaults: from the first stored candle to now.
    let (_, all) = csv(&app, "ethusdt?format=csv").await;
    let eth = fake.history("ETHUSDT");
    assert_eq!(all.len(), eth.len());
    assert_row(&all[0], &eth[0]);

    // The JSON API takes from/to too: newest first within [from, to).
    let page: Value = reqwest::get(format!(
        "http://{}/api/v1/candles/BTCUSDT?from={from}&to={to}&limit=1000",
        app.addr
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let times: Vec<i64> = page["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect();
    assert_eq!(
        times,
        history[10..100]
            .iter()
            .rev()
            .map(|c| c.open_time)
            .collect::<Vec<_>>()
    );

    for (query, parameter) in [
        ("format=xml", "format"),
        ("format=csv&from=yesterday", "from"),
        ("format=csv&to=2025-13-01", "to"),
        (&*format!("format=csv&from={to}&to={from}"), "from"),
        ("format=csv&limit=5", "limit"),
        ("format=csv&indicators=rsi14", "indicators"),
    ] {
        let response = reqwest::get(format!(
            "http://{}/api/v1/candles/BTCUSDT?{query}",
            app.addr
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["parameter"], parameter, "{query}: {body}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn csv_is_what_the_fake_closed_on_mongodb() {
    csv_is_what_the_fake_closed(Backend::mongo()).await;
}

#[tokio::test]
async fn csv_is_what_the_fake_closed_on_sqlite() {
    csv_is_what_the_fake_closed(Backend::sqlite()).await;
}

/// The binary's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[tokio::test]
async fn a_year_of_minutes_streams_without_the_service_growing() {
    const YEAR: i64 = 525_600;
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open(&data).unwrap();
    let recent = fake.history("BTCUSDT");
    let start = recent[0].open_time - YEAR * MINUTE;
    let mut year = Vec::with_capacity(10_000);
    for minute in 0..YEAR {
        let mut candle = recent[(minute as usize) % recent.len()].clone();
        candle.open_time = start + minute * MINUTE;
        candle.close_time = candle.open_time + MINUTE - 1;
        year.push(candle);
        if year.len() == 10_000 || minute == YEAR - 1 {
            store.upsert(&year).await.unwrap();
            year.clear();
        }
    }
    for symbol in SYMBOLS {
        store.upsert(&fake.history(symbol)).await.unwrap();
    }
    drop(store);
    let env = [
        ("BINANCE_WS_URL", fake.ws_url()),
        ("BINANCE_REST_URL", fake.rest_url()),
        ("DATA_DIR", data.display().to_string()),
        ("PORT", "0".to_owned()),
    ];
    let mut service = Running::start(dir, &env);
    let address = service.wait_for_address().await;
    let mut client = Client::connect(&format!("ws://{address}/?symbols=ethusdt")).await;
    client.next_json().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(service.pid());

    let response = reqwest::get(format!(
        "http://{address}/api/v1/candles/BTCUSDT?format=csv&from={start}&to={}",
        recent[0].open_time
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut response = response;
    let (mut lines, mut bytes, mut peak) = (0u64, 0u64, before);
    let mut update_seen = false;
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        peak = peak.max(rss_kib(service.pid()));
        // Halfway, another client must still get its update at once.
        if !update_seen && lines > YEAR as u64 / 2 {
            fake.wait_for_connections(1).await;
            let closed = fake.close_next("ETHUSDT");
            let message = tokio::time::timeout(Duration::from_secs(2), client.next_json())
                .await
                .expect("an update during the export");
            assert_eq!(message["values"][0].as_f64(), Some(closed.close));
            update_seen = true;
        }
    }
    assert!(update_seen);
    assert_eq!(
        lines,
        YEAR as u64 + 1,
        "a header and every minute of the year"
    );
    let grew = peak.saturating_sub(before);
    println!("exported {bytes} bytes; RSS {before} KiB before, peak {peak} KiB (+{grew} KiB)");
    assert!(
        grew < 16 * 1024,
        "RSS grew by {grew} KiB during a {} MB export",
        bytes / 1_000_000
    );
    let (code, _, _) = service.terminate().await;
    assert_eq!(code, 0);
}

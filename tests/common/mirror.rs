//! Helpers for the Binance mirror's tests: GETs against the service and the fake
//! exchange, and the exchange requests the mirror made.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Backend, FakeExchange, MINUTE, TestApp, config_for};

/// An answer: status, headers, body as text.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// The rows of a klines answer whose close time is before `now`.
    pub fn closed_rows(&self, now: i64) -> Vec<Value> {
        let rows = self.json();
        rows.as_array()
            .unwrap_or_else(|| panic!("not rows: {}", self.body))
            .iter()
            .filter(|row| row[6].as_i64().unwrap() < now)
            .cloned()
            .collect()
    }
}

/// `GET {base}{path}` with optional headers.
pub async fn get_at(base: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut request = client.get(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// `GET {path}` on the service.
pub async fn mirror_get(app: &TestApp, path: &str) -> Answer {
    get_at(&format!("http://{}", app.addr), path, &[]).await
}

/// `GET {path}` on the fake exchange itself (logged there like any request).
pub async fn exchange_get(fake: &FakeExchange, path: &str) -> Answer {
    get_at(&fake.rest_url(), path, &[]).await
}

/// A fake with `minutes` of history and the service on `backend` in front of it.
pub async fn mirror_on(
    backend: &Backend,
    minutes: i64,
    extra: &[(&str, &str)],
) -> (FakeExchange, TestApp) {
    let fake = FakeExchange::start_sized(&super::SYMBOLS, minutes).await;
    let app = TestApp::spawn(config_for(&fake, backend, extra)).await;
    settled(&fake).await;
    (fake, app)
}

/// Waits until the service's own start-up requests are over (the backfill, and the
/// repair after the stream connects), so a test counts only the mirror's.
pub async fn settled(fake: &FakeExchange) {
    fake.wait_for_connections(1).await;
    let mut seen = fake.rest_requests().len();
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = fake.rest_requests().len();
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Klines requests the fake received for `symbol` (any, if empty) whose startTime
/// lies in `[from, to)`: the service's own repairs near now fall outside a test's
/// old range.
pub fn klines_requests_in(fake: &FakeExchange, symbol: &str, from: i64, to: i64) -> usize {
    fake.rest_requests()
        .iter()
        .filter(|r| symbol.is_empty() || r.symbol == symbol)
        .filter(|r| r.start_time.is_some_and(|s| (from..to).contains(&s)))
        .count()
}

/// Now, to the minute, ms since the epoch.
pub fn this_minute() -> i64 {
    chrono::Utc::now().timestamp_millis().div_euclid(MINUTE) * MINUTE
}

//! The real Binance clients (ccxt, python-binance) run by their driver scripts in
//! tests/clients/ with the python `./scripts/test` installs them into, and what
//! their answers and the exchange's request log are held against.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use candlecast::candle::Candle;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::fake_exchange::{FakeExchange, RestRequest};
use super::repo_root;

/// What one driver run printed: one result per call, and every HTTP request the
/// client made.
#[derive(Debug)]
pub struct ClientRun {
    pub client: &'static str,
    pub calls: Vec<Value>,
    pub results: Vec<Value>,
    pub requests: Vec<Value>,
}

impl ClientRun {
    /// The answer of call `index`, failing the test with the client's error and the
    /// requests it made if the call raised.
    #[track_caller]
    pub fn ok(&self, index: usize) -> &Value {
        let result = &self.results[index];
        if let Some(error) = result.get("error") {
            panic!(
                "{} call {} raised {error}\nits requests: {:#?}",
                self.client, self.calls[index], self.requests
            );
        }
        &result["ok"]
    }

    /// Every answer, in call order (see [`ClientRun::ok`]).
    #[track_caller]
    pub fn answers(&self) -> Vec<&Value> {
        (0..self.results.len()).map(|i| self.ok(i)).collect()
    }

    /// The URLs the client asked for, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.requests
            .iter()
            .map(|r| r["url"].as_str().unwrap())
            .collect()
    }

    /// Asserts every request the client made went to `base` (nothing to Binance).
    #[track_caller]
    pub fn assert_only_asked(&self, base: &str) {
        for url in self.urls() {
            assert!(
                url.starts_with(base),
                "{} asked {url}, not {base}",
                self.client
            );
        }
    }
}

/// The python of the venv `./scripts/test` installs the clients into.
fn clients_python() -> PathBuf {
    let python = std::env::var_os("CLIENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-clients/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs ccxt and python-binance into \
         .venv-clients/ and sets CLIENTS_PYTHON",
        python.display()
    );
    python
}

/// Runs `script` (in tests/clients/) on `calls` against `base`, e.g.
/// `http://127.0.0.1:PORT`.
async fn drive(client: &'static str, script: &str, base: &str, calls: Value) -> ClientRun {
    let mut child = tokio::process::Command::new(clients_python())
        .arg(repo_root().join("tests/clients").join(script))
        .arg(base)
        // Loopback only, whatever proxy the machine sets.
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client driver");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(calls.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{client} did not finish within 300 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{client} driver failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{client} driver printed no JSON ({e}): {stdout}"));
    ClientRun {
        client,
        calls: calls.as_array().unwrap().clone(),
        results: printed["results"].as_array().unwrap().clone(),
        requests: printed["requests"].as_array().unwrap().clone(),
    }
}

/// ccxt's `binanceusdm` with its public USD-M URLs set to `base`.
pub async fn ccxt(base: &str, calls: Value) -> ClientRun {
    drive("ccxt", "ccxt_calls.py", base, calls).await
}

/// python-binance's `Client(ping=False)` with `FUTURES_URL` set to `base`/fapi.
pub async fn python_binance(base: &str, calls: Value) -> ClientRun {
    drive("python-binance", "binance_calls.py", base, calls).await
}

/// The wall clock, in epoch milliseconds.
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Asserts `time` (a client's answer of the exchange's clock, which in these tests
/// is the wall clock) lies within a second of the run `[before, after]`.
#[track_caller]
pub fn assert_clock_within(time: &Value, (before, after): (i64, i64), what: &str) {
    let time = time
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: {time} is no time"));
    assert!(
        (before - 1_000..=after + 1_000).contains(&time),
        "{what}: {time} is not the exchange's clock (between {before} and {after})"
    );
}

/// `candles` as Binance's klines rows, as the fake serves them.
pub fn binance_rows(candles: &[Candle]) -> Value {
    let row = |c: &Candle| {
        json!([
            c.open_time,
            format!("{}", c.open),
            format!("{}", c.high),
            format!("{}", c.low),
            format!("{}", c.close),
            format!("{}", c.volume),
            c.close_time,
            format!("{}", c.quote_volume),
            c.trades,
            format!("{}", c.taker_buy_volume),
            format!("{}", c.taker_buy_quote_volume),
            "0"
        ])
    };
    candles.iter().map(row).collect()
}

/// `candles` as ccxt's OHLCV rows: open time, open, high, low, close, volume.
pub fn ccxt_rows(candles: &[Candle]) -> Value {
    let row = |c: &Candle| json!([c.open_time, c.open, c.high, c.low, c.close, c.volume]);
    candles.iter().map(row).collect()
}

/// Asserts each klines call's rows in `mirrored` are the rows of the same call in
/// `direct`.
#[track_caller]
pub fn assert_same_answers(mirrored: &ClientRun, direct: &ClientRun) {
    for (index, call) in mirrored.calls.iter().enumerate() {
        if call["call"]
            .as_str()
            .is_some_and(|name| name.contains("klines"))
        {
            assert_same_rows(mirrored.ok(index), direct.ok(index), &call.to_string());
        }
    }
}

/// Asserts two klines answers are the same rows as Binance's JSON has them: the
/// same length, integers where the exchange sends integers (times, trades), and
/// decimal strings of the same value where it sends strings (`"84000.10"` is
/// `"84000.1"`).
#[track_caller]
pub fn assert_same_rows(actual: &Value, expected: &Value, what: &str) {
    let (actual, expected) = (actual.as_array().unwrap(), expected.as_array().unwrap());
    let first = |rows: &[Value]| rows.first().map(|r| r[0].clone());
    let last = |rows: &[Value]| rows.last().map(|r| r[0].clone());
    assert_eq!(
        (actual.len(), first(actual), last(actual)),
        (expected.len(), first(expected), last(expected)),
        "{what}: rows (count, first open time, last open time)"
    );
    for (row, (a, e)) in actual.iter().zip(expected).enumerate() {
        let (a, e) = (a.as_array().unwrap(), e.as_array().unwrap());
        assert_eq!(a.len(), e.len(), "{what}: row {row} has {} fields", a.len());
        for (field, (a, e)) in a.iter().zip(e).enumerate() {
            let same = match (a, e) {
                (Value::String(a), Value::String(e)) => decimal(a) == decimal(e),
                (Value::Number(a), Value::Number(e)) => a.as_i64().is_some() && a == e,
                _ => false,
            };
            assert!(
                same,
                "{what}: row {row} field {field} is {a}, the exchange's is {e}"
            );
        }
    }
}

fn decimal(text: &str) -> Option<Decimal> {
    text.parse::<Decimal>().ok().map(|d| d.normalize())
}

/// Where the fake's request log stands now, to ask later what came after.
pub fn log_position(fake: &FakeExchange) -> usize {
    fake.rest_requests().len()
}

/// The klines requests of `symbol` the fake got after `position` whose range meets
/// `[from, to]` (a bound not sent reaches as far as it can).
pub fn klines_asked(
    fake: &FakeExchange,
    position: usize,
    symbol: &str,
    (from, to): (i64, i64),
) -> Vec<RestRequest> {
    fake.rest_requests()
        .into_iter()
        .skip(position)
        .filter(|r| {
            r.symbol == symbol
                && r.start_time.unwrap_or(i64::MIN) <= to
                && r.end_time.unwrap_or(i64::MAX) >= from
        })
        .collect()
}

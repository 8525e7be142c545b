//! Test helpers: a fake exchange, the real service started on port 0 against it, a
//! websocket client, and direct views of what the database holds.
#![allow(dead_code)] // each test binary uses a different subset

pub mod backfill;
pub mod binary;
pub mod clients;
pub mod contracts;
pub mod fake_exchange;
pub mod mirror;
pub mod mongo_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::config::Config;
use chrono_tz::Tz;
use futures_util::StreamExt;
use mongodb::bson::{Bson, Document, doc};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use fake_exchange::{FakeExchange, MINUTE};

pub const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// The MongoDB wire server the suite runs against. `./scripts/test` starts one and
/// sets `MONGO_TEST_URI`; running `cargo test` alone needs it set by hand.
pub fn mongo_test_uri() -> String {
    std::env::var("MONGO_TEST_URI").unwrap_or_else(|_| {
        panic!(
            "MONGO_TEST_URI is not set. Run ./scripts/test, which starts a MongoDB wire server \
             (mongod if installed, else SecantusDB from PyPI), or start one yourself and set \
             MONGO_TEST_URI=mongodb://127.0.0.1:27017"
        )
    })
}

/// A database name no other test uses.
pub fn unique_database(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Which store a test runs on.
pub enum Backend {
    Mongo { uri: String, database: String },
    Sqlite { dir: tempfile::TempDir },
}

impl Backend {
    pub fn mongo() -> Self {
        Backend::Mongo {
            uri: mongo_test_uri(),
            database: unique_database("candlecast_test"),
        }
    }

    pub fn sqlite() -> Self {
        Backend::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The environment variables that select this store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backend::Mongo { uri, database } => vec![
                ("MONGO_URI", uri.clone()),
                ("MONGO_DATABASE", database.clone()),
            ],
            Backend::Sqlite { dir } => vec![("DATA_DIR", dir.path().display().to_string())],
        }
    }

    /// A collection of this MongoDB backend's database, read and written directly
    /// (not through the service's store code). Panics on the embedded store.
    pub async fn collection(&self, name: &str) -> mongodb::Collection<Document> {
        let Backend::Mongo { uri, database } = self else {
            panic!("a MongoDB collection of the embedded store");
        };
        let client = mongodb::Client::with_uri_str(uri).await.unwrap();
        client.database(database).collection(name)
    }

    /// Every stored candle of `symbol`, oldest first, read straight from the database
    /// (not through the service's store code), checking the field types on the way.
    pub async fn stored(&self, symbol: &str) -> Vec<Candle> {
        match self {
            Backend::Mongo { uri, database } => {
                let client = mongodb::Client::with_uri_str(uri).await.unwrap();
                let collection = client.database(database).collection::<Document>("candles");
                let mut cursor = collection
                    .find(doc! {"symbol": symbol})
                    .sort(doc! {"open_time": 1})
                    .await
                    .unwrap();
                let mut candles = Vec::new();
                while let Some(document) = cursor.next().await {
                    candles.push(candle_from_document(&document.unwrap()));
                }
                candles
            }
            Backend::Sqlite { dir } => {
                let path = dir.path().join(candlecast::store::SQLITE_FILE);
                let symbol = symbol.to_owned();
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(path).unwrap();
                    let mut statement = connection
                        .prepare(
                            "SELECT symbol, interval, open_time, close_time, open, high, low, close, volume,
                                    quote_volume, taker_buy_volume, taker_buy_quote_volume, trades
                             FROM candles WHERE symbol = ?1 ORDER BY open_time",
                        )
                        .unwrap();
                    statement
                        .query_map([symbol], |row| {
                            Ok(Candle {
                                symbol: row.get(0)?,
                                interval: row.get(1)?,
                                open_time: row.get(2)?,
                                close_time: row.get(3)?,
                                open: row.get(4)?,
                                high: row.get(5)?,
                                low: row.get(6)?,
                                close: row.get(7)?,
                                volume: row.get(8)?,
                                quote_volume: row.get(9)?,
                                taker_buy_volume: row.get(10)?,
                                taker_buy_quote_volume: row.get(11)?,
                                trades: row.get(12)?,
                            })
                        })
                        .unwrap()
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap()
                })
                .await
                .unwrap()
            }
        }
    }

    /// Waits until `symbol`'s stored open times equal `expected` (the test's view).
    pub async fn wait_for_stored(&self, symbol: &str, expected: &[Candle]) -> Vec<Candle> {
        // Returns as soon as the store matches; the patience is for a loaded machine.
        self.wait_for_stored_within(30, symbol, expected).await
    }

    /// Waits (up to 30 s, for a loaded machine) until `symbol` has at least `count`
    /// stored candles; returns how many it has.
    pub async fn wait_for_at_least(&self, symbol: &str, count: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stored = self.stored(symbol).await.len();
            if stored >= count || tokio::time::Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Backend::wait_for_stored`] with a chosen patience.
    pub async fn wait_for_stored_within(
        &self,
        seconds: u64,
        symbol: &str,
        expected: &[Candle],
    ) -> Vec<Candle> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let stored = self.stored(symbol).await;
            let same_times = stored
                .iter()
                .map(|c| c.open_time)
                .eq(expected.iter().map(|c| c.open_time));
            if same_times || tokio::time::Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads a DESIGN.md §4 document, asserting each field has the documented BSON type.
fn candle_from_document(d: &Document) -> Candle {
    let double = |field: &str| match d.get(field) {
        Some(Bson::Double(v)) => *v,
        other => panic!("{field} should be a double, found {other:?}"),
    };
    let date = |field: &str| match d.get(field) {
        Some(Bson::DateTime(v)) => v.timestamp_millis(),
        other => panic!("{field} should be a date, found {other:?}"),
    };
    let string = |field: &str| match d.get(field) {
        Some(Bson::String(v)) => v.clone(),
        other => panic!("{field} should be a string, found {other:?}"),
    };
    Candle {
        symbol: string("symbol"),
        interval: string("interval"),
        open_time: date("open_time"),
        close_time: date("close_time"),
        open: double("open"),
        high: double("high"),
        low: double("low"),
        close: double("close"),
        volume: double("volume"),
        quote_volume: double("quote_volume"),
        taker_buy_volume: double("taker_buy_volume"),
        taker_buy_quote_volume: double("taker_buy_quote_volume"),
        trades: match d.get("trades") {
            Some(Bson::Int64(v)) => *v,
            other => panic!("trades should be an int64, found {other:?}"),
        },
    }
}

/// A configuration pointing at the fake exchange and the backend, with `extra` on top.
pub fn config_for(fake: &FakeExchange, backend: &Backend, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("BINANCE_WS_URL".into(), fake.ws_url());
    vars.insert("BINANCE_REST_URL".into(), fake.rest_url());
    for (name, value) in backend.env() {
        vars.insert(name.into(), value);
    }
    // Only the base interval unless a test asks for more: the deep history longer
    // intervals fetch after startup would add REST requests to tests that count
    // them (tests/intervals.rs and tests/forming.rs set INTERVALS themselves).
    vars.insert("INTERVALS".into(), "1m".into());
    for (name, value) in extra {
        vars.insert(name.to_string(), value.to_string());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("test configuration is valid")
}

/// The service running in this process on a port of its own; dropping it shuts
/// the service down.
pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub metrics: std::sync::Arc<candlecast::metrics::Metrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), candlecast::AppError>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl TestApp {
    /// Builds [`candlecast::App`] on 127.0.0.1:0, runs it, and waits until it serves.
    pub async fn spawn(config: Config) -> Self {
        Self::spawn_with_clock(config, candlecast::clock::Clock::system()).await
    }

    /// Like [`TestApp::spawn`], on a machine whose clock is `clock` (e.g. one minutes
    /// off: [`candlecast::clock::Clock::skewed`]).
    pub async fn spawn_with_clock(config: Config, clock: candlecast::clock::Clock) -> Self {
        // TEST_LOG=debug shows the service's logs (with --nocapture).
        if let Ok(filter) = std::env::var("TEST_LOG") {
            candlecast::telemetry::init(&filter);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            let _ = stop.await;
        };
        let app =
            candlecast::App::build_with_clock(config.clone(), listener, Default::default(), clock)
                .await
                .expect("the service starts");
        let metrics = app.metrics();
        let task = tokio::spawn(app.run(stopped));
        let app = Self {
            addr,
            config,
            metrics,
            shutdown: Some(shutdown),
            task,
        };
        app.wait_until_serving().await;
        app
    }

    async fn wait_until_serving(&self) {
        let url = format!("http://{}/health", self.addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "the service stopped during startup"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service did not start serving"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `ws://…/` of this app.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connects a websocket client to `/`.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Requests shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), candlecast::AppError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the service did not stop within 20 s")
            .expect("the service task panicked")
    }
}

/// A websocket client reading the feed.
pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Self { socket }
    }

    /// The next text message as JSON, failing the test after 10 s.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("no message within 10 s")
                .expect("the server closed the connection")
                .expect("websocket error");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("valid JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next text message as JSON, or `None` if none came within `within`.
    pub async fn next_json_within(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.next_json()).await.ok()
    }

    /// The next `n` messages.
    pub async fn next_n(&mut self, n: usize) -> Vec<Value> {
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            messages.push(self.next_json().await);
        }
        messages
    }

    /// The next message that is not a ping/pong: a close frame, or `None` at EOF.
    pub async fn next_raw(&mut self) -> Option<Message> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("timed out")
            {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// What DESIGN.md §3 says a client should see for `history` (closed candles of one
/// coin, oldest first), computed here independently of the service.
pub fn expected_message(symbol: &str, history: &[Candle], history_len: usize, zone: Tz) -> Value {
    let mut values = Vec::new();
    let mut operations = Vec::new();
    let mut times = Vec::new();
    for index in (history.len().saturating_sub(history_len)..history.len()).rev() {
        let candle = &history[index];
        let reference = if index > 0 {
            history[index - 1].close
        } else {
            candle.open
        };
        values.push(json!(candle.close));
        operations.push(if candle.close >= reference {
            "BUY"
        } else {
            "SELL"
        });
        let closed_at = chrono::DateTime::from_timestamp_millis(candle.open_time + MINUTE).unwrap();
        times.push(closed_at.with_timezone(&zone).format("%H:%M").to_string());
    }
    json!({"coin": symbol, "values": values, "operations": operations, "time": times})
}

/// Closed candles the fake served over REST for `symbol`, merged and sorted.
pub fn served_closed(fake: &FakeExchange, symbol: &str) -> Vec<Candle> {
    let mut served: Vec<Candle> = fake
        .rest_requests()
        .into_iter()
        .filter(|r| r.symbol == symbol)
        .flat_map(|r| r.closed_rows)
        .collect();
    served.sort_by_key(|c| c.open_time);
    served.dedup_by_key(|c| c.open_time);
    served
}

/// Asserts two candle lists are equal, reporting only the differences.
#[track_caller]
pub fn assert_same_candles(actual: &[Candle], expected: &[Candle], what: &str) {
    if actual == expected {
        return;
    }
    let times = |list: &[Candle]| {
        list.iter()
            .map(|c| c.open_time)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (have, want) = (times(actual), times(expected));
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    let changed: Vec<_> = actual
        .iter()
        .filter(|a| {
            expected
                .iter()
                .any(|e| e.open_time == a.open_time && e != *a)
        })
        .map(|c| c.open_time)
        .collect();
    panic!(
        "{what}: {} candles, expected {}; missing open times {missing:?}; unexpected {extra:?}; \
         different values at {changed:?}; order {}",
        actual.len(),
        expected.len(),
        if actual.windows(2).all(|w| w[0].open_time < w[1].open_time) {
            "ascending"
        } else {
            "NOT ascending"
        }
    );
}

/// Polls `condition` every 20 ms for up to `seconds`; panics with `what` if it never holds.
pub async fn eventually(seconds: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], with a condition that has to wait for its answer.
pub async fn eventually_async<F, Fut>(seconds: u64, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seeds a store directly (not through the service) with `candles`.
pub async fn seed(backend: &Backend, candles: &[Candle]) {
    use candlecast::store::CandleStore;
    match backend {
        Backend::Mongo { uri, database } => {
            let uri = candlecast::store::MongoUri::parse(uri).unwrap();
            let store = candlecast::store::MongoStore::connect(&uri, database, "candles")
                .await
                .unwrap();
            store.upsert(candles).await.unwrap();
        }
        Backend::Sqlite { dir } => {
            let store = candlecast::store::SqliteStore::open(dir.path()).unwrap();
            store.upsert(candles).await.unwrap();
        }
    }
}

/// Stores the fake's whole history of every symbol, as a service that ran before would.
pub async fn seed_all(fake: &FakeExchange, backend: &Backend) {
    for symbol in SYMBOLS {
        seed(backend, &fake.history(symbol)).await;
    }
}

/// Merges candle lists by open time (later lists win), oldest first.
pub fn merged(lists: &[&[Candle]]) -> Vec<Candle> {
    let mut by_time = std::collections::BTreeMap::new();
    for list in lists {
        for candle in *list {
            by_time.insert(candle.open_time, candle.clone());
        }
    }
    by_time.into_values().collect()
}

/// The repository root, for tests that run the binary.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A websocket upgrade to `/{query}` that must be refused: its HTTP status and JSON
/// body.
pub async fn refused_upgrade(app: &TestApp, query: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(format!("ws://{}/{query}", app.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(other) => panic!("{query}: unexpected error {other}"),
        Ok(_) => panic!("{query} should have been refused"),
    }
}

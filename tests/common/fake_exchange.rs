//! A fake Binance USD-M futures exchange over real sockets: the combined kline stream
//! at `/market/stream`, and `GET /fapi/v1/klines` (any interval, built from its
//! minutes), `/fapi/v1/exchangeInfo`, `/fapi/v1/time` and `/fapi/v1/ping`, with
//! scripted candles.
//!
//! Its history is complete up to the current wall-clock minute (a new closed candle
//! appears every minute, as on the real exchange), so the service's "closed before
//! now" logic meets real timestamps. Tests add live closes with [`FakeExchange::close_next`].
//! The exchange's own clock (`serverTime`, the `E` of its frames, ban ends) may be
//! set off the wall clock with [`FakeExchange::set_clock_offset_ms`]; the history
//! always follows the wall clock.
#![allow(dead_code)] // shared by the tests and the fake_exchange example

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use candlecast::candle::Candle;
use serde_json::json;
use tokio::sync::broadcast;

// By path, so the examples' `#[path]` include of this file finds it too.
#[path = "fake_exchange/intervals.rs"]
pub mod intervals;
#[path = "fake_exchange/long_history.rs"]
mod long_history;
#[path = "fake_exchange/rest.rs"]
mod rest;
#[path = "fake_exchange/stream.rs"]
pub mod stream;

// Not every test binary compares rows with the fake's own.
#[allow(unused_imports)]
pub use rest::rest_row;

pub const MINUTE: i64 = 60_000;

/// What the fake served on one REST request.
#[derive(Debug, Clone)]
pub struct RestRequest {
    pub symbol: String,
    /// The `interval` asked for, as sent.
    pub interval: String,
    pub at: std::time::Instant,
    pub status: u16,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub limit: Option<usize>,
    /// Rows whose close time had passed when served (of the interval asked for).
    pub closed_rows: Vec<Candle>,
    /// The still-open candle, if it was appended.
    pub open_row: Option<Candle>,
}

/// What the fake tells its open stream connections.
#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    /// Drop the socket without a close frame.
    Drop,
    /// Keep the socket open but send nothing more on it.
    Silence,
    /// Send a websocket ping.
    Ping,
}

/// A scripted answer for the next REST request: status and optional `Retry-After`.
pub type RestFailure = (u16, Option<u64>);

/// What an acknowledgements-only connection gets about once a second instead of data.
const ACKS: [&str; 2] = [
    r#"{"result":null,"id":1}"#,
    r#"{"error":{"code":2,"msg":"Invalid request"},"id":2}"#,
];

/// A REST ban set by [`FakeExchange::ban_rest`].
#[derive(Debug, Clone, Copy)]
struct Ban {
    status: u16,
    until: std::time::Instant,
    /// The end of the ban on the exchange's clock, as the error message states it.
    until_ms: i64,
}

struct FakeState {
    history: Mutex<BTreeMap<String, Vec<Candle>>>,
    frames: broadcast::Sender<Frame>,
    replayed: Mutex<Vec<Candle>>,
    connections: AtomicUsize,
    /// Each stream connection's subscriptions and control messages, and the
    /// scripted answers to them.
    streams: stream::StreamState,
    rest_requests: Mutex<Vec<RestRequest>>,
    page_cap: AtomicUsize,
    replay_last_close_on_connect: AtomicBool,
    refuse_stream: AtomicBool,
    attempts: Mutex<Vec<std::time::Instant>>,
    open_connections: AtomicUsize,
    peak_open_connections: AtomicUsize,
    closed_by_client: AtomicUsize,
    pongs: AtomicUsize,
    rest_failures: Mutex<std::collections::VecDeque<RestFailure>>,
    acks_only: AtomicBool,
    /// Symbols listed by exchangeInfo besides the history's, or the history's with a
    /// chosen contract type: (symbol, contract type).
    listed: Mutex<Vec<(String, String)>>,
    /// exchangeInfo `status` of symbols that are not `TRADING` (`SETTLING`, …).
    statuses: Mutex<HashMap<String, String>>,
    fail_exchange_info: AtomicBool,
    /// Set by [`FakeExchange::hang_exchange_info`].
    hang_exchange_info: AtomicBool,
    exchange_info_requests: AtomicUsize,
    ban: Mutex<Option<Ban>>,
    /// The exchange's clock minus the wall clock, in milliseconds.
    clock_offset_ms: AtomicI64,
    /// The latest event time sent: tests close candles faster than the wall clock
    /// runs, and the exchange's clock runs with what it sent.
    latest_event_ms: AtomicI64,
    /// How many minutes the fake's history trails the wall clock.
    lag_minutes: i64,
    /// How many minutes of history a new fake has.
    history_minutes: i64,
    /// Set by [`FakeExchange::freeze`]: no wall-clock minute adds a candle any more.
    frozen: AtomicBool,
    /// How long each klines request waits before it is answered (ms).
    rest_delay_ms: std::sync::atomic::AtomicU64,
    /// Every REST request, as `path?query`.
    rest_log: Mutex<Vec<String>>,
}

/// Handle to a running fake exchange; it stops when dropped.
pub struct FakeExchange {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeExchange {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn base_price(symbol: &str) -> f64 {
    // A delivery contract (`BTCUSDT_260626`) trades near its perpetual.
    match symbol.split_once('_').map_or(symbol, |(pair, _)| pair) {
        "BTCUSDT" => 84_000.0,
        "ETHUSDT" => 3_000.0,
        "BNBUSDT" => 900.0,
        "SOLUSDT" => 140.0,
        "XRPUSDT" => 2.1,
        "币安人生USDT" => 0.3,
        _ => 100.0,
    }
}

/// The decimals of `symbol`'s prices and quantities, as its exchangeInfo lists
/// them (`pricePrecision`, `quantityPrecision`); quote volumes carry both.
pub fn precisions(symbol: &str) -> (usize, usize) {
    if base_price(symbol) < 10.0 {
        (4, 3)
    } else {
        (2, 3)
    }
}

/// `value` as Binance writes it: padded to `decimals` (`"84250.00"`). A value
/// with more digits than that (a test's own candle) is written in full instead,
/// so the fake never changes a value it is given.
pub fn exchange_decimal(value: f64, decimals: usize) -> String {
    let padded = format!("{value:.decimals$}");
    if padded.parse::<f64>() == Ok(value) {
        padded
    } else {
        format!("{value}")
    }
}

/// `candle`'s prices, base volumes and quote volumes as the fake writes them.
pub fn exchange_decimals(candle: &Candle) -> [String; 8] {
    let (price, quantity) = precisions(&candle.symbol);
    let quote = price + quantity;
    [
        exchange_decimal(candle.open, price),
        exchange_decimal(candle.high, price),
        exchange_decimal(candle.low, price),
        exchange_decimal(candle.close, price),
        exchange_decimal(candle.volume, quantity),
        exchange_decimal(candle.quote_volume, quote),
        exchange_decimal(candle.taker_buy_volume, quantity),
        exchange_decimal(candle.taker_buy_quote_volume, quote),
    ]
}

/// `value` rounded to `decimals` places.
fn round_to(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    (value * scale).round() / scale
}

/// A deterministic candle following `previous` (or opening the series at `open_time`).
fn next_candle(symbol: &str, open_time: i64, previous: Option<&Candle>) -> Candle {
    let open = previous.map_or(base_price(symbol), |p| p.close);
    let step = (open_time / MINUTE) as u64 ^ symbol.bytes().map(u64::from).sum::<u64>();
    // Every fifth candle closes exactly where the previous did (BUY on equality);
    // the rest move up or down by up to 0.2 %.
    let change = if step.is_multiple_of(5) {
        0.0
    } else {
        ((step.wrapping_mul(2_654_435_761) % 401) as f64 - 200.0) / 100_000.0
    };
    let (price, quantity) = precisions(symbol);
    let close = round_to(open * (1.0 + change), price);
    let quote = |volume: f64| round_to(volume * close, price + quantity);
    Candle {
        symbol: symbol.to_owned(),
        interval: "1m".to_owned(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open,
        high: round_to(open.max(close) * 1.0005, price),
        low: round_to(open.min(close) * 0.9995, price),
        close,
        volume: 100.0 + (step % 97) as f64,
        quote_volume: quote(100.0 + (step % 97) as f64),
        taker_buy_volume: 50.0,
        taker_buy_quote_volume: quote(50.0),
        trades: 1_000 + (step % 500) as i64,
    }
}

/// The candle after the newest of `candles` (or the one opening now, if none).
fn following(symbol: &str, candles: &[Candle]) -> Candle {
    let last = candles.last();
    let open_time = last.map_or(now_ms().div_euclid(MINUTE) * MINUTE, |c| {
        c.open_time + MINUTE
    });
    next_candle(symbol, open_time, last)
}

/// The combined-stream frame for `candle`, in Binance's shape (strings for numbers),
/// with the wall clock as event time; the fake's own frames use its own clock.
pub fn kline_frame(candle: &Candle, closed: bool) -> String {
    kline_frame_at(candle, closed, event_time_for(candle, closed, now_ms()))
}

/// The event time Binance would stamp on a frame of `candle` sent at `now`: never
/// before the candle opened, and after its close for the final frame. (Tests close
/// candles faster than the clock runs; the exchange's clock runs with them.)
pub fn event_time_for(candle: &Candle, closed: bool, now: i64) -> i64 {
    let earliest = if closed {
        candle.close_time + 1
    } else {
        candle.open_time
    };
    now.max(earliest)
}

/// Like [`kline_frame`], with event time `E` = `event_time` (epoch milliseconds).
pub fn kline_frame_at(candle: &Candle, closed: bool, event_time: i64) -> String {
    let [o, h, l, c, v, q, taker_v, taker_q] = exchange_decimals(candle);
    json!({
        "stream": format!("{}@kline_{}", candle.symbol.to_lowercase(), candle.interval),
        "data": {
            "e": "kline",
            "E": event_time,
            "s": candle.symbol,
            "k": {
                "t": candle.open_time, "T": candle.close_time, "s": candle.symbol, "i": candle.interval,
                "f": 100, "L": 200,
                "o": o, "c": c, "h": h, "l": l, "v": v, "n": candle.trades, "x": closed,
                "q": q, "V": taker_v, "Q": taker_q, "B": "0"
            }
        }
    })
    .to_string()
}

impl FakeState {
    /// Now on the exchange's clock: the wall clock plus the test's offset, or the
    /// latest event time sent if that is later.
    fn server_ms(&self) -> i64 {
        let wall = now_ms() + self.clock_offset_ms.load(Ordering::SeqCst);
        wall.max(self.latest_event_ms.load(Ordering::SeqCst))
    }

    /// Notes an event time sent on the stream.
    fn sent_event(&self, event_time: i64) {
        self.latest_event_ms.fetch_max(event_time, Ordering::SeqCst);
    }

    /// The active REST ban, if any; an expired one is forgotten.
    fn current_ban(&self) -> Option<Ban> {
        let mut ban = self.ban.lock().unwrap();
        if ban.is_some_and(|b| std::time::Instant::now() >= b.until) {
            *ban = None;
        }
        *ban
    }

    /// Appends the candles that closed since the last call, up to the current minute.
    /// A lagging fake's history is made once and then changes only by the test's
    /// closes, so the wall clock never adds a candle behind a test's back.
    fn catch_up(&self) {
        if self.frozen.load(Ordering::SeqCst) {
            return;
        }
        let current = now_ms().div_euclid(MINUTE) * MINUTE - self.lag_minutes * MINUTE;
        let mut history = self.history.lock().unwrap();
        if self.lag_minutes > 0 && history.values().all(|candles| !candles.is_empty()) {
            return;
        }
        for (symbol, candles) in history.iter_mut() {
            loop {
                let next_open = candles
                    .last()
                    .map_or(current - self.history_minutes * MINUTE, |c| {
                        c.open_time + MINUTE
                    });
                if next_open >= current {
                    break;
                }
                let candle = next_candle(symbol, next_open, candles.last());
                candles.push(candle);
            }
        }
    }
}

impl FakeExchange {
    /// Starts a fake on a free loopback port with two hours of one-minute history
    /// for each symbol.
    pub async fn start(symbols: &[&str]) -> Self {
        Self::start_on(symbols, ([127, 0, 0, 1], 0).into()).await
    }

    /// From now on no wall-clock minute adds a candle to the history: only the
    /// test's own closes do. A test that counts the messages its closes bring calls
    /// this, or a minute boundary during the test puts a candle in the history the
    /// stream never sent, which the service then repairs: one message more.
    pub fn freeze(&self) {
        self.state.catch_up();
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    /// Like [`FakeExchange::start`], on a chosen address.
    pub async fn start_on(symbols: &[&str], addr: SocketAddr) -> Self {
        Self::start_with(symbols, addr, 0, 120).await
    }

    /// Like [`FakeExchange::start`], with `minutes` of history per symbol.
    pub async fn start_sized(symbols: &[&str], minutes: i64) -> Self {
        Self::start_with(symbols, ([127, 0, 0, 1], 0).into(), 0, minutes).await
    }

    /// A fake whose history stops `lag_minutes` before now and then stays put, so
    /// candles it closes later are already in the past (REST serves them as closed:
    /// how a test makes candles close while the service is disconnected) and no
    /// minute boundary adds one. A service starting on it needs a seeded store, as
    /// the last `HISTORY_LEN + 1` minutes hold no candles.
    pub async fn start_lagging(symbols: &[&str], lag_minutes: i64) -> Self {
        Self::start_with(symbols, ([127, 0, 0, 1], 0).into(), lag_minutes, 120).await
    }

    async fn start_with(
        symbols: &[&str],
        addr: SocketAddr,
        lag_minutes: i64,
        history_minutes: i64,
    ) -> Self {
        // Room for a few ticks of hundreds of symbols.
        let (frames, _) = broadcast::channel(1 << 15);
        let state = Arc::new(FakeState {
            history: Mutex::new(
                symbols
                    .iter()
                    .map(|s| (s.to_string(), Vec::new()))
                    .collect(),
            ),
            frames,
            replayed: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            streams: Default::default(),
            rest_requests: Mutex::new(Vec::new()),
            page_cap: AtomicUsize::new(1500),
            replay_last_close_on_connect: AtomicBool::new(false),
            refuse_stream: AtomicBool::new(false),
            attempts: Mutex::new(Vec::new()),
            open_connections: AtomicUsize::new(0),
            peak_open_connections: AtomicUsize::new(0),
            closed_by_client: AtomicUsize::new(0),
            pongs: AtomicUsize::new(0),
            rest_failures: Mutex::new(Default::default()),
            acks_only: AtomicBool::new(false),
            listed: Mutex::new(Vec::new()),
            statuses: Mutex::new(HashMap::new()),
            fail_exchange_info: AtomicBool::new(false),
            hang_exchange_info: AtomicBool::new(false),
            exchange_info_requests: AtomicUsize::new(0),
            ban: Mutex::new(None),
            clock_offset_ms: AtomicI64::new(0),
            latest_event_ms: AtomicI64::new(0),
            lag_minutes,
            history_minutes,
            frozen: AtomicBool::new(false),
            rest_delay_ms: std::sync::atomic::AtomicU64::new(0),
            rest_log: Mutex::new(Vec::new()),
        });
        state.catch_up();
        let app = Router::new()
            .route("/market/stream", get(stream::stream))
            .route("/fapi/v1/klines", get(rest::klines))
            .route("/fapi/v1/exchangeInfo", get(rest::exchange_info))
            .route("/fapi/v1/time", get(rest::server_time))
            .route("/fapi/v1/ticker/price", get(rest::ticker_price))
            .route("/fapi/v1/ping", get(rest::ping))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                log_rest,
            ))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the fake exchange");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state, task }
    }

    /// `BINANCE_WS_URL` for the service.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/market/stream", self.addr)
    }

    /// `BINANCE_REST_URL` for the service.
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve at most `cap` rows per REST page, to make the service page.
    pub fn set_page_cap(&self, cap: usize) {
        self.state.page_cap.store(cap, Ordering::SeqCst);
    }

    /// When a stream connection subscribes to a stream (in its URL or by
    /// `SUBSCRIBE`), first send it the closing frame of that symbol's newest candle:
    /// the same candle the REST endpoint also returns.
    pub fn replay_last_close_on_connect(&self, on: bool) {
        self.state
            .replay_last_close_on_connect
            .store(on, Ordering::SeqCst);
    }

    /// While on, stream connection attempts get HTTP 503 instead of an upgrade.
    pub fn refuse_stream(&self, on: bool) {
        self.state.refuse_stream.store(on, Ordering::SeqCst);
    }

    /// Every closed candle of `symbol` so far, oldest first.
    pub fn history(&self, symbol: &str) -> Vec<Candle> {
        self.state.catch_up();
        self.state.history.lock().unwrap()[symbol].clone()
    }

    /// Replaces the history of `symbol` with candles the test chose (oldest first).
    pub fn set_history(&self, symbol: &str, candles: Vec<Candle>) {
        self.state
            .history
            .lock()
            .unwrap()
            .insert(symbol.to_owned(), candles);
    }

    /// Closes the next candle of `symbol`: adds it to the history and sends its open
    /// and closing frames on every stream connection. Returns the candle.
    pub fn close_next(&self, symbol: &str) -> Candle {
        let candle = self.close_next_silently(symbol);
        self.send_update(&candle, false);
        self.send_update(&candle, true);
        candle
    }

    /// Closes the next candle of `symbol` like [`FakeExchange::close_next`] (REST
    /// serves it) but sends no frame for it: Binance does not promise an `x:true`
    /// frame for every minute. Returns the candle.
    pub fn close_next_silently(&self, symbol: &str) -> Candle {
        self.state.catch_up();
        let mut history = self.state.history.lock().unwrap();
        let candles = history.get_mut(symbol).expect("symbol known to the fake");
        let candle = following(symbol, candles);
        candles.push(candle.clone());
        candle
    }

    /// Sends an open (`x:false`) frame of the candle after `symbol`'s newest one,
    /// without adding it to the history. Returns that candle.
    pub fn send_forming(&self, symbol: &str) -> Candle {
        self.state.catch_up();
        let candle = {
            let history = self.state.history.lock().unwrap();
            following(
                symbol,
                history.get(symbol).expect("symbol known to the fake"),
            )
        };
        self.send_update(&candle, false);
        candle
    }

    /// Sends a kline frame for `candle` on every stream connection, its event time
    /// on the exchange's clock.
    pub fn send_update(&self, candle: &Candle, closed: bool) {
        let event_time = event_time_for(candle, closed, self.state.server_ms());
        self.state.sent_event(event_time);
        self.send_raw(&kline_frame_at(candle, closed, event_time));
    }

    /// Sends any text on every stream connection.
    pub fn send_raw(&self, text: &str) {
        let _ = self.state.frames.send(Frame::Text(text.to_owned()));
    }

    /// Drops every open stream connection abruptly (no close frame).
    pub fn disconnect_all(&self) {
        let _ = self.state.frames.send(Frame::Drop);
    }

    /// The open stream connections stay open but go quiet, as Binance's retired
    /// endpoints do; later connections are served normally.
    pub fn silence_current(&self) {
        let _ = self.state.frames.send(Frame::Silence);
    }

    /// Pings every open stream connection; answers are counted by [`FakeExchange::pongs`].
    pub fn ping_all(&self) {
        let _ = self.state.frames.send(Frame::Ping);
    }

    /// Pongs received so far.
    pub fn pongs(&self) -> usize {
        self.state.pongs.load(Ordering::SeqCst)
    }

    /// Like Binance, send an update of each symbol's open candle every `every`, so a
    /// healthy stream is never quiet. Stops when the fake is dropped.
    pub fn tick(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                let updates: Vec<String> = {
                    let history = state.history.lock().unwrap();
                    history
                        .iter()
                        .filter_map(|(symbol, candles)| {
                            let last = candles.last()?;
                            let mut open = next_candle(symbol, last.open_time + MINUTE, Some(last));
                            open.trades = 0;
                            Some(kline_frame_at(
                                &open,
                                false,
                                event_time_for(&open, false, state.server_ms()),
                            ))
                        })
                        .collect()
                };
                for update in updates {
                    // With no connection open the update is simply not seen.
                    let _ = state.frames.send(Frame::Text(update));
                }
            }
        })
    }

    /// When each stream connection attempt arrived, refused or not.
    pub fn attempts(&self) -> Vec<std::time::Instant> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// Stream connections open now, the most that were open at once, and how many
    /// the service closed with a close frame.
    pub fn open_connections(&self) -> (usize, usize, usize) {
        (
            self.state.open_connections.load(Ordering::SeqCst),
            self.state.peak_open_connections.load(Ordering::SeqCst),
            self.state.closed_by_client.load(Ordering::SeqCst),
        )
    }

    /// The next REST requests fail with these statuses, in order.
    pub fn fail_rest(&self, failures: &[RestFailure]) {
        self.state
            .rest_failures
            .lock()
            .unwrap()
            .extend(failures.iter().copied());
    }

    /// Candles sent by [`FakeExchange::replay_last_close_on_connect`] for `symbol`.
    pub fn replayed(&self, symbol: &str) -> Vec<Candle> {
        self.state
            .replayed
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.symbol == symbol)
            .cloned()
            .collect()
    }

    /// Stream connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` stream connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.connections() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service never connected to the fake stream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every REST request served so far.
    pub fn rest_requests(&self) -> Vec<RestRequest> {
        self.state.rest_requests.lock().unwrap().clone()
    }

    /// While on, every stream connection (open or new) gets only `{"result":null,"id":1}`
    /// and an `Invalid request` error about once a second; kline frames (and anything
    /// else sent as text, the connect replay included) are not delivered to it.
    pub fn acks_only(&self, on: bool) {
        self.state.acks_only.store(on, Ordering::SeqCst);
    }

    /// Lists `symbol` in exchangeInfo with `contract_type` (`PERPETUAL`,
    /// `CURRENT_QUARTER`, …), or changes the contract type of a listed one. It gets
    /// no history: klines calls it an invalid symbol unless it was passed to `start`.
    pub fn list_symbol(&self, symbol: &str, contract_type: &str) {
        let mut listed = self.state.listed.lock().unwrap();
        listed.retain(|(s, _)| s != symbol);
        listed.push((symbol.to_owned(), contract_type.to_owned()));
    }

    /// Sets the exchangeInfo `status` of `symbol` (`TRADING` by default; `SETTLING`,
    /// `CLOSE`, `PENDING_TRADING`, … as a contract is delisted or not yet open).
    pub fn set_status(&self, symbol: &str, status: &str) {
        let mut statuses = self.state.statuses.lock().unwrap();
        statuses.insert(symbol.to_owned(), status.to_owned());
    }

    /// Lists `symbol` (perpetual, `TRADING`) with `minutes` of history up to now:
    /// a contract newly listed while the service runs. Its stream frames flow like
    /// the others' once subscribed.
    pub fn list_new(&self, symbol: &str, minutes: i64) {
        let now = now_ms().div_euclid(MINUTE) * MINUTE - self.state.lag_minutes * MINUTE;
        let mut candles: Vec<Candle> = Vec::new();
        for m in (1..=minutes).rev() {
            let candle = next_candle(symbol, now - m * MINUTE, candles.last());
            candles.push(candle);
        }
        self.set_history(symbol, candles);
        self.list_symbol(symbol, "PERPETUAL");
    }

    /// While on, `GET /fapi/v1/exchangeInfo` answers 503.
    pub fn fail_exchange_info(&self, on: bool) {
        self.state.fail_exchange_info.store(on, Ordering::SeqCst);
    }

    /// While on, `GET /fapi/v1/exchangeInfo` is accepted and never answered, as
    /// by an exchange that hangs.
    pub fn hang_exchange_info(&self, on: bool) {
        self.state.hang_exchange_info.store(on, Ordering::SeqCst);
    }

    /// `GET /fapi/v1/exchangeInfo` requests so far, failed ones included.
    pub fn exchange_info_requests(&self) -> usize {
        self.state.exchange_info_requests.load(Ordering::SeqCst)
    }

    /// For the next `retry_after_secs` seconds every klines request answers `status`
    /// (418 or 429) with `Retry-After: <seconds left>` and Binance's -1003 "IP banned
    /// until" body; recorded in [`FakeExchange::rest_requests`]. Replaces any ban;
    /// answers scripted by [`FakeExchange::fail_rest`] wait until it is over.
    pub fn ban_rest(&self, status: u16, retry_after_secs: u64) {
        assert!(
            StatusCode::from_u16(status).is_ok_and(|s| s.is_client_error()),
            "a ban answers a 4xx status, not {status}"
        );
        let until_ms = self.state.server_ms() + retry_after_secs as i64 * 1000;
        let until = std::time::Instant::now() + Duration::from_secs(retry_after_secs);
        *self.state.ban.lock().unwrap() = Some(Ban {
            status,
            until,
            until_ms,
        });
    }

    /// Every klines answer waits `ms` first (0: none), so tests can overlap requests.
    pub fn set_rest_delay_ms(&self, ms: u64) {
        self.state.rest_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every REST request so far (any endpoint), as `path?query`.
    pub fn rest_log(&self) -> Vec<String> {
        self.state.rest_log.lock().unwrap().clone()
    }

    /// Sets the exchange's clock to the wall clock plus `offset` milliseconds (default
    /// 0): `/fapi/v1/time`, `serverTime` and the `E` of the fake's frames follow it.
    pub fn set_clock_offset_ms(&self, offset: i64) {
        self.state.clock_offset_ms.store(offset, Ordering::SeqCst);
    }
}

/// Logs every REST request (not the stream's upgrades) before it is answered.
async fn log_rest(
    State(state): State<Arc<FakeState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    if uri.path().starts_with("/fapi") || uri.path().starts_with("/futures") {
        let logged = match uri.query() {
            Some(query) => format!("{}?{query}", uri.path()),
            None => uri.path().to_owned(),
        };
        state.rest_log.lock().unwrap().push(logged);
    }
    next.run(request).await
}

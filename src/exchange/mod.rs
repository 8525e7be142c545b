//! The Binance client: the combined kline streams (as few connections as Binance
//! allows, streams subscribed in paced batches; parse, reconnect with backoff, stale
//! watchdog, renewal before the 24-hour cut), the set of followed symbols, and REST
//! backfill of the closed candles the streams did not deliver.
//!
//! Every closed candle, from either path, goes to the hub (clients see it at once)
//! and to the store's write queue; the socket reader never waits for the database,
//! so it keeps reading, and answering the exchange's pings, whatever the store does.

mod backfill;
mod complete;
mod connection;
mod deep;
mod frames;
pub mod kline;
mod link;
mod pace;
mod requests;
mod rest;
mod seed;
mod stream;
mod symbols;
mod upstream;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span};
use url::Url;

use crate::candle::{Candle, Interval};
use crate::health::UpstreamHealth;
use crate::hub::{Hub, Newest};
use crate::metrics::Metrics;
use crate::store::{CandleStore, StoreWriter};
use crate::telemetry::Chain;

pub use deep::DEEP_WEIGHT_PER_MINUTE;
pub use pace::{INGEST_WEIGHT_PER_MINUTE, Pacer, klines_weight};
pub use requests::MAX_STREAMS_PER_CONNECTION;
pub use rest::{GaveUp, ListedSymbol, REST_PAGE_LIMIT, RestClient, RestError};
pub use stream::ConnectError;
pub use symbols::{SymbolCheck, TRADING, check_symbols, trading_symbols};
pub use watch::Impossible;

/// How to reach the exchange and when to give up on a connection, from
/// `BINANCE_WS_URL`, `BINANCE_REST_URL` and the `UPSTREAM_*` variables.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    /// The combined-stream endpoint, without the `streams` query.
    pub ws_url: Url,
    /// The REST base URL; klines are at `{rest_url}/fapi/v1/klines`.
    pub rest_url: Url,
    /// No kline for this long means the stream is dead.
    pub stale_after: Duration,
    /// The longest wait between reconnect attempts.
    pub backoff_max: Duration,
    /// A connection is renewed (make before break) at this age, ahead of Binance's
    /// 24-hour cut.
    pub max_age: Duration,
    /// How long startup waits for the first backfill before serving anyway.
    pub startup_backfill_timeout: Duration,
    /// Streams one connection carries at most: [`MAX_STREAMS_PER_CONNECTION`], as
    /// Binance allows (values outside `1..=1024` are clamped). Not configurable;
    /// tests lower it to see symbols spread over connections.
    pub streams_per_connection: usize,
}

/// What the exchange client follows: which symbols, at which interval, and how many
/// candles per symbol a full window needs.
#[derive(Debug, Clone)]
pub struct Market {
    /// The symbols followed from the start, upper case, in client order; those
    /// followed now are [`Exchange::followed`].
    pub symbols: Vec<String>,
    pub interval: Interval,
    /// The longest served interval (`INTERVALS`): the deep history fills its window.
    pub longest: Interval,
    /// Candles per symbol kept in memory (`HISTORY_MAX`).
    pub window_len: usize,
    /// `SYMBOLS=*`: the longer intervals' windows are seeded with the exchange's
    /// own candles of each interval ([`seed`]) instead of a deep base history.
    pub seed_windows: bool,
}

/// Why the upstream connection had to be re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectCause {
    /// Refused, timed out, TLS or HTTP failure while connecting.
    ConnectFailed,
    /// No data frame within `UPSTREAM_STALE_SECS`.
    Stale,
    /// The server sent a close frame.
    Closed,
    /// The socket ended without a close frame.
    Eof,
    /// A read or write error.
    Error,
    /// A `SUBSCRIBE` or `UNSUBSCRIBE` got no answer within 5 s.
    Unanswered,
}

impl ReconnectCause {
    /// The `cause` label of `upstream_reconnects`, also used in logs.
    pub fn label(self) -> &'static str {
        match self {
            ReconnectCause::ConnectFailed => "connect_failed",
            ReconnectCause::Stale => "stale",
            ReconnectCause::Closed => "closed",
            ReconnectCause::Eof => "eof",
            ReconnectCause::Error => "error",
            ReconnectCause::Unanswered => "unanswered",
        }
    }
}

/// Where closed candles came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Final (`x: true`) on the combined stream.
    Stream,
    /// A REST klines row closed on the exchange's clock.
    Rest,
}

/// What the service holds of one symbol when a repair is planned.
#[derive(Debug, Clone)]
struct ResumePoint {
    symbol: String,
    /// The newest candle held, if any.
    held: Option<Newest>,
}

/// Whether a backfill may leave out symbols that are being backfilled already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    /// For a new connection: a backfill still running checks whether it has caught
    /// up only after the connection opened, so it already covers the gap.
    SkipInFlight,
    /// For the store: a running backfill may have started after its gap.
    FetchAll,
}

/// The upstream side of the service; shared by the stream tasks and backfill tasks.
pub struct Exchange {
    market: Market,
    options: ExchangeOptions,
    /// The symbols whose candles are taken, and streams carried.
    followed: RwLock<upstream::Followed>,
    /// Changes to `followed`, on their way to the upstream task.
    changes: upstream::Changes,
    rest: RestClient,
    hub: Hub,
    store: Arc<dyn CandleStore>,
    writer: StoreWriter,
    metrics: Arc<Metrics>,
    health: Arc<UpstreamHealth>,
    /// How many backfills are running now, per symbol.
    in_flight: Mutex<HashMap<String, usize>>,
    /// Every backfill task, so shutdown waits for them.
    tasks: TaskTracker,
    /// Per symbol: when it last sent a kline, which minutes were checked.
    watch: Mutex<HashMap<String, watch::SymbolWatch>>,
    /// The exchange's clock minus ours, ms.
    clock_offset_ms: AtomicI64,
    /// Whether an impossible candle was logged already.
    logged_impossible: AtomicBool,
    /// Which kinds of non-kline frame were logged already.
    logged_frame_kinds: Mutex<HashSet<&'static str>>,
    /// Quiet symbols whose streams REST found to have missed candles, until the
    /// connection carrying them repairs that.
    stream_missed: Mutex<HashSet<String>>,
}

/// What the exchange client feeds and reports to.
pub struct Sinks {
    pub hub: Hub,
    /// Read for the store's newest candle when the write queue lost some.
    pub store: Arc<dyn CandleStore>,
    pub writer: StoreWriter,
    pub metrics: Arc<Metrics>,
    pub health: Arc<UpstreamHealth>,
}

impl Exchange {
    /// Builds the client.
    ///
    /// # Errors
    /// [`RestError::Client`] when the HTTP client cannot be built (no TLS roots).
    pub fn new(market: Market, options: ExchangeOptions, sinks: Sinks) -> Result<Self, RestError> {
        let rest = RestClient::new(
            &options.rest_url,
            market.interval.clone(),
            Arc::clone(&sinks.health),
        )?
        .with_notations(Arc::clone(sinks.hub.notations()))
        .with_pacer(Arc::new(Pacer::new(INGEST_WEIGHT_PER_MINUTE)));
        Ok(Self {
            followed: RwLock::new(upstream::Followed::new(&market.symbols)),
            changes: upstream::Changes::default(),
            market,
            options,
            rest,
            hub: sinks.hub,
            store: sinks.store,
            writer: sinks.writer,
            metrics: sinks.metrics,
            health: sinks.health,
            in_flight: Mutex::default(),
            tasks: TaskTracker::new(),
            watch: Mutex::default(),
            clock_offset_ms: AtomicI64::new(0),
            logged_impossible: AtomicBool::new(false),
            logged_frame_kinds: Mutex::default(),
            stream_missed: Mutex::default(),
        })
    }

    /// Runs until `cancel`: backfills once at start (reporting on `startup_done`), then
    /// streams over as many connections as the followed symbols need, each
    /// reconnecting with backoff and repairing its symbols' gap after each connect;
    /// and repairs the store after it had to drop queued candles.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        startup_done: oneshot::Sender<()>,
    ) {
        match self.rest.server_time().await {
            Ok(server_ms) => self.saw_exchange_time(server_ms),
            Err(err) => {
                debug!(error = %Chain(&err), "no server time from the exchange; trusting the local clock until the stream speaks")
            }
        }
        let startup = Arc::clone(&self);
        let resume = self.resume_points();
        let startup_cancel = cancel.clone();
        self.tasks.spawn(
            async move {
                startup
                    .backfill(resume, Overlap::SkipInFlight, &startup_cancel)
                    .await;
                let _ = startup_done.send(());
                // Only then the longer windows: startup and the base windows first.
                if startup.market.seed_windows {
                    let symbols = startup.market.symbols.clone();
                    startup
                        .seed_windows(&symbols, &startup_cancel)
                        .instrument(info_span!("seed"))
                        .await;
                    // Only once seeded: before, every bucket open at the start
                    // looks incomplete.
                    Arc::clone(&startup)
                        .complete_buckets(startup_cancel.clone())
                        .instrument(info_span!("complete"))
                        .await;
                } else {
                    startup
                        .deep_backfill(&startup_cancel)
                        .instrument(info_span!("backfill", reason = "deep"))
                        .await;
                }
            }
            .instrument(info_span!("backfill", reason = "startup")),
        );
        self.tasks
            .spawn(Arc::clone(&self).repair_store_gaps(cancel.clone()));

        self.upstream(&cancel).await;
        // Backfills stop at the cancellation; wait so their candles reach the queue.
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn resume_points(&self) -> Vec<ResumePoint> {
        self.resume_points_of(&self.followed())
    }

    /// What the service holds now of each of `symbols`.
    fn resume_points_of(&self, symbols: &[String]) -> Vec<ResumePoint> {
        symbols
            .iter()
            .map(|symbol| ResumePoint {
                symbol: symbol.clone(),
                held: self.hub.newest(symbol),
            })
            .collect()
    }

    /// Hands closed candles of the followed symbols to the hub and the store.
    /// A candle fetched by REST never replaces one the window holds, which came
    /// final from the stream (DESIGN.md §4): the held one is written instead.
    fn deliver(&self, mut candles: Vec<Candle>, source: Source) {
        {
            let followed = self.followed.read().expect("followed lock");
            candles.retain(|c| {
                c.interval == self.market.interval.name() && followed.contains(&c.symbol)
            });
        }
        if source == Source::Rest {
            for candle in &mut candles {
                if let Some(held) = self.hub.candle_at(&candle.symbol, candle.open_time) {
                    *candle = held;
                }
            }
        }
        if candles.is_empty() {
            return;
        }
        let mut built = Vec::new();
        self.hub.apply_building(&candles, &mut built);
        self.writer.enqueue(candles);
        // Seeded windows' buckets are stored too: a restart loads them whole.
        if self.market.seed_windows && !built.is_empty() {
            self.writer.enqueue(built);
        }
    }

    /// Counts a backfill of `symbol` as running, unless one is and `overlap` says
    /// it covers this one; returns whether this one should run.
    fn begin_backfill(&self, symbol: &str, overlap: Overlap) -> bool {
        let mut in_flight = self.in_flight.lock().expect("in_flight lock");
        let running = in_flight.entry(symbol.to_owned()).or_default();
        if *running > 0 && overlap == Overlap::SkipInFlight {
            debug!(symbol, "backfill already running; it covers this gap too");
            return false;
        }
        *running += 1;
        true
    }

    /// Counts a backfill of `symbol` as finished.
    fn end_backfill(&self, symbol: &str) {
        if let Some(running) = self
            .in_flight
            .lock()
            .expect("in_flight lock")
            .get_mut(symbol)
        {
            *running = running.saturating_sub(1);
        }
    }
}

/// `{base}?streams=btcusdt@kline_1m/ethusdt@kline_1m/…` (Binance wants the `@` and
/// `/` literally, so the query is written by hand rather than form-encoded). A
/// connection names only its first few streams so; see [`MAX_STREAMS_PER_CONNECTION`]
/// and the subscriptions in `operations.md`.
pub fn stream_url(base: &Url, symbols: &[String], interval: &Interval) -> Url {
    let streams: Vec<String> = symbols
        .iter()
        .map(|symbol| format!("{}@kline_{}", symbol.to_lowercase(), interval.name()))
        .collect();
    let separator = if base.query().is_some() { '&' } else { '?' };
    Url::parse(&format!("{base}{separator}streams={}", streams.join("/")))
        .expect("appending a query keeps a URL valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_url_lists_every_symbol_in_lower_case() {
        let base = Url::parse("wss://fstream.binance.com/market/stream").unwrap();
        let url = stream_url(
            &base,
            &["BTCUSDT".into(), "ETHUSDT".into()],
            &Interval::parse("1m").unwrap(),
        );
        assert_eq!(
            url.as_str(),
            "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
        );
        let with_query = Url::parse("ws://127.0.0.1:9/market/stream?x=1").unwrap();
        assert_eq!(
            stream_url(
                &with_query,
                &["SOLUSDT".into()],
                &Interval::parse("5m").unwrap()
            )
            .as_str(),
            "ws://127.0.0.1:9/market/stream?x=1&streams=solusdt@kline_5m"
        );
    }
}

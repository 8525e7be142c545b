//! The Binance client: the combined kline stream (connect, parse, reconnect with
//! backoff, stale watchdog, renewal before the 24-hour cut) and REST backfill of the
//! closed candles the stream did not deliver.
//!
//! Every closed candle, from either path, goes to the hub (clients see it at once)
//! and to the store's write queue; the socket reader never waits for the database,
//! so it keeps reading, and answering the exchange's pings, whatever the store does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use url::Url;

use crate::candle::{Candle, KlineUpdate, RestKline};
use crate::config::{Config, Interval};
use crate::hub::Hub;
use crate::store::{CandleStore, StoreWriter};
use crate::telemetry::{Counters, ReconnectCause};

/// Binance's maximum page size for `GET /fapi/v1/klines`.
pub const REST_PAGE_LIMIT: usize = 1500;
/// The first retry delay of every retry loop.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many already-received frames are handled as one batch.
const MAX_BATCH_FRAMES: usize = 64;
/// The longest `Retry-After` honoured; a longer ban is retried after this anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Socket, String>> + Send + 'a>>;

/// Capped exponential backoff with "equal jitter": each delay is drawn from
/// `[d/2, d]` where `d` doubles from the first delay up to the cap, so clients that
/// failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, never exceeds `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.min(cap);
        Self {
            first,
            cap,
            next: first,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.cap);
        ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `{base}?streams=btcusdt@kline_1m/ethusdt@kline_1m/…` (Binance wants the `@` and
/// `/` literally, so the query is written by hand rather than form-encoded).
pub fn stream_url(base: &Url, symbols: &[String], interval: &Interval) -> Url {
    let streams: Vec<String> = symbols
        .iter()
        .map(|symbol| format!("{}@kline_{}", symbol.to_ascii_lowercase(), interval.name()))
        .collect();
    let separator = if base.query().is_some() { '&' } else { '?' };
    Url::parse(&format!("{base}{separator}streams={}", streams.join("/")))
        .expect("appending a query keeps a URL valid")
}

/// How a stream connection ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Lost(ReconnectCause, String),
}

/// What the service holds of one symbol when a repair is planned.
type ResumePoint = (String, Option<(i64, bool)>);

/// Why a REST request failed, and how long the server asked us to wait.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct RestError {
    message: String,
    retry_after: Option<Duration>,
}

/// The upstream side of the service; shared by the stream task and backfill tasks.
pub struct Upstream {
    symbols: Vec<String>,
    interval: Interval,
    history_len: usize,
    stream_url: Url,
    klines_url: Url,
    stale_after: Duration,
    backoff_max: Duration,
    max_age: Duration,
    hub: Hub,
    store: Arc<dyn CandleStore>,
    writer: StoreWriter,
    counters: Arc<Counters>,
    http: reqwest::Client,
    /// How many backfills are running now, per symbol.
    in_flight: std::sync::Mutex<std::collections::HashMap<String, usize>>,
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

impl Upstream {
    /// Builds the client from the configuration.
    pub fn new(
        config: &Config,
        hub: Hub,
        store: Arc<dyn CandleStore>,
        writer: StoreWriter,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("candlecast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .build()?;
        let rest_base = config.binance_rest_url.as_str().trim_end_matches('/');
        Ok(Self {
            symbols: config.symbols.clone(),
            interval: config.interval.clone(),
            history_len: config.window_len(),
            stream_url: stream_url(&config.binance_ws_url, &config.symbols, &config.interval),
            klines_url: Url::parse(&format!("{rest_base}/fapi/v1/klines"))?,
            stale_after: config.upstream_stale_after,
            backoff_max: config.upstream_backoff_max,
            max_age: config.upstream_max_age,
            hub,
            store,
            writer,
            counters,
            http,
            in_flight: Default::default(),
        })
    }

    /// Runs until `cancel`: backfills once at start (reporting on `startup_done`), then
    /// streams, reconnecting with backoff and repairing the gap after each connect,
    /// and after the store had to drop queued candles.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        startup_done: oneshot::Sender<()>,
    ) {
        let mut repairs = JoinSet::new();
        let startup = Arc::clone(&self);
        let resume = self.resume_points();
        let startup_cancel = cancel.clone();
        repairs.spawn(
            async move {
                startup
                    .backfill(resume, Overlap::SkipInFlight, &startup_cancel)
                    .await;
                let _ = startup_done.send(());
            }
            .instrument(info_span!("backfill", reason = "startup")),
        );
        repairs.spawn(Arc::clone(&self).repair_store_gaps(cancel.clone()));

        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, self.backoff_max);
        loop {
            // Taken before connecting: the new stream may deliver newer candles before
            // the repair starts, and the gap lies behind what we held when it broke.
            let resume = self.resume_points();
            let connected = tokio::select! {
                _ = cancel.cancelled() => break,
                connected = self.connect() => connected,
            };
            let (cause, reason) = match connected {
                Ok(socket) => {
                    info!(url = %self.stream_url, "upstream connected");
                    let repair = Arc::clone(&self);
                    let repair_cancel = cancel.clone();
                    repairs.spawn(
                        async move {
                            repair
                                .backfill(resume, Overlap::SkipInFlight, &repair_cancel)
                                .await
                        }
                        .instrument(info_span!("backfill", reason = "reconnect")),
                    );
                    self.counters.upstream_connected.set(1);
                    let ended = self.stream(socket, &cancel, &mut backoff).await;
                    self.counters.upstream_connected.set(0);
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(cause, reason) => (cause, reason),
                    }
                }
                Err(reason) => (ReconnectCause::ConnectFailed, reason),
            };
            self.counters.reconnected(cause);
            let delay = backoff.next_delay();
            warn!(cause = cause.label(), reason = %reason, retry_in = ?delay, "upstream connection lost; reconnecting");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        repairs.shutdown().await;
    }

    async fn connect(&self) -> Result<Socket, String> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(self.stream_url.as_str()),
        )
        .await
        {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(err)) => Err(format!("connect failed: {err}")),
            Err(_) => Err(format!("connect timed out after {CONNECT_TIMEOUT:?}")),
        }
    }

    fn resume_points(&self) -> Vec<ResumePoint> {
        self.symbols
            .iter()
            .map(|symbol| (symbol.clone(), self.hub.newest_open_time(symbol)))
            .collect()
    }

    /// Reads `socket` until it is lost or `cancel` fires. At `max_age` a second
    /// connection is opened; once it delivers a frame it replaces the first, which is
    /// then closed, so no candle falls between the two.
    async fn stream(
        &self,
        mut socket: Socket,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut connected_at = Instant::now();
        let mut last_data = Instant::now();
        let mut renew_at = Instant::now() + self.max_age;
        let mut renewing: Option<Connecting<'_>> = None;
        let mut successor: Option<Socket> = None;
        loop {
            // A connection that has delivered data for a whole stale window is healthy:
            // the next failure starts again from the shortest delay.
            if last_data - connected_at >= self.stale_after {
                backoff.reset();
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    return Ended::Shutdown;
                }
                // Only data counts as life: a retired endpoint keeps TCP open and sends nothing.
                _ = tokio::time::sleep_until(last_data + self.stale_after) => {
                    let stale = format!("no data for {:?}", self.stale_after);
                    match successor.take() {
                        Some(next) => socket = self.switch(socket, next, &mut connected_at, &mut last_data, &mut renew_at),
                        None => return Ended::Lost(ReconnectCause::Stale, stale),
                    }
                }
                next = socket.next() => {
                    // Frames that have already arrived join this one, so candles that
                    // close together are published together and reach each client in
                    // one write.
                    let mut closed = Vec::new();
                    let mut next = next;
                    let mut lost = None;
                    let mut got_data = false;
                    for _ in 0..MAX_BATCH_FRAMES {
                        match next {
                            Some(Ok(Message::Text(text))) => {
                                got_data = true;
                                self.on_frame(text.as_str(), &mut closed);
                            }
                            Some(Ok(Message::Close(frame))) => {
                                let reason = frame.map_or_else(|| "close frame without reason".to_owned(), |f| format!("close frame {} {}", f.code, f.reason));
                                lost = Some((ReconnectCause::Closed, reason));
                                break;
                            }
                            Some(Ok(_)) => {} // pings are answered by tungstenite while we read
                            // A socket dropped without a close frame is an EOF, however
                            // tungstenite reports it.
                            Some(Err(tokio_tungstenite::tungstenite::Error::Protocol(
                                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                            ))) => {
                                lost = Some((ReconnectCause::Eof, "connection reset without a close frame".to_owned()));
                                break;
                            }
                            Some(Err(err)) => {
                                lost = Some((ReconnectCause::Error, format!("read error: {err}")));
                                break;
                            }
                            None => {
                                lost = Some((ReconnectCause::Eof, "connection ended without a close frame".to_owned()));
                                break;
                            }
                        }
                        match socket.next().now_or_never() {
                            Some(ready) => next = ready,
                            None => break,
                        }
                    }
                    if got_data {
                        last_data = Instant::now();
                        self.counters.upstream_data_now();
                    }
                    self.deliver(closed);
                    if let Some((cause, reason)) = lost {
                        match successor.take() {
                            Some(next) => socket = self.switch(socket, next, &mut connected_at, &mut last_data, &mut renew_at),
                            None => return Ended::Lost(cause, reason),
                        }
                    }
                }
                _ = tokio::time::sleep_until(renew_at), if renewing.is_none() && successor.is_none() => {
                    debug!(age = ?connected_at.elapsed(), "renewing the upstream connection");
                    renewing = Some(Box::pin(self.connect()));
                }
                connected = async { renewing.as_mut().expect("guarded").await }, if renewing.is_some() => {
                    renewing = None;
                    match connected {
                        Ok(next) => successor = Some(next),
                        Err(reason) => {
                            let retry = backoff.next_delay();
                            warn!(reason = %reason, retry_in = ?retry, "renewal connection failed; keeping the current one");
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
                next = async { successor.as_mut().expect("guarded").next().await }, if successor.is_some() => {
                    match next {
                        Some(Ok(Message::Text(text))) => {
                            let mut closed = Vec::new();
                            self.on_frame(text.as_str(), &mut closed);
                            self.counters.upstream_data_now();
                            self.deliver(closed);
                            let next = successor.take().expect("guarded");
                            socket = self.switch(socket, next, &mut connected_at, &mut last_data, &mut renew_at);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            successor = None;
                            let retry = backoff.next_delay();
                            warn!(retry_in = ?retry, "renewal connection ended before delivering; keeping the current one");
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
            }
        }
    }

    /// Makes `next` the current connection and closes `old` in the background.
    fn switch(
        &self,
        mut old: Socket,
        next: Socket,
        connected_at: &mut Instant,
        last_data: &mut Instant,
        renew_at: &mut Instant,
    ) -> Socket {
        Counters::add(&self.counters.renewals, 1);
        info!(age = ?connected_at.elapsed(), "upstream connection renewed");
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.close(None)).await;
        });
        *connected_at = Instant::now();
        *last_data = Instant::now();
        *renew_at = Instant::now() + self.max_age;
        next
    }

    /// Parses one frame; a closed candle is added to `closed`.
    fn on_frame(&self, text: &str, closed: &mut Vec<Candle>) {
        Counters::add(&self.counters.frames, 1);
        match KlineUpdate::from_combined_frame(text) {
            Ok(update) if update.closed => {
                Counters::add(&self.counters.closed_from_stream, 1);
                closed.push(update.candle);
            }
            Ok(_) => {} // still open: only closed candles matter
            Err(err) => {
                Counters::add(&self.counters.parse_errors, 1);
                let excerpt: String = text.chars().take(200).collect();
                warn!(error = %err, frame = %excerpt, "skipping upstream frame that is not a kline");
            }
        }
    }

    /// Hands closed candles of the configured symbols to the hub and the store.
    fn deliver(&self, mut candles: Vec<Candle>) {
        candles.retain(|c| c.interval == self.interval.name() && self.symbols.contains(&c.symbol));
        if candles.is_empty() {
            return;
        }
        self.hub.apply(&candles);
        self.writer.enqueue(candles);
    }

    /// Each time the store had to drop queued candles and then wrote again, fetches
    /// everything after the store's newest candle so the store has no hole.
    async fn repair_store_gaps(self: Arc<Self>, cancel: CancellationToken) {
        let lost = self.writer.lost_candles();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = lost.notified() => {}
            }
            Counters::add(&self.counters.store_repairs, 1);
            let mut resume = Vec::with_capacity(self.symbols.len());
            for symbol in &self.symbols {
                match self.store.latest(symbol, self.interval.name(), 1).await {
                    // `true`: the window is held in memory; only the store needs filling.
                    Ok(newest) => {
                        resume.push((symbol.clone(), newest.first().map(|c| (c.open_time, true))))
                    }
                    Err(err) => {
                        error!(symbol, error = %err, "cannot read the store's newest candle; repairing from the window");
                        resume.push((symbol.clone(), self.hub.newest_open_time(symbol)));
                    }
                }
            }
            warn!(
                "the store dropped queued candles; refetching everything after its newest candle"
            );
            self.backfill(resume, Overlap::FetchAll, &cancel)
                .instrument(info_span!("backfill", reason = "store"))
                .await;
        }
    }

    /// Fetches, per symbol, every closed candle after the newest one held up to now;
    /// while a window is not yet full, at least the last `HISTORY_MAX + 1`.
    async fn backfill(
        &self,
        resume: Vec<ResumePoint>,
        overlap: Overlap,
        cancel: &CancellationToken,
    ) {
        let jobs = resume.into_iter().filter_map(|(symbol, held)| {
            {
                let mut in_flight = self.in_flight.lock().expect("in_flight lock");
                let running = in_flight.entry(symbol.clone()).or_default();
                if *running > 0 && overlap == Overlap::SkipInFlight {
                    debug!(symbol, "backfill already running; it covers this gap too");
                    return None;
                }
                *running += 1;
            }
            Some(async move {
                self.backfill_symbol(&symbol, held, cancel).await;
                if let Some(running) = self
                    .in_flight
                    .lock()
                    .expect("in_flight lock")
                    .get_mut(&symbol)
                {
                    *running -= 1;
                }
            })
        });
        futures_util::future::join_all(jobs.collect::<Vec<_>>()).await;
    }

    async fn backfill_symbol(
        &self,
        symbol: &str,
        held: Option<(i64, bool)>,
        cancel: &CancellationToken,
    ) {
        let step = self.interval.millis();
        let now = chrono::Utc::now().timestamp_millis();
        let enough_history =
            self.interval.open_time_containing(now) - step * (self.history_len as i64 + 1);
        let mut start = match held {
            Some((newest, true)) => newest + step,
            Some((newest, false)) => (newest + step).min(enough_history),
            None => enough_history,
        };
        let mut fetched = 0usize;
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let still_open = self.interval.open_time_containing(now);
            if start >= still_open {
                break;
            }
            let Some(page) = self
                .fetch_with_retry(symbol, start, still_open - 1, cancel)
                .await
            else {
                return; // shutting down
            };
            let Some(last_open) = page.last().map(|c| c.open_time) else {
                break;
            };
            if last_open < start {
                break; // a server that does not honour startTime: stop rather than loop
            }
            start = last_open + step;
            let closed: Vec<Candle> = page.into_iter().filter(|c| c.close_time < now).collect();
            fetched += closed.len();
            Counters::add(&self.counters.backfilled, closed.len() as u64);
            self.deliver(closed);
        }
        if fetched > 0 {
            info!(symbol, candles = fetched, "backfill done");
        } else {
            debug!(symbol, "backfill: nothing missing");
        }
    }

    /// One page of klines, retried with backoff until it arrives or `cancel`; a
    /// `Retry-After` from the exchange (429, 418) is honoured.
    async fn fetch_with_retry(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
        cancel: &CancellationToken,
    ) -> Option<Vec<Candle>> {
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, self.backoff_max);
        loop {
            let error = match self.fetch_page(symbol, start, end).await {
                Ok(page) => return Some(page),
                Err(error) => error,
            };
            let wait = error
                .retry_after
                .map_or_else(|| backoff.next_delay(), |asked| asked.min(MAX_RETRY_AFTER));
            warn!(symbol, error = %error, retry_in = ?wait, "kline backfill request failed");
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn fetch_page(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Candle>, RestError> {
        let failed = |message: String| RestError {
            message,
            retry_after: None,
        };
        let response = self
            .http
            .get(self.klines_url.clone())
            .query(&[
                ("symbol", symbol.to_owned()),
                ("interval", self.interval.name().to_owned()),
                ("startTime", start.to_string()),
                ("endTime", end.to_string()),
                ("limit", REST_PAGE_LIMIT.to_string()),
            ])
            .send()
            .await
            .map_err(|err| failed(format!("GET {}: {err}", self.klines_url)))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(RestError {
                message: format!("GET {} answered {status}: {body}", self.klines_url),
                retry_after,
            });
        }
        let rows: Vec<RestKline> = response
            .json()
            .await
            .map_err(|err| failed(format!("GET {}: unreadable klines: {err}", self.klines_url)))?;
        rows.into_iter()
            .map(|row| Candle::from_rest_row(symbol, self.interval.name(), row))
            .collect::<Result<_, _>>()
            .map_err(|err| failed(format!("GET {}: bad kline row: {err}", self.klines_url)))
    }
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

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for _ in 0..50 {
            let mut run = backoff.clone();
            for ceiling in ceilings {
                let delay = run.next_delay().as_millis() as u64;
                assert!(
                    (ceiling / 2..=ceiling).contains(&delay),
                    "{delay} ms outside [{}, {ceiling}]",
                    ceiling / 2
                );
            }
        }
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn a_cap_below_the_first_delay_wins() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_millis(200));
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}

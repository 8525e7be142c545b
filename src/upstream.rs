//! The Binance client: the combined kline stream (connect, parse, reconnect, stale
//! watchdog) and REST backfill of the closed candles the stream did not deliver.
//!
//! Every closed candle, from either path, goes to the hub (clients see it at once)
//! and to the store's write queue; the socket reader never waits for the database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use url::Url;

use crate::candle::{Candle, KlineUpdate, RestKline};
use crate::config::{Config, Interval};
use crate::hub::Hub;
use crate::store::StoreWriter;
use crate::telemetry::Counters;

/// Binance's maximum page size for `GET /fapi/v1/klines`.
pub const REST_PAGE_LIMIT: usize = 1500;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that delivered frames for this long counts as healthy: the next
/// failure starts again from the shortest retry delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The upstream side of the service; shared by the stream task and backfill tasks.
pub struct Upstream {
    symbols: Vec<String>,
    interval: Interval,
    history_len: usize,
    stream_url: Url,
    klines_url: Url,
    stale_after: Duration,
    hub: Hub,
    writer: StoreWriter,
    counters: Arc<Counters>,
    http: reqwest::Client,
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

/// Why a stream connection ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Stale,
    Eof,
    Closed(String),
    Error(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Shutdown => f.write_str("shutting down"),
            Ended::Stale => f.write_str("no frame within the stale window"),
            Ended::Eof => f.write_str("connection closed without a close frame"),
            Ended::Closed(reason) => write!(f, "server sent close frame ({reason})"),
            Ended::Error(err) => write!(f, "read error: {err}"),
        }
    }
}

/// Why a REST request failed, and how long the server asked us to wait.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct RestError {
    message: String,
    retry_after: Option<Duration>,
}

impl Upstream {
    /// Builds the client from the configuration.
    pub fn new(
        config: &Config,
        hub: Hub,
        writer: StoreWriter,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("candlecast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .build()?;
        Ok(Self {
            symbols: config.symbols.clone(),
            interval: config.interval.clone(),
            history_len: config.history_len,
            stream_url: stream_url(&config.binance_ws_url, &config.symbols, &config.interval),
            klines_url: Url::parse(&format!(
                "{}/fapi/v1/klines",
                config.binance_rest_url.as_str().trim_end_matches('/')
            ))?,
            stale_after: config.upstream_stale_after,
            hub,
            writer,
            counters,
            http,
        })
    }

    /// Runs until `cancel`: backfills once at start (reporting on `startup_done`), then
    /// streams, reconnecting with backoff and repairing the gap after each connect.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        startup_done: oneshot::Sender<()>,
    ) {
        let mut repairs = JoinSet::new();
        let resume = self.resume_points();
        let startup = Arc::clone(&self);
        let startup_cancel = cancel.clone();
        repairs.spawn(
            async move {
                startup.backfill(resume, &startup_cancel).await;
                let _ = startup_done.send(());
            }
            .instrument(info_span!("backfill", reason = "startup")),
        );

        let mut delay = FIRST_RETRY_DELAY;
        loop {
            // Taken before connecting: the new stream may deliver newer candles before
            // the repair starts, and the gap lies behind what we held when it broke.
            let resume = self.resume_points();
            let connected = tokio::select! {
                _ = cancel.cancelled() => break,
                connected = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(self.stream_url.as_str())) => connected,
            };
            let failure = match connected {
                Ok(Ok((socket, _response))) => {
                    info!(url = %self.stream_url, "upstream connected");
                    let repair = Arc::clone(&self);
                    let repair_cancel = cancel.clone();
                    repairs.spawn(
                        async move { repair.backfill(resume, &repair_cancel).await }
                            .instrument(info_span!("backfill", reason = "connect")),
                    );
                    let started = tokio::time::Instant::now();
                    let ended = self.read(socket, &cancel).await;
                    if matches!(ended, Ended::Shutdown) {
                        break;
                    }
                    if started.elapsed() >= HEALTHY_AFTER {
                        delay = FIRST_RETRY_DELAY;
                    }
                    ended.to_string()
                }
                Ok(Err(err)) => format!("connect failed: {err}"),
                Err(_) => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
            };
            Counters::add(&self.counters.reconnects, 1);
            warn!(cause = %failure, retry_in = ?delay, "upstream connection lost; reconnecting");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
        repairs.shutdown().await;
    }

    fn resume_points(&self) -> Vec<(String, Option<(i64, bool)>)> {
        self.symbols
            .iter()
            .map(|symbol| (symbol.clone(), self.hub.newest_open_time(symbol)))
            .collect()
    }

    async fn read(
        &self,
        mut socket: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        cancel: &CancellationToken,
    ) -> Ended {
        loop {
            // Reading continuously is also what answers the exchange's pings.
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = socket.close(None).await;
                    return Ended::Shutdown;
                }
                next = tokio::time::timeout(self.stale_after, socket.next()) => next,
            };
            match next {
                Err(_) => return Ended::Stale,
                Ok(None) => return Ended::Eof,
                Ok(Some(Err(err))) => return Ended::Error(err.to_string()),
                Ok(Some(Ok(Message::Text(text)))) => self.on_frame(text.as_str()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map_or_else(
                        || "no reason".to_owned(),
                        |f| format!("{} {}", f.code, f.reason),
                    ));
                }
                Ok(Some(Ok(_))) => {} // pings are answered by tungstenite; pongs and binary are ignored
            }
        }
    }

    fn on_frame(&self, text: &str) {
        Counters::add(&self.counters.frames, 1);
        match KlineUpdate::from_combined_frame(text) {
            Ok(update) if update.closed => {
                Counters::add(&self.counters.closed_from_stream, 1);
                self.deliver(vec![update.candle]);
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

    /// Fetches, per symbol, every closed candle after the newest one held up to now;
    /// while a window is not yet full, at least the last `history_len + 1`.
    async fn backfill(
        &self,
        resume: Vec<(String, Option<(i64, bool)>)>,
        cancel: &CancellationToken,
    ) {
        let jobs = resume
            .into_iter()
            .map(|(symbol, held)| async move { self.backfill_symbol(&symbol, held, cancel).await });
        futures_util::future::join_all(jobs).await;
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

    /// One page of klines, retried with capped backoff until it arrives or `cancel`.
    async fn fetch_with_retry(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
        cancel: &CancellationToken,
    ) -> Option<Vec<Candle>> {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let error = match self.fetch_page(symbol, start, end).await {
                Ok(page) => return Some(page),
                Err(error) => error,
            };
            let wait = error
                .retry_after
                .unwrap_or(delay)
                .min(Duration::from_secs(300));
            warn!(symbol, error = %error, retry_in = ?wait, "kline backfill request failed");
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
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
}

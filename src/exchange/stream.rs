//! One combined-stream connection at a time: reading frames, the stale watchdog, and
//! renewal (make before break) ahead of Binance's 24-hour cut.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::kline::{KlineUpdate, frame_kind};
use super::{Exchange, ReconnectCause, Source};
use crate::candle::Candle;
use crate::metrics::KindLabel;
use crate::retry::Backoff;
use crate::telemetry::Chain;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many already-received frames are handled as one batch.
const MAX_BATCH_FRAMES: usize = 64;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Socket, ConnectError>> + Send + 'a>>;

/// Why a stream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed")]
    Failed(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
}

/// How a stream connection ended.
#[derive(Debug)]
pub(super) enum Ended {
    Shutdown,
    /// Lost, why, and the details for the log line.
    Lost(ReconnectCause, String),
}

impl Exchange {
    /// Opens a combined-stream connection, within `CONNECT_TIMEOUT`.
    pub(super) async fn connect(&self) -> Result<Socket, ConnectError> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(self.stream_url.as_str()),
        )
        .await
        {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(err)) => Err(ConnectError::Failed(Box::new(err))),
            Err(_) => Err(ConnectError::TimedOut(CONNECT_TIMEOUT)),
        }
    }

    /// Reads `socket` until it is lost or `cancel` fires. At `max_age` a second
    /// connection is opened; once it delivers a frame it replaces the first, which is
    /// then closed, so no candle falls between the two.
    pub(super) async fn stream(
        self: &Arc<Self>,
        mut socket: Socket,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut connected_at = Instant::now();
        let mut last_data = Instant::now();
        let mut renew_at = Instant::now() + self.options.max_age;
        let mut renewing: Option<Connecting<'_>> = None;
        let mut successor: Option<Socket> = None;
        let every = (self.options.stale_after / 2).max(Duration::from_millis(250));
        let mut quiet_check = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            // A connection that has delivered data for a whole stale window is healthy:
            // the next failure starts again from the shortest delay.
            if last_data - connected_at >= self.options.stale_after {
                backoff.reset();
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                    return Ended::Shutdown;
                }
                _ = quiet_check.tick() => {
                    if self.check_quiet(cancel) && renewing.is_none() && successor.is_none() {
                        renew_at = Instant::now();
                    }
                }
                // Only klines count as life: a retired endpoint keeps TCP open and
                // sends nothing, a broken one only acknowledgements.
                _ = tokio::time::sleep_until(last_data + self.options.stale_after) => {
                    let stale = format!("no data for {:?}", self.options.stale_after);
                    match successor.take() {
                        Some(next) => socket = self.switch(socket, next, &mut connected_at, &mut last_data, &mut renew_at),
                        None => return Ended::Lost(ReconnectCause::Stale, stale),
                    }
                }
                next = socket.next() => {
                    // Frames that have already arrived join this one, so candles that
                    // close together are published together and reach each client in
                    // one write.
                    let mut batch = Batch::default();
                    let mut next = next;
                    let mut lost = None;
                    for _ in 0..MAX_BATCH_FRAMES {
                        match next {
                            Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), &mut batch),
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
                    if batch.klines > 0 {
                        last_data = Instant::now();
                    }
                    self.finish(batch, cancel);
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
                        Err(err) => {
                            let retry = backoff.next_delay();
                            warn!(reason = %Chain(&err), retry_in = ?retry, "renewal connection failed; keeping the current one");
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
                next = async { successor.as_mut().expect("guarded").next().await }, if successor.is_some() => {
                    match next {
                        Some(Ok(Message::Text(text))) => {
                            let mut batch = Batch::default();
                            self.on_frame(text.as_str(), &mut batch);
                            let delivered = batch.klines > 0;
                            self.finish(batch, cancel);
                            // Only a kline proves the new connection streams.
                            if delivered {
                                let next = successor.take().expect("guarded");
                                socket = self.switch(socket, next, &mut connected_at, &mut last_data, &mut renew_at);
                            }
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
        self.metrics.renewals.inc();
        info!(age = ?connected_at.elapsed(), "upstream connection renewed");
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.close(None)).await;
        });
        *connected_at = Instant::now();
        *last_data = Instant::now();
        *renew_at = Instant::now() + self.options.max_age;
        next
    }

    /// Parses one frame into `batch`. A frame that is not a kline event is counted
    /// by kind, and the first of each kind is logged.
    fn on_frame(&self, text: &str, batch: &mut Batch) {
        self.metrics.frames.inc();
        match KlineUpdate::from_combined_frame(text) {
            Ok(update) => {
                // The frame's event time sets the exchange's clock when it fits the
                // candle it carries (Binance stamps a kline within its span, the
                // final one just after it) and is within a day of ours; the candle
                // is then judged by that clock, so an impossible one cannot move it.
                if let Some(event_time) = update.event_time
                    && plausible_event_time(&update.candle, event_time)
                {
                    self.saw_exchange_time(event_time);
                }
                if !self.is_possible(&update.candle, "stream") {
                    return;
                }
                self.hub
                    .notations()
                    .learn(&update.candle.symbol, update.notation);
                batch.klines += 1;
                let newest = batch
                    .seen
                    .entry(update.candle.symbol.clone())
                    .or_insert(i64::MIN);
                *newest = (*newest).max(update.candle.open_time);
                if update.closed {
                    self.metrics.closed_from_stream.inc();
                    batch.closed.push(update.candle);
                } else {
                    // Only the newest state of each symbol's forming candle matters.
                    match batch.forming.entry(update.candle.symbol.clone()) {
                        Entry::Occupied(mut held)
                            if held.get().open_time <= update.candle.open_time =>
                        {
                            held.insert(update.candle);
                        }
                        Entry::Occupied(_) => {}
                        Entry::Vacant(slot) => {
                            slot.insert(update.candle);
                        }
                    }
                }
            }
            Err(err) => {
                self.metrics.parse_errors.inc();
                let kind = frame_kind(text);
                self.metrics
                    .ignored_frames
                    .get_or_create(&KindLabel { kind })
                    .inc();
                if self
                    .logged_frame_kinds
                    .lock()
                    .expect("kinds lock")
                    .insert(kind)
                {
                    let excerpt: String = text.chars().take(200).collect();
                    warn!(kind, error = %err, frame = %excerpt, "skipping upstream frames that are not klines (first of its kind; see upstream_ignored_frames)");
                }
            }
        }
    }

    /// After a batch: the health, the closed candles to the hub and the store, the
    /// forming ones to live clients, then the minutes the stream skipped.
    fn finish(self: &Arc<Self>, batch: Batch, cancel: &CancellationToken) {
        if batch.klines > 0 {
            self.health.data_now();
        }
        self.deliver(batch.closed, Source::Stream);
        if !batch.forming.is_empty() {
            let forming: Vec<Candle> = batch.forming.into_values().collect();
            self.hub.forming(&forming);
        }
        self.check_skipped(batch.seen, cancel);
    }
}

/// Whether `event_time` (ms since the epoch) can be the exchange's stamp on a frame
/// of `candle`: not before it opened, not over a minute after it closed, and
/// within a day of the local clock.
fn plausible_event_time(candle: &Candle, event_time: i64) -> bool {
    const DAY_MS: i64 = 86_400_000;
    let local = chrono::Utc::now().timestamp_millis();
    (candle.open_time..=candle.close_time + 60_000).contains(&event_time)
        && (event_time - local).abs() <= DAY_MS
}

/// What one read of the socket brought.
#[derive(Default)]
struct Batch {
    /// Kline events parsed (forming or closed).
    klines: usize,
    closed: Vec<Candle>,
    /// The newest forming candle per symbol.
    forming: HashMap<String, Candle>,
    /// The newest open time seen per symbol.
    seen: HashMap<String, i64>,
}

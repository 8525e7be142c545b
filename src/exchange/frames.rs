//! What arrives on a link: kline frames, read in batches so that candles closing
//! together are published together; the answers to the link's control messages;
//! and how the link ended, when it did.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::kline::{KlineUpdate, frame_kind};
use super::link::Link;
use super::requests::Answer;
use super::{Exchange, ReconnectCause, Source};
use crate::candle::Candle;
use crate::metrics::{KindLabel, ReasonLabel};

/// At most this many already-received frames are handled as one batch.
const MAX_BATCH_FRAMES: usize = 64;

/// Why a link is given up, and the details for the log line.
pub(super) type Lost = (ReconnectCause, String);

impl Exchange {
    /// Handles `first` and the messages already waiting behind it on `link`: klines
    /// to the hub and the store, answers to the link's requests. Frames that have
    /// already arrived join the first, so candles that close together are published
    /// together and reach each client in one write.
    ///
    /// # Errors
    /// The link ended (close frame, EOF, read error).
    pub(super) fn read(
        self: &Arc<Self>,
        link: &mut Link,
        first: Option<Result<Message, tungstenite::Error>>,
        cancel: &CancellationToken,
    ) -> Result<(), Lost> {
        let mut batch = Batch::default();
        let mut next = first;
        let mut lost = None;
        for read in 1.. {
            match next {
                Some(Ok(Message::Text(text))) => match link.requests.answer(text.as_str()) {
                    Some(answer) => self.on_answer(link, answer),
                    None => self.on_frame(text.as_str(), &mut batch),
                },
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map_or_else(
                        || "close frame without reason".to_owned(),
                        |f| format!("close frame {} {}", f.code, f.reason),
                    );
                    lost = Some((ReconnectCause::Closed, reason));
                    break;
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite while we read
                // A socket dropped without a close frame is an EOF, however
                // tungstenite reports it.
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => {
                    lost = Some((
                        ReconnectCause::Eof,
                        "connection reset without a close frame".to_owned(),
                    ));
                    break;
                }
                Some(Err(err)) => {
                    lost = Some((ReconnectCause::Error, format!("read error: {err}")));
                    break;
                }
                None => {
                    lost = Some((
                        ReconnectCause::Eof,
                        "connection ended without a close frame".to_owned(),
                    ));
                    break;
                }
            }
            // A frame taken from the socket is handled: the batch ends before
            // taking one it has no room for.
            if read == MAX_BATCH_FRAMES {
                break;
            }
            match link.socket.next().now_or_never() {
                Some(ready) => next = ready,
                None => break,
            }
        }
        if batch.klines > 0 {
            link.delivered = true;
            link.last_data = Instant::now();
        }
        self.finish(batch, cancel);
        lost.map_or(Ok(()), Err)
    }

    /// Notes the exchange's answer to one of `link`'s requests. A refusal is counted,
    /// logged once until a request is accepted again, and asked again after a delay.
    fn on_answer(&self, link: &mut Link, answer: Answer) {
        match &answer {
            Answer::Accepted(request) => {
                debug!(
                    method = request.method.name(),
                    streams = request.symbols.len(),
                    "request accepted"
                );
                if link.accepted() {
                    info!("the exchange accepts subscriptions again");
                }
            }
            Answer::Refused(request, code, msg) => {
                self.metrics
                    .subscription_failures
                    .get_or_create(&ReasonLabel { reason: "refused" })
                    .inc();
                let delay = link.refused(&answer);
                let first = request.symbols.first().map_or("", String::as_str);
                if std::mem::replace(&mut link.warned, true) {
                    debug!(method = request.method.name(), code, msg, streams = request.symbols.len(), first, retry_in = ?delay, "the exchange refused a request again");
                } else {
                    warn!(method = request.method.name(), code, msg, streams = request.symbols.len(), first, retry_in = ?delay, "the exchange refused a request; asking again (logged once until one is accepted; see upstream_subscription_failures)");
                }
            }
        }
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

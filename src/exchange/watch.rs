//! What the stream's frames tell about the stream itself: the exchange's clock,
//! candles that cannot be right, minutes the stream moved past without their close,
//! and symbols gone quiet while others flow.
//!
//! Binance does not promise a final (`x: true`) frame for every minute, and one
//! symbol of a combined stream can go quiet while the others flow (DESIGN.md §5):
//! whatever the stream skipped is fetched from REST as soon as it is noticed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::{Exchange, Overlap, ResumePoint};
use crate::candle::Candle;

/// How far ahead of the exchange's clock a candle may open before it is refused.
const MAX_FUTURE_MS: i64 = 60_000;

/// What the exchange client knows of one symbol's stream.
#[derive(Debug)]
pub(super) struct SymbolWatch {
    /// When the last kline (forming or closed) of the symbol arrived.
    last_kline: Instant,
    /// The newest open time whose predecessors were already checked.
    checked_through: i64,
    /// Whether the symbol is quiet now (logged once per quiet spell).
    quiet: bool,
    /// When REST was last asked to catch the quiet symbol up.
    caught_up_at: Option<Instant>,
}

impl SymbolWatch {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            last_kline: now,
            checked_through: i64::MIN,
            quiet: false,
            caught_up_at: None,
        }
    }
}

/// Why a candle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Impossible {
    #[error("open time {0} is not on the interval's grid")]
    Misaligned(i64),
    #[error("close time {close_time} is not open time {open_time} + interval − 1")]
    CloseTime { open_time: i64, close_time: i64 },
    #[error("open time {open_time} is in the future (exchange time {now})")]
    Future { open_time: i64, now: i64 },
}

impl Exchange {
    /// Now on the exchange's clock, ms since the epoch: the local clock corrected
    /// by the offset seen in the stream's event times and REST's server time.
    pub(super) fn exchange_now(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Notes the exchange's time `exchange_ms` as of now.
    pub(super) fn saw_exchange_time(&self, exchange_ms: i64) {
        let offset = exchange_ms - chrono::Utc::now().timestamp_millis();
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Checks the rules every candle of the interval obeys (Binance's klines docs):
    /// its open time on the interval's grid, its close time one interval later less
    /// one ms, and no more than a minute in the exchange's future.
    pub(super) fn check_candle(&self, candle: &Candle) -> Result<(), Impossible> {
        let interval = &self.market.interval;
        if interval.open_time_containing(candle.open_time) != candle.open_time {
            return Err(Impossible::Misaligned(candle.open_time));
        }
        if candle.close_time != candle.open_time + interval.millis() - 1 {
            return Err(Impossible::CloseTime {
                open_time: candle.open_time,
                close_time: candle.close_time,
            });
        }
        let now = self.exchange_now();
        if candle.open_time > now + MAX_FUTURE_MS {
            return Err(Impossible::Future {
                open_time: candle.open_time,
                now,
            });
        }
        Ok(())
    }

    /// Keeps the candles that can be right (see [`Exchange::is_possible`]).
    pub(super) fn possible(&self, mut candles: Vec<Candle>, source: &'static str) -> Vec<Candle> {
        candles.retain(|candle| self.is_possible(candle, source));
        candles
    }

    /// Whether `candle` can be right; one that cannot is counted, and the first
    /// such is logged.
    pub(super) fn is_possible(&self, candle: &Candle, source: &'static str) -> bool {
        match self.check_candle(candle) {
            Ok(()) => true,
            Err(why) => {
                self.metrics.rejected_candles.inc();
                if !self.logged_impossible.swap(true, Ordering::Relaxed) {
                    warn!(symbol = %candle.symbol, source, reason = %why, "refusing a candle that cannot be right (logged once; see upstream_rejected_candles)");
                }
                false
            }
        }
    }

    /// Resets the silence clocks of `symbols`, for a new connection or subscription.
    pub(super) fn watch_from(&self, symbols: &[String], now: Instant) {
        let mut watch = self.watch.lock().expect("watch lock");
        for symbol in symbols {
            watch
                .entry(symbol.clone())
                .and_modify(|w| w.last_kline = now)
                .or_insert_with(|| SymbolWatch::new(now));
        }
    }

    /// After a batch of frames whose newest kline per symbol opened at `seen`: any
    /// minute before it that the window lacks was skipped by the stream, and is
    /// fetched from REST now, once per new open time.
    pub(super) fn check_skipped(
        self: &Arc<Self>,
        seen: HashMap<String, i64>,
        cancel: &CancellationToken,
    ) {
        let step = self.market.interval.millis();
        let now = Instant::now();
        for (symbol, open_time) in seen {
            {
                let mut watch = self.watch.lock().expect("watch lock");
                let entry = watch
                    .entry(symbol.clone())
                    .or_insert_with(|| SymbolWatch::new(now));
                entry.last_kline = now;
                if entry.quiet {
                    entry.quiet = false;
                    info!(symbol, "symbol flows again");
                }
                if open_time <= entry.checked_through {
                    continue;
                }
                entry.checked_through = open_time;
            }
            let from = open_time - step * self.market.window_len as i64;
            let missing = self.hub.missing(&symbol, from, open_time, step);
            let Some(&first) = missing.first() else {
                continue;
            };
            if !self.begin_backfill(&symbol, Overlap::SkipInFlight) {
                continue;
            }
            self.metrics.skipped_minutes.inc_by(missing.len() as u64);
            warn!(
                symbol,
                minutes = missing.len(),
                first,
                "the stream moved past candles it did not close; fetching them from REST"
            );
            let exchange = Arc::clone(self);
            let cancel = cancel.clone();
            self.tasks.spawn(
                async move {
                    exchange
                        .fetch_range(&symbol, first, Some(open_time), &cancel)
                        .await;
                    exchange.end_backfill(&symbol);
                }
                .instrument(info_span!("backfill", reason = "skipped")),
            );
        }
    }

    /// On a timer, for the `symbols` of one connection: each that sent nothing for
    /// `UPSTREAM_STALE_SECS` while the connection delivers is counted, logged once,
    /// and caught up from REST at most once per `UPSTREAM_STALE_SECS`. Returns those
    /// of them whose catch-up found candles the stream did not deliver (since the
    /// last call): their streams need repair.
    pub(super) fn check_quiet(
        self: &Arc<Self>,
        symbols: &[String],
        cancel: &CancellationToken,
    ) -> Vec<String> {
        let stale = self.options.stale_after;
        let now = Instant::now();
        let mut quiet = Vec::new();
        {
            let mut watch = self.watch.lock().expect("watch lock");
            for symbol in symbols {
                let Some(entry) = watch.get_mut(symbol) else {
                    continue;
                };
                if now.duration_since(entry.last_kline) < stale {
                    continue;
                }
                if !entry.quiet {
                    entry.quiet = true;
                    self.metrics.quiet_symbols.inc();
                    warn!(symbol, silent_for = ?now.duration_since(entry.last_kline), "no klines for this symbol while others flow; catching it up from REST");
                }
                if entry
                    .caught_up_at
                    .is_none_or(|at| now.duration_since(at) >= stale)
                {
                    entry.caught_up_at = Some(now);
                    quiet.push(symbol.clone());
                }
            }
        }
        for symbol in quiet {
            let exchange = Arc::clone(self);
            let cancel = cancel.clone();
            let held = self.hub.newest(&symbol);
            self.tasks.spawn(
                async move {
                    let before = held.map(|newest| newest.open_time);
                    let resume = vec![ResumePoint {
                        symbol: symbol.clone(),
                        held,
                    }];
                    exchange
                        .backfill(resume, Overlap::SkipInFlight, &cancel)
                        .await;
                    // Only candles newer than those held show the stream missed
                    // some: a window not yet full is fetched again from its start.
                    let after = exchange.hub.newest(&symbol).map(|newest| newest.open_time);
                    if after > before {
                        exchange
                            .stream_missed
                            .lock()
                            .expect("missed lock")
                            .insert(symbol);
                    }
                }
                .instrument(info_span!("backfill", reason = "quiet")),
            );
        }
        let mut missed = self.stream_missed.lock().expect("missed lock");
        symbols
            .iter()
            .filter(|symbol| missed.remove(*symbol))
            .cloned()
            .collect()
    }
}

//! One coin's window of recent closed candles at one interval, the deeper series of
//! closes its indicators are computed on, and its rendering into the client
//! messages of DESIGN.md §3 and the `candles` format.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use chrono_tz::Tz;

use super::View;
use super::message::{CandleEntry, CandlesMessage, CoinMessage, Format, IndicatorValues};
use crate::candle::{Candle, Indicator, IndicatorValue, Interval, Operation};

/// An indicator's values over a window's closes, oldest first.
type Series = Arc<Vec<Option<IndicatorValue>>>;

/// What an insert changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Change {
    /// The candles clients see (or the reference candle behind them).
    pub(super) shown: bool,
    /// Anything, including closes older than the window (indicator inputs).
    pub(super) any: bool,
}

/// The newest `capacity` closed candles of one coin, oldest first, plus one more
/// candle before them so the oldest one shown still has a previous close; and the
/// closes of up to `depth` candles ending with the newest, for indicators.
#[derive(Debug, Clone)]
pub(super) struct Window {
    symbol: String,
    interval: Interval,
    pub(super) capacity: usize,
    zone: Tz,
    pub(super) candles: VecDeque<Candle>,
    /// (open time, close) of the newest `depth` candles, oldest first.
    closes: VecDeque<(i64, f64)>,
    depth: usize,
    /// Indicator series computed on these closes: once per version, shared.
    computed: Computed,
}

/// A cache that a cloned (about to be changed) window starts without.
#[derive(Debug, Default)]
struct Computed(Mutex<HashMap<Indicator, Series>>);

impl Clone for Computed {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Window {
    /// An empty window showing up to `capacity` candles and keeping `depth` closes
    /// (at least `capacity + 1`).
    pub(super) fn new(
        symbol: String,
        interval: Interval,
        capacity: usize,
        depth: usize,
        zone: Tz,
    ) -> Self {
        Self {
            symbol,
            interval,
            capacity,
            zone,
            candles: VecDeque::with_capacity(capacity + 1),
            closes: VecDeque::new(),
            depth: depth.max(capacity + 1),
            computed: Computed::default(),
        }
    }

    /// Inserts in open-time order, replacing a candle of the same open time.
    pub(super) fn insert(&mut self, candle: Candle) -> Change {
        let deep = self.insert_close(candle.open_time, candle.close);
        let shown = self.insert_candle(candle);
        if deep || shown {
            self.computed.0.get_mut().expect("cache lock").clear();
        }
        Change {
            shown,
            any: deep || shown,
        }
    }

    fn insert_candle(&mut self, candle: Candle) -> bool {
        match self
            .candles
            .binary_search_by_key(&candle.open_time, |c| c.open_time)
        {
            Ok(found) if self.candles[found] == candle => false,
            Ok(found) => {
                self.candles[found] = candle;
                true
            }
            Err(0) if self.candles.len() > self.capacity => false, // older than all we keep
            Err(position) => {
                self.candles.insert(position, candle);
                if self.candles.len() > self.capacity + 1 {
                    self.candles.pop_front();
                }
                true
            }
        }
    }

    fn insert_close(&mut self, open_time: i64, close: f64) -> bool {
        match self.closes.binary_search_by_key(&open_time, |(t, _)| *t) {
            Ok(found) if self.closes[found].1 == close => false,
            Ok(found) => {
                self.closes[found].1 = close;
                true
            }
            Err(0) if self.closes.len() >= self.depth => false,
            Err(position) => {
                self.closes.insert(position, (open_time, close));
                if self.closes.len() > self.depth {
                    self.closes.pop_front();
                }
                true
            }
        }
    }

    /// Whether a candle opened at `open_time` is held (among the closes).
    pub(super) fn holds(&self, open_time: i64) -> bool {
        self.closes
            .binary_search_by_key(&open_time, |(t, _)| *t)
            .is_ok()
    }

    /// The candle opened at `open_time` (ms since the epoch, UTC), if shown or the
    /// one before them.
    pub(super) fn candle(&self, open_time: i64) -> Option<&Candle> {
        let found = self
            .candles
            .binary_search_by_key(&open_time, |c| c.open_time)
            .ok()?;
        self.candles.get(found)
    }

    /// The oldest open time held, among the closes.
    pub(super) fn oldest_open_time(&self) -> Option<i64> {
        self.closes.front().map(|(t, _)| *t)
    }

    /// The newest candle's open time (ms since the epoch, UTC).
    pub(super) fn newest_open_time(&self) -> Option<i64> {
        self.candles.back().map(|c| c.open_time)
    }

    /// `indicator` over every close held, oldest first; computed once per version.
    fn series(&self, indicator: Indicator) -> Series {
        let mut computed = self.computed.0.lock().expect("cache lock");
        Arc::clone(computed.entry(indicator).or_insert_with(|| {
            let closes: Vec<f64> = self.closes.iter().map(|(_, close)| *close).collect();
            Arc::new(indicator.compute(&closes))
        }))
    }

    /// The client message for this window in `view`, newest first.
    pub(super) fn render(&self, view: &View) -> Utf8Bytes {
        let shown = self.candles.len().min(view.limit).min(self.capacity);
        let first_shown = self.candles.len() - shown;
        if view.format == Format::Candles {
            let newest_first = self.candles.range(first_shown..).rev();
            return self.candles_message(newest_first, view);
        }
        let daily = self.interval.millis() >= 86_400_000;
        let mut message = CoinMessage {
            coin: &self.symbol,
            values: Vec::with_capacity(shown),
            operations: Vec::with_capacity(shown),
            time: Vec::with_capacity(shown),
        };
        for index in (first_shown..self.candles.len()).rev() {
            let candle = &self.candles[index];
            let previous = index.checked_sub(1).map(|i| &self.candles[i]);
            message.values.push(candle.close);
            message
                .operations
                .push(Operation::of(candle, previous).as_str());
            message.time.push(if daily {
                candle.open_date()
            } else {
                candle.close_label(self.zone)
            });
        }
        Utf8Bytes::from(message.to_json())
    }

    /// The `candles` message of every held candle opened after `since` (ms since the
    /// epoch, UTC), newest first, with `view`'s indicators; `None` when the window
    /// may not hold them all (its oldest candle opened later than the first one
    /// after `since`), and the store must be asked.
    pub(super) fn render_after(&self, view: &View, since: i64) -> Option<Utf8Bytes> {
        let first_after = self.interval.open_time_containing(since) + self.interval.millis();
        if self.candles.front()?.open_time > first_after {
            return None;
        }
        let newest_first = self.candles.iter().rev();
        let after = newest_first.take_while(|candle| candle.open_time > since);
        Some(self.candles_message(after, view))
    }

    /// The `candles` message of `candles` (newest first) with `view`'s indicators.
    fn candles_message<'a>(
        &self,
        candles: impl Iterator<Item = &'a Candle>,
        view: &View,
    ) -> Utf8Bytes {
        let series: Vec<(String, Series)> = view
            .indicators
            .iter()
            .map(|indicator| (indicator.name(), self.series(*indicator)))
            .collect();
        let message = CandlesMessage {
            coin: &self.symbol,
            interval: self.interval.name(),
            candles: candles
                .map(|candle| {
                    let mut entry = CandleEntry::from(candle);
                    if !series.is_empty() {
                        entry.indicators = Some(self.values_at(candle.open_time, &series));
                    }
                    entry
                })
                .collect(),
        };
        Utf8Bytes::from(message.to_json())
    }

    /// Each series' value at the candle opened at `open_time`.
    fn values_at(&self, open_time: i64, series: &[(String, Series)]) -> IndicatorValues {
        let index = self
            .closes
            .binary_search_by_key(&open_time, |(t, _)| *t)
            .ok();
        IndicatorValues(
            series
                .iter()
                .map(|(name, values)| (name.clone(), index.and_then(|i| values[i])))
                .collect(),
        )
    }
}

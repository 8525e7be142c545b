//! One coin's window of recent closed candles, and its rendering into the
//! client messages of DESIGN.md §3.

use std::collections::VecDeque;

use axum::extract::ws::Utf8Bytes;
use chrono_tz::Tz;

use super::View;
use super::message::{CandleEntry, CandlesMessage, CoinMessage, Format};
use crate::candle::{Candle, Operation};

/// The newest `capacity` closed candles of one coin, oldest first, plus one more
/// candle before them so the oldest one shown still has a previous close.
#[derive(Debug, Clone)]
pub(super) struct Window {
    symbol: String,
    pub(super) capacity: usize,
    zone: Tz,
    pub(super) candles: VecDeque<Candle>,
}

impl Window {
    pub(super) fn new(symbol: String, capacity: usize, zone: Tz) -> Self {
        Self {
            symbol,
            capacity,
            zone,
            candles: VecDeque::with_capacity(capacity + 1),
        }
    }

    /// Inserts in open-time order, replacing a candle of the same minute. Returns
    /// whether what clients see (or the reference candle behind it) changed.
    pub(super) fn insert(&mut self, candle: Candle) -> bool {
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

    /// The client message for this window in `view`, newest first.
    pub(super) fn render(&self, view: View) -> Utf8Bytes {
        let shown = self.candles.len().min(view.limit).min(self.capacity);
        let first_shown = self.candles.len() - shown;
        if view.format == Format::Candles {
            let message = CandlesMessage {
                coin: &self.symbol,
                candles: self
                    .candles
                    .range(first_shown..)
                    .rev()
                    .map(CandleEntry::from)
                    .collect(),
            };
            return Utf8Bytes::from(message.to_json());
        }
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
            message.time.push(candle.close_label(self.zone));
        }
        Utf8Bytes::from(message.to_json())
    }
}

//! What the exchange client asks of the base windows: the newest and oldest candle
//! held, the minutes missing from a window, a held candle (which a REST row never
//! replaces).

use super::{Hub, Newest, slot};
use crate::candle::Candle;

impl Hub {
    /// Where `symbol`'s base window sits, if the hub holds the coin.
    fn base_slot(&self, symbol: &str) -> Option<usize> {
        Some(slot(self.inner.intervals.len(), 0, self.position(symbol)?))
    }

    /// The newest candle held for `symbol`, and whether its window is full (holds
    /// `HISTORY_MAX` candles plus the one before them).
    pub fn newest(&self, symbol: &str) -> Option<Newest> {
        let at = self.base_slot(symbol)?;
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let window = &ledger.windows[at];
        window.candles.back().map(|c| Newest {
            open_time: c.open_time,
            window_full: window.candles.len() > window.capacity,
        })
    }

    /// The open time of the oldest base candle held for `symbol` (ms since the
    /// epoch, UTC), among the window and the closes behind it.
    pub fn oldest(&self, symbol: &str) -> Option<i64> {
        let at = self.base_slot(symbol)?;
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        ledger.windows[at].oldest_open_time()
    }

    /// Open times (ms since the epoch, UTC) of the candles missing from `symbol`'s
    /// base window between its oldest candle (or `from`, if later) and `until`
    /// (exclusive), on a grid of `step` ms. Empty when nothing is held yet.
    pub fn missing(&self, symbol: &str, from: i64, until: i64, step: i64) -> Vec<i64> {
        let Some(at) = self.base_slot(symbol) else {
            return Vec::new();
        };
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let candles = &ledger.windows[at].candles;
        let Some(oldest) = candles.front().map(|c| c.open_time) else {
            return Vec::new();
        };
        let mut held = candles.iter().map(|c| c.open_time).peekable();
        let mut missing = Vec::new();
        let mut open_time = oldest.max(from);
        while open_time < until {
            while held.next_if(|t| *t < open_time).is_some() {}
            if held.peek() != Some(&open_time) {
                missing.push(open_time);
            }
            open_time += step;
        }
        missing
    }

    /// The base candle of `symbol` opened at `open_time`, if the window holds it.
    pub fn candle_at(&self, symbol: &str, open_time: i64) -> Option<Candle> {
        let at = self.base_slot(symbol)?;
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let candles = &ledger.windows[at].candles;
        let found = candles
            .binary_search_by_key(&open_time, |c| c.open_time)
            .ok()?;
        Some(candles[found].clone())
    }
}

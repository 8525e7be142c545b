//! Longer intervals' windows filled with candles of that interval rather than
//! built from base candles: seeded with the exchange's own (`SYMBOLS=*`: a hundred
//! days of minutes per contract cannot be fetched within Binance's weight limits;
//! one klines request of the interval holds a whole window), or read from the store
//! that ingesters write them to. Either way they are handed up to the intervals
//! built from theirs (`hub/build.rs`), so the buckets open now close whole; the
//! buckets after them are built from the live base candles as usual.

use super::{Hub, merge, slot, window};
use crate::candle::Candle;

/// What a longer candle does to one of the same open time the window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The held one stays.
    Kept,
    /// The new one takes its place.
    Replaced,
}

impl Hub {
    /// Puts closed candles of the served interval at index `interval` (at least 1)
    /// into their coins' windows, replacing none a window holds (built from base
    /// candles, or seeded before), and hands them on to the intervals built from
    /// this one, for the buckets open now and just closed (the day's closed `4h`
    /// seeds make the open `1d` bucket); each bucket that completes goes in `built`.
    /// Candles of other intervals or unknown coins are ignored. Returns how many
    /// windows changed.
    pub fn seed_building(
        &self,
        interval: usize,
        candles: &[Candle],
        built: &mut Vec<Candle>,
    ) -> usize {
        self.put_longer(interval, candles, Held::Kept, built)
    }

    /// Puts closed candles read from the store of the served interval at index
    /// `interval` (at least 1) into their coins' windows, each replacing a held
    /// candle of the same open time, as a stored base candle does: what the store
    /// holds is what every replica and every restart load. Handed on up like
    /// seeds. Candles of other intervals or unknown coins are ignored. Returns how
    /// many windows changed.
    pub fn apply_stored(&self, interval: usize, candles: &[Candle]) -> usize {
        self.put_longer(interval, candles, Held::Replaced, &mut Vec::new())
    }

    /// [`Hub::seed_building`] and [`Hub::apply_stored`], `held` saying which.
    fn put_longer(
        &self,
        interval: usize,
        candles: &[Candle],
        held: Held,
        built: &mut Vec<Candle>,
    ) -> usize {
        let intervals = self.inner.intervals.len();
        let Some(name) = self.inner.intervals.get(interval).filter(|_| interval > 0) else {
            return 0;
        };
        let mut ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let mut changed = vec![window::Change::default(); ledger.windows.len()];
        for candle in candles.iter().filter(|c| c.interval == name.name()) {
            let Some(position) = self.position(&candle.symbol) else {
                continue;
            };
            let at = slot(intervals, interval, position);
            let window = &mut ledger.windows[at];
            if held == Held::Replaced || !window.holds(candle.open_time) {
                merge(&mut changed[at], window, candle.clone());
            }
            // What goes up is what the window holds, built or seeded.
            let Some(held) = ledger.windows[at].candle(candle.open_time).cloned() else {
                continue;
            };
            let from = (position, interval);
            self.climb(&mut ledger, from, held, true, (&mut changed, built));
        }
        self.publish(&ledger.windows, &changed)
    }

    /// The closed candles `symbol`'s window at served interval `interval` holds
    /// (shown and the one before them), and the newest one's open time (ms since
    /// the epoch, UTC); `(0, None)` for a coin or interval not held.
    pub fn held(&self, symbol: &str, interval: usize) -> (usize, Option<i64>) {
        let Some(position) = self.position(symbol) else {
            return (0, None);
        };
        let at = slot(self.inner.intervals.len(), interval, position);
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        ledger.windows.get(at).map_or((0, None), |window| {
            (window.candles.len(), window.newest_open_time())
        })
    }
}

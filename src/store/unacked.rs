//! The candles the write queue holds that the database has not yet acknowledged,
//! indexed by symbol and open time so that readers see them (DESIGN.md §7): a candle
//! that slides out of a hub window before its write lands is still found here.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::candle::Candle;

/// Cheap to clone; every clone shares one index. Written by the [`super::StoreWriter`]
/// (a batch is held when queued and released once the store acknowledged it), read
/// by the read path. Bounded by the write queue: a batch the queue refuses is never
/// held.
#[derive(Clone, Default)]
pub struct Unacknowledged {
    inner: Arc<Mutex<Index>>,
}

#[derive(Default)]
struct Index {
    next_batch: u64,
    /// Per (symbol, interval), by open time (ms since the epoch, UTC): the newest
    /// queued version of each candle and the batch that carries it.
    by_series: HashMap<(String, String), BTreeMap<i64, (u64, Candle)>>,
}

/// Identifies a held batch, to release exactly what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchId(u64);

impl Unacknowledged {
    /// Holds `batch` (just queued) until [`Unacknowledged::release`]; a candle
    /// queued again replaces the older version.
    pub fn hold(&self, batch: &[Candle]) -> BatchId {
        let mut index = self.inner.lock().expect("unacknowledged lock");
        let id = index.next_batch;
        index.next_batch += 1;
        for candle in batch {
            index
                .by_series
                .entry(series_of(candle))
                .or_default()
                .insert(candle.open_time, (id, candle.clone()));
        }
        BatchId(id)
    }

    /// Lets go of the candles of `batch` (acknowledged by the store, or refused by
    /// the queue), except those a later batch queued again.
    pub fn release(&self, id: BatchId, batch: &[Candle]) {
        let mut index = self.inner.lock().expect("unacknowledged lock");
        for candle in batch {
            let series = series_of(candle);
            let Some(held) = index.by_series.get_mut(&series) else {
                continue;
            };
            if held
                .get(&candle.open_time)
                .is_some_and(|(by, _)| *by == id.0)
            {
                held.remove(&candle.open_time);
            }
            if held.is_empty() {
                index.by_series.remove(&series);
            }
        }
    }

    /// The held candles of `symbol` at `interval` opened in `[from, to)` (ms since the
    /// epoch, UTC; `None`: unbounded), by open time.
    pub fn between(
        &self,
        symbol: &str,
        interval: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> BTreeMap<i64, Candle> {
        let index = self.inner.lock().expect("unacknowledged lock");
        let Some(held) = index
            .by_series
            .get(&(symbol.to_owned(), interval.to_owned()))
        else {
            return BTreeMap::new();
        };
        let lower = from.map_or(Bound::Unbounded, Bound::Included);
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        held.range((lower, upper))
            .map(|(open_time, (_, candle))| (*open_time, candle.clone()))
            .collect()
    }

    /// How many candles are held, for every symbol.
    pub fn len(&self) -> usize {
        let index = self.inner.lock().expect("unacknowledged lock");
        index.by_series.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn series_of(candle: &Candle) -> (String, String) {
    (candle.symbol.clone(), candle.interval.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(open_time: i64, close: f64) -> Candle {
        Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time,
            close_time: open_time + 59_999,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 0.5,
            trades: 1,
        }
    }

    #[test]
    fn a_candle_queued_again_outlives_the_release_of_its_older_batch() {
        let held = Unacknowledged::default();
        let first = vec![candle(0, 1.0), candle(60_000, 1.0)];
        let id = held.hold(&first);
        let again = vec![candle(60_000, 2.0)];
        let later = held.hold(&again);
        held.release(id, &first);
        let left = held.between("BTCUSDT", "1m", None, None);
        assert_eq!(left.keys().copied().collect::<Vec<_>>(), vec![60_000]);
        assert_eq!(left[&60_000].close, 2.0, "the newest version");
        held.release(later, &again);
        assert!(held.is_empty());
    }

    #[test]
    fn between_is_half_open_and_per_interval() {
        let held = Unacknowledged::default();
        let mut other = candle(60_000, 1.0);
        other.interval = "5m".into();
        held.hold(&[candle(0, 1.0), candle(60_000, 1.0), candle(120_000, 1.0)]);
        held.hold(&[other]);
        let got = held.between("BTCUSDT", "1m", Some(60_000), Some(120_000));
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![60_000]);
        assert!(held.between("ETHUSDT", "1m", None, None).is_empty());
        assert_eq!(held.between("BTCUSDT", "5m", None, None).len(), 1);
    }
}

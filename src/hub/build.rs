//! The longer intervals' windows built while candles arrive. Each served interval
//! is built from the longest shorter one that nests in it (`1d` from `4h`, `4h`
//! from `1h`, … `5m` from the base minutes), so a builder holds a dozen candles of
//! its source, never a day of minutes per coin; a late or corrected base candle
//! recomputes its bucket, which recomputes the bucket above it, and so on up.

use super::window::Change;
use super::{Hub, Ledger, merge, slot};
use crate::candle::{Candle, Interval};

/// Per served interval (shortest first), the index of the one it is built from: the
/// longest shorter one that nests in it ([`Interval::nests_in`]), else the base
/// (0). The base's own entry is 0 and unused.
pub(super) fn sources(intervals: &[Interval]) -> Vec<usize> {
    (0..intervals.len())
        .map(|k| {
            (1..k)
                .rev()
                .find(|&j| intervals[j].nests_in(&intervals[k]))
                .unwrap_or(0)
        })
        .collect()
}

/// What a climb changes: the windows marked, the buckets completed or changed.
pub(super) type Outcome<'a> = (&'a mut [Change], &'a mut Vec<Candle>);

impl Hub {
    /// Merges closed base candles into their windows, completes the buckets of
    /// longer intervals they close, and republishes each window that changed.
    /// Candles of other symbols or intervals are ignored; a candle already held with
    /// the same values changes nothing. Returns how many windows changed.
    pub fn apply(&self, candles: &[Candle]) -> usize {
        self.apply_building(candles, &mut Vec::new())
    }

    /// [`Hub::apply`], also handing over each longer bucket completed or changed in
    /// `built` (`SYMBOLS=*` stores them, so a restart finds its windows whole).
    pub fn apply_building(&self, candles: &[Candle], built: &mut Vec<Candle>) -> usize {
        let intervals = self.inner.intervals.len();
        let base = self.inner.intervals[0].name();
        let mut ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let mut changed = vec![Change::default(); ledger.windows.len()];
        for candle in candles {
            if candle.interval != base {
                continue;
            }
            let Some(position) = self.position(&candle.symbol) else {
                continue;
            };
            let at = slot(intervals, 0, position);
            merge(&mut changed[at], &mut ledger.windows[at], candle.clone());
            let from = (position, 0);
            self.climb(
                &mut ledger,
                from,
                candle.clone(),
                false,
                (&mut changed, built),
            );
        }
        self.publish(&ledger.windows, &changed)
    }

    /// Hands `candle`, a closed candle of the served interval `from.1` of the coin
    /// at position `from.0` that its window now holds, to each builder built from
    /// that interval, and each bucket they complete to the builders built from it,
    /// and so on up. A bucket the window holds settled (its source candles let go,
    /// or seeded by the exchange) is not built again: the held candle goes up in its
    /// place, so the buckets above it still fill. A `seeding` climb (the exchange's
    /// own candles of a longer interval) only feeds the newest two buckets of each
    /// interval above, by the newest base candle held, and nothing before the base
    /// window holds one: older buckets are seeded themselves.
    pub(super) fn climb(
        &self,
        ledger: &mut Ledger,
        (position, from): (usize, usize),
        candle: Candle,
        seeding: bool,
        (changed, built): Outcome<'_>,
    ) {
        let intervals = &self.inner.intervals;
        let sources = &self.inner.sources;
        let count = intervals.len();
        let newest_base = ledger.windows[slot(count, 0, position)].newest_open_time();
        if seeding && newest_base.is_none() {
            return;
        }
        let mut reached: Vec<Option<Candle>> = vec![None; count];
        reached[from] = Some(candle);
        for level in from + 1..count {
            let Some(part) = reached[sources[level]].clone() else {
                continue;
            };
            let interval = &intervals[level];
            let bucket_open = interval.open_time_containing(part.open_time);
            if let Some(newest) = newest_base.filter(|_| seeding)
                && bucket_open < interval.open_time_containing(newest) - interval.millis()
            {
                continue;
            }
            let index = slot(count, level, position);
            if !ledger.builders[position][level - 1].is_pending(bucket_open)
                && ledger.windows[index].holds(bucket_open)
            {
                if self.wanted_above(ledger, position, level, bucket_open) {
                    reached[level] = ledger.windows[index].candle(bucket_open).cloned();
                }
                continue;
            }
            let Ledger { windows, builders } = &mut *ledger;
            if let Some(bucket) = builders[position][level - 1].add(&part) {
                if merge(&mut changed[index], &mut windows[index], bucket.clone()) {
                    built.push(bucket.clone());
                }
                reached[level] = Some(bucket);
            }
        }
    }

    /// Whether a builder built from served interval `level` still takes its bucket
    /// opened at `bucket_open`: the bucket above is not settled in its window.
    fn wanted_above(
        &self,
        ledger: &Ledger,
        position: usize,
        level: usize,
        bucket_open: i64,
    ) -> bool {
        let intervals = &self.inner.intervals;
        (level + 1..intervals.len())
            .filter(|&above| self.inner.sources[above] == level)
            .any(|above| {
                let open = intervals[above].open_time_containing(bucket_open);
                let index = slot(intervals.len(), above, position);
                ledger.builders[position][above - 1].is_pending(open)
                    || !ledger.windows[index].holds(open)
            })
    }

    /// The buckets of followed coins that ended incomplete and that no window
    /// holds: (symbol, served interval index, open time in ms since the epoch, UTC).
    /// Only each interval's newest two buckets by the coin's newest base candle,
    /// and only once a base candle after the bucket's end has closed, so a minute
    /// still on its way is not taken for missing. Their own candle is the
    /// exchange's to give ([`Hub::seed_building`]): a contract's first buckets
    /// after its listing are never whole in base candles.
    pub fn closed_incomplete(&self) -> Vec<(String, usize, i64)> {
        let intervals = &self.inner.intervals;
        let followed = self.followed();
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let mut missing = Vec::new();
        for symbol in followed {
            let Some(position) = self.position(&symbol) else {
                continue;
            };
            let base = &ledger.windows[slot(intervals.len(), 0, position)];
            let Some(newest) = base.newest_open_time() else {
                continue;
            };
            for (level, builder) in ledger.builders[position].iter().enumerate() {
                let interval = builder.interval();
                let recent = interval.open_time_containing(newest) - interval.millis();
                let window = &ledger.windows[slot(intervals.len(), level + 1, position)];
                missing.extend(
                    builder
                        .incomplete_until(newest)
                        .filter(|open| *open >= recent && !window.holds(*open))
                        .map(|open| (symbol.clone(), level + 1, open)),
                );
            }
        }
        missing
    }
}

//! Candles of a longer interval built from the base candles inside them: which bucket
//! a base candle falls in, when a bucket is complete, and its values.
//!
//! A bucket opens where Binance's candle of that interval opens (a multiple of its
//! length since the epoch, weeks on Mondays 00:00 UTC: DESIGN.md §5). Its open is
//! the first base candle's open, its close the last one's close, high and low the
//! extremes, volumes and trades the sums; it closes at open + length − 1 ms.
//! Volumes are summed as the exchange's decimals ([`DecimalSum`]), so a bucket's
//! volume prints as Binance's candle of that interval does.

use std::collections::BTreeMap;

use super::{Candle, DecimalSum, Interval};

/// The candle of `interval` made of `base` (oldest first, all inside one bucket of
/// `interval`, at least one), opened at `bucket_open` (ms since the epoch, UTC).
/// A forming candle may be among them: the result is then the bucket so far.
///
/// # Panics
/// When `base` is empty.
pub fn aggregate<'a>(
    interval: &Interval,
    bucket_open: i64,
    base: impl IntoIterator<Item = &'a Candle>,
) -> Candle {
    let mut base = base.into_iter();
    let first = base.next().expect("a bucket has at least one base candle");
    let mut so_far = SoFar::start(interval, bucket_open, first);
    base.for_each(|candle| so_far.push(candle));
    so_far.finish()
}

/// A bucket summed up to its newest base candle, which the next one extends without
/// going over the earlier ones again.
#[derive(Debug, Clone)]
struct SoFar {
    /// Open, high, low, close and trades so far; the volumes are in the sums.
    bucket: Candle,
    volume: DecimalSum,
    quote_volume: DecimalSum,
    taker_buy_volume: DecimalSum,
    taker_buy_quote_volume: DecimalSum,
}

impl SoFar {
    fn start(interval: &Interval, bucket_open: i64, first: &Candle) -> Self {
        Self::start_part(interval, bucket_open, &first.symbol, &Part::of(first))
    }

    fn start_part(interval: &Interval, bucket_open: i64, symbol: &str, first: &Part) -> Self {
        let sum = |value: f64| [value].into_iter().collect::<DecimalSum>();
        Self {
            bucket: Candle {
                symbol: symbol.to_owned(),
                interval: interval.name().to_owned(),
                open_time: bucket_open,
                close_time: bucket_open + interval.millis() - 1,
                open: first.open,
                high: first.high,
                low: first.low,
                close: first.close,
                volume: first.volume,
                quote_volume: first.quote_volume,
                taker_buy_volume: first.taker_buy_volume,
                taker_buy_quote_volume: first.taker_buy_quote_volume,
                trades: first.trades,
            },
            volume: sum(first.volume),
            quote_volume: sum(first.quote_volume),
            taker_buy_volume: sum(first.taker_buy_volume),
            taker_buy_quote_volume: sum(first.taker_buy_quote_volume),
        }
    }

    /// Adds the base candle after the newest one so far.
    fn push(&mut self, candle: &Candle) {
        self.push_part(&Part::of(candle));
    }

    /// [`SoFar::push`] of a held part.
    fn push_part(&mut self, candle: &Part) {
        // Prices are copied, never computed; volumes are summed as decimals.
        let bucket = &mut self.bucket;
        bucket.high = bucket.high.max(candle.high);
        bucket.low = bucket.low.min(candle.low);
        bucket.close = candle.close;
        bucket.trades += candle.trades;
        self.volume.add(candle.volume);
        self.quote_volume.add(candle.quote_volume);
        self.taker_buy_volume.add(candle.taker_buy_volume);
        self.taker_buy_quote_volume
            .add(candle.taker_buy_quote_volume);
    }

    fn finish(self) -> Candle {
        Candle {
            volume: self.volume.value(),
            quote_volume: self.quote_volume.value(),
            taker_buy_volume: self.taker_buy_volume.value(),
            taker_buy_quote_volume: self.taker_buy_quote_volume.value(),
            ..self.bucket
        }
    }
}

/// A base candle as a builder keeps it: its numbers without the symbol and interval
/// strings the builder already knows, less than half a [`Candle`]'s memory (a
/// builder of `1d` holds up to two days of minutes per symbol).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Part {
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    quote_volume: f64,
    taker_buy_volume: f64,
    taker_buy_quote_volume: f64,
    trades: i64,
}

impl Part {
    fn of(candle: &Candle) -> Self {
        Self {
            open: candle.open,
            high: candle.high,
            low: candle.low,
            close: candle.close,
            volume: candle.volume,
            quote_volume: candle.quote_volume,
            taker_buy_volume: candle.taker_buy_volume,
            taker_buy_quote_volume: candle.taker_buy_quote_volume,
            trades: candle.trades,
        }
    }
}

/// The base candles of one bucket held by a [`BucketBuilder`], and their sum.
#[derive(Debug, Clone)]
struct Parts {
    /// By their own open time.
    candles: BTreeMap<i64, Part>,
    /// All of `candles`, oldest first.
    so_far: SoFar,
}

impl Parts {
    fn new(interval: &Interval, bucket_open: i64, first: &Candle) -> Self {
        Self {
            candles: BTreeMap::from([(first.open_time, Part::of(first))]),
            so_far: SoFar::start(interval, bucket_open, first),
        }
    }

    fn len(&self) -> usize {
        self.candles.len()
    }

    /// Takes `candle`; whether it changed anything. The newest base candle (the
    /// usual case) extends the sum; a late or corrected one sums the bucket anew.
    fn insert(&mut self, interval: &Interval, bucket_open: i64, candle: &Candle) -> bool {
        let part = Part::of(candle);
        if self.candles.get(&candle.open_time) == Some(&part) {
            return false;
        }
        let newest = self
            .candles
            .last_key_value()
            .is_none_or(|(open, _)| *open < candle.open_time);
        self.candles.insert(candle.open_time, part);
        if newest {
            self.so_far.push_part(&part);
        } else {
            let mut parts = self.candles.values();
            if let Some(first) = parts.next() {
                self.so_far = SoFar::start_part(interval, bucket_open, &candle.symbol, first);
                parts.for_each(|p| self.so_far.push_part(p));
            }
        }
        true
    }
}

/// Base candles kept per bucket builder before the oldest incomplete buckets are
/// given up: room for a week of minutes plus the two newest buckets of a day.
const MAX_PENDING_CANDLES: usize = 3 * 10_080;

/// Builds one symbol's buckets of one interval from its base candles, in any order.
///
/// It keeps the base candles of the newest two buckets (so a late or corrected base
/// candle recomputes its bucket) and of older buckets still incomplete (a deep
/// backfill fills them oldest first); a complete older bucket's candles are let go.
#[derive(Debug, Clone)]
pub struct BucketBuilder {
    interval: Interval,
    /// Base candles per bucket: how many make one whole bucket.
    per_bucket: usize,
    /// Base candles by bucket open time.
    pending: BTreeMap<i64, Parts>,
    /// The newest base open time seen (ms since the epoch, UTC).
    newest: i64,
}

impl BucketBuilder {
    /// A builder of `interval` candles from `base` candles; `interval` must be a
    /// whole multiple of `base` (config checks it).
    pub fn new(interval: Interval, base: &Interval) -> Self {
        let per_bucket = usize::try_from(interval.millis() / base.millis()).unwrap_or(1);
        Self {
            interval,
            per_bucket,
            pending: BTreeMap::new(),
            newest: i64::MIN,
        }
    }

    /// The interval built.
    pub fn interval(&self) -> &Interval {
        &self.interval
    }

    /// Whether base candles of the bucket opened at `bucket_open` are held: it is
    /// recent or still incomplete.
    pub fn is_pending(&self, bucket_open: i64) -> bool {
        self.pending.contains_key(&bucket_open)
    }

    /// Takes a closed base candle; returns its bucket when every base candle of it is
    /// held (again, recomputed, when a late or corrected one arrives).
    pub fn add(&mut self, candle: &Candle) -> Option<Candle> {
        let bucket_open = self.interval.open_time_containing(candle.open_time);
        self.newest = self.newest.max(candle.open_time);
        let interval = &self.interval;
        let mut changed = true;
        let parts = self
            .pending
            .entry(bucket_open)
            .and_modify(|parts| changed = parts.insert(interval, bucket_open, candle))
            .or_insert_with(|| Parts::new(interval, bucket_open, candle));
        let bucket =
            (changed && parts.len() == self.per_bucket).then(|| parts.so_far.clone().finish());
        self.prune();
        bucket
    }

    /// The bucket `forming` (a base candle still open) belongs to, so far: its
    /// closed base candles held plus `forming`.
    pub fn forming(&self, forming: &Candle) -> Candle {
        let bucket_open = self.interval.open_time_containing(forming.open_time);
        let Some(parts) = self.pending.get(&bucket_open) else {
            return aggregate(&self.interval, bucket_open, [forming]);
        };
        // Every forming update asks: the closed candles' sum is kept, not redone.
        if parts
            .candles
            .last_key_value()
            .is_some_and(|(open, _)| *open < forming.open_time)
        {
            let mut so_far = parts.so_far.clone();
            so_far.push(forming);
            return so_far.finish();
        }
        let mut closed = parts.candles.range(..forming.open_time).map(|(_, p)| p);
        let Some(first) = closed.next() else {
            return aggregate(&self.interval, bucket_open, [forming]);
        };
        let mut so_far = SoFar::start_part(&self.interval, bucket_open, &forming.symbol, first);
        closed.for_each(|p| so_far.push_part(p));
        so_far.push(forming);
        so_far.finish()
    }

    /// Lets go of complete buckets older than the newest two, and of the oldest
    /// incomplete ones beyond [`MAX_PENDING_CANDLES`].
    fn prune(&mut self) {
        let recent = self.interval.open_time_containing(self.newest) - self.interval.millis();
        let per_bucket = self.per_bucket;
        self.pending
            .retain(|open, parts| *open >= recent || parts.len() < per_bucket);
        let mut held: usize = self.pending.values().map(Parts::len).sum();
        while held > MAX_PENDING_CANDLES.max(3 * per_bucket) {
            let Some((_, parts)) = self.pending.pop_first() else {
                break;
            };
            held -= parts.len();
        }
    }

    /// Open times (ms since the epoch, UTC) of the buckets held incomplete that
    /// ended by `until`: a base candle of each is missing (before a contract was
    /// listed, or never delivered), so this builder will not complete them.
    pub fn incomplete_until(&self, until: i64) -> impl Iterator<Item = i64> + '_ {
        let length = self.interval.millis();
        self.pending
            .iter()
            .filter(move |(open, parts)| **open + length <= until && parts.len() < self.per_bucket)
            .map(|(open, _)| *open)
    }

    /// Base candles held now, for tests and memory accounting.
    pub fn pending_candles(&self) -> usize {
        self.pending.values().map(Parts::len).sum()
    }
}

#[cfg(test)]
#[path = "bucket_tests.rs"]
mod tests;

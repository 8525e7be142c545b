//! Klines of any interval, built as Binance builds them from its one-minute candles:
//! buckets aligned to the epoch (a week to Monday 00:00 UTC), opened by their first
//! minute, closed by their last, the extremes of all, and the volumes as the decimal
//! sums of the minutes' decimal strings (Binance adds decimals, not binary floats).

use std::str::FromStr;

use candlecast::candle::Candle;
use rust_decimal::Decimal;

use super::MINUTE;

/// Binance's intervals the fake builds, with their lengths in milliseconds. (`1M`,
/// calendar months, is not among them: the fake answers it as an invalid interval.)
const INTERVALS: [(&str, i64); 14] = [
    ("1m", MINUTE),
    ("3m", 3 * MINUTE),
    ("5m", 5 * MINUTE),
    ("15m", 15 * MINUTE),
    ("30m", 30 * MINUTE),
    ("1h", 60 * MINUTE),
    ("2h", 120 * MINUTE),
    ("4h", 240 * MINUTE),
    ("6h", 360 * MINUTE),
    ("8h", 480 * MINUTE),
    ("12h", 720 * MINUTE),
    ("1d", 1_440 * MINUTE),
    ("3d", 4_320 * MINUTE),
    ("1w", 10_080 * MINUTE),
];

/// The epoch fell on a Thursday; Binance's weeks open on Mondays, four days later.
const FIRST_MONDAY: i64 = 4 * 1_440 * MINUTE;

/// The length of Binance's interval `name` in milliseconds, if the fake builds it.
pub fn interval_ms(name: &str) -> Option<i64> {
    INTERVALS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, ms)| *ms)
}

/// The open time of the `every`-millisecond bucket holding `open_time`.
pub fn bucket_open(open_time: i64, every: i64) -> i64 {
    let origin = if every == 10_080 * MINUTE {
        FIRST_MONDAY
    } else {
        0
    };
    origin + (open_time - origin).div_euclid(every) * every
}

/// `minutes` (oldest first) as candles of `interval`: one per bucket that holds a
/// minute, oldest first. A bucket's close time is its open time plus the interval,
/// less one millisecond, whether or not its last minute is there yet.
pub fn aggregate(minutes: &[Candle], interval: &str) -> Vec<Candle> {
    let every = interval_ms(interval).expect("an interval the fake builds");
    let mut buckets: Vec<Vec<&Candle>> = Vec::new();
    for minute in minutes {
        let open = bucket_open(minute.open_time, every);
        match buckets.last_mut() {
            Some(bucket) if bucket_open(bucket[0].open_time, every) == open => bucket.push(minute),
            _ => buckets.push(vec![minute]),
        }
    }
    buckets
        .iter()
        .map(|bucket| {
            let (first, last) = (bucket[0], bucket[bucket.len() - 1]);
            let open_time = bucket_open(first.open_time, every);
            let sum = |field: fn(&Candle) -> f64| decimal_sum(bucket.iter().map(|c| field(c)));
            Candle {
                symbol: first.symbol.clone(),
                interval: interval.to_owned(),
                open_time,
                close_time: open_time + every - 1,
                open: first.open,
                high: bucket.iter().map(|c| c.high).fold(f64::MIN, f64::max),
                low: bucket.iter().map(|c| c.low).fold(f64::MAX, f64::min),
                close: last.close,
                volume: sum(|c| c.volume),
                quote_volume: sum(|c| c.quote_volume),
                taker_buy_volume: sum(|c| c.taker_buy_volume),
                taker_buy_quote_volume: sum(|c| c.taker_buy_quote_volume),
                trades: bucket.iter().map(|c| c.trades).sum(),
            }
        })
        .collect()
}

/// The sum of the decimals `values` print as (each value's shortest text is the
/// exchange's string), as the nearest `f64`: it prints as the decimal sum.
pub fn decimal_sum(values: impl Iterator<Item = f64>) -> f64 {
    let exact: Decimal = values
        .map(|v| Decimal::from_str(&format!("{v}")).expect("a volume fits a decimal"))
        .sum();
    exact.to_string().parse().expect("a decimal parses as f64")
}

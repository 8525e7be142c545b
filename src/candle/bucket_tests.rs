//! Unit tests of the bucket builder.

use super::*;

const MINUTE: i64 = 60_000;
/// 2025-11-22 06:00 UTC, a multiple of an hour.
const HOUR_START: i64 = 1_763_791_200_000;

fn minute(open_time: i64, open: f64, close: f64) -> Candle {
    Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open,
        high: open.max(close) + 1.0,
        low: open.min(close) - 1.0,
        close,
        volume: 2.0,
        quote_volume: 3.0,
        taker_buy_volume: 1.0,
        taker_buy_quote_volume: 1.5,
        trades: 7,
    }
}

fn builder(interval: &str) -> BucketBuilder {
    BucketBuilder::new(
        Interval::parse(interval).unwrap(),
        &Interval::parse("1m").unwrap(),
    )
}

#[test]
fn a_bucket_closes_with_its_last_base_candle() {
    let mut five = builder("5m");
    let candles: Vec<Candle> = (0..5)
        .map(|i| minute(HOUR_START + i * MINUTE, 100.0 + i as f64, 101.0 + i as f64))
        .collect();
    for candle in &candles[..4] {
        assert_eq!(five.add(candle), None);
    }
    let bucket = five.add(&candles[4]).expect("the fifth minute closes it");
    assert_eq!(bucket.interval, "5m");
    assert_eq!(bucket.open_time, HOUR_START);
    assert_eq!(bucket.close_time, HOUR_START + 5 * MINUTE - 1);
    assert_eq!((bucket.open, bucket.close), (100.0, 105.0));
    assert_eq!((bucket.high, bucket.low), (106.0, 99.0));
    assert_eq!(bucket.volume, 10.0);
    assert_eq!(bucket.quote_volume, 15.0);
    assert_eq!(bucket.taker_buy_volume, 5.0);
    assert_eq!(bucket.taker_buy_quote_volume, 7.5);
    assert_eq!(bucket.trades, 35);
}

#[test]
fn a_late_candle_completes_and_a_correction_recomputes() {
    let mut five = builder("5m");
    let candles: Vec<Candle> = (0..5)
        .map(|i| minute(HOUR_START + i * MINUTE, 100.0, 100.0 + i as f64))
        .collect();
    // Minute 2 arrives last (a REST repair), yet the bucket is the same.
    for i in [0, 1, 3, 4] {
        assert_eq!(five.add(&candles[i]), None);
    }
    assert_eq!(five.add(&candles[2]).unwrap().close, 104.0);
    // The same candle again changes nothing; a corrected one recomputes.
    assert_eq!(five.add(&candles[2]), None);
    let mut corrected = candles[4].clone();
    corrected.close = 90.0;
    assert_eq!(five.add(&corrected).unwrap().close, 90.0);
}

#[test]
fn a_first_partial_bucket_is_never_served() {
    let mut hour = builder("1h");
    // The service starts at 06:30: the 06:00 bucket lacks its first half.
    for i in 30..60 {
        assert_eq!(hour.add(&minute(HOUR_START + i * MINUTE, 1.0, 1.0)), None);
    }
    let next: Vec<Option<Candle>> = (60..120)
        .map(|i| hour.add(&minute(HOUR_START + i * MINUTE, 1.0, 2.0)))
        .collect();
    assert!(next[..59].iter().all(Option::is_none));
    assert_eq!(
        next[59].as_ref().unwrap().open_time,
        HOUR_START + 60 * MINUTE
    );
}

#[test]
fn days_open_at_midnight_utc_and_weeks_on_monday() {
    let day = Interval::parse("1d").unwrap();
    // 2025-11-22 06:00 UTC falls in the day that opened 2025-11-22 00:00 UTC.
    assert_eq!(day.open_time_containing(HOUR_START), 1_763_769_600_000);
    let week = builder("1w");
    let monday = 1_763_337_600_000; // 2025-11-17 00:00 UTC
    let bucket = week.forming(&minute(HOUR_START, 5.0, 6.0));
    assert_eq!(bucket.open_time, monday);
    assert_eq!(bucket.close_time, monday + 7 * 86_400_000 - 1);
}

#[test]
fn the_forming_bucket_is_its_closed_minutes_plus_the_forming_one() {
    let mut five = builder("5m");
    five.add(&minute(HOUR_START, 100.0, 103.0));
    five.add(&minute(HOUR_START + MINUTE, 103.0, 102.0));
    let forming = minute(HOUR_START + 2 * MINUTE, 102.0, 110.0);
    let bucket = five.forming(&forming);
    assert_eq!((bucket.open, bucket.close), (100.0, 110.0));
    assert_eq!(bucket.high, 111.0);
    assert_eq!(bucket.volume, 6.0);
    assert_eq!(bucket.trades, 21);
    // A forming minute with nothing closed before it is the bucket alone.
    let alone = builder("15m").forming(&forming);
    assert_eq!(
        (alone.open_time, alone.open, alone.close),
        (HOUR_START, 102.0, 110.0)
    );
}

#[test]
fn old_complete_buckets_let_their_candles_go() {
    let mut five = builder("5m");
    for i in 0..60 {
        five.add(&minute(HOUR_START + i * MINUTE, 1.0, 1.0));
    }
    // The newest two buckets stay for corrections; older complete ones go.
    assert_eq!(five.pending_candles(), 10);
    // A deep backfill of an older hour, oldest first, holds one bucket at a time.
    for i in 0..60 {
        five.add(&minute(HOUR_START - 3_600_000 + i * MINUTE, 1.0, 1.0));
        assert!(five.pending_candles() <= 15);
    }
}

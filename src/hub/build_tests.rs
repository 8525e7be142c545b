//! Unit tests of the longer intervals built from one another (`1d` from `4h` from
//! `1h` …): the same candles as built from the minutes, a builder's few held
//! candles, corrections carried up, the exchange's seeds completing the open day.

use super::*;
use crate::candle::aggregate;
use chrono_tz::Tz;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2025-11-22 00:00 UTC.
const DAY0: i64 = 1_763_769_600_000;
const DEFAULTS: [&str; 6] = ["1m", "5m", "15m", "1h", "4h", "1d"];

/// A minute opened `m` minutes after [`DAY0`] with values that differ from minute to
/// minute (volumes with three decimals, so the sums are decimal sums).
fn minute(m: i64) -> Candle {
    let price = 100.0 + ((m * 37) % 101) as f64 / 4.0;
    Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time: DAY0 + m * MINUTE,
        close_time: DAY0 + (m + 1) * MINUTE - 1,
        open: price - 0.5,
        high: price + ((m * 13) % 7) as f64,
        low: price - ((m * 11) % 5) as f64 - 1.0,
        close: price,
        // The f64 nearest each decimal, as parsed from the exchange's strings.
        volume: ((m * 7) % 23 * 125 + 1) as f64 / 1000.0,
        quote_volume: ((m * 5) % 17 * 1100 + 3) as f64 / 1000.0,
        taker_buy_volume: 0.017,
        taker_buy_quote_volume: ((m * 3) % 11 * 7) as f64 / 10.0,
        trades: 1 + (m % 9),
    }
}

fn hub(intervals: &[&str]) -> Hub {
    let intervals: Vec<Interval> = intervals
        .iter()
        .map(|i| Interval::parse(i).unwrap())
        .collect();
    let options = WindowOptions {
        history_len: 3,
        history_max: 300,
        time_zone: Tz::UTC,
        seeded: false,
    };
    Hub::new(&["BTCUSDT".into()], &intervals, &options)
}

/// The bucket of `name` opened at `open` made straight from `minutes`.
fn from_minutes(name: &str, open: i64, minutes: &[Candle]) -> Candle {
    let interval = Interval::parse(name).unwrap();
    let inside = minutes
        .iter()
        .filter(|m| interval.open_time_containing(m.open_time) == open);
    aggregate(&interval, open, inside)
}

fn held(hub: &Hub, interval: usize, open: i64) -> Option<Candle> {
    let snapshot = hub.snapshot();
    let candles = hub.window_candles(&snapshot, interval, 0);
    candles.into_iter().find(|c| c.open_time == open)
}

fn builders_holding(hub: &Hub) -> usize {
    let ledger = hub.inner.ledger.lock().unwrap();
    ledger.builders[0]
        .iter()
        .map(BucketBuilder::pending_candles)
        .sum()
}

#[test]
fn each_interval_is_built_from_the_longest_shorter_one_that_nests_in_it() {
    let intervals: Vec<Interval> = ["1m", "3m", "5m", "15m", "1h", "4h", "1d", "3d", "1w"]
        .iter()
        .map(|i| Interval::parse(i).unwrap())
        .collect();
    // 5m is not made of 3m candles; 1w is not made of 3d ones.
    assert_eq!(build::sources(&intervals), [0, 0, 0, 2, 3, 4, 5, 6, 6]);
}

#[test]
fn a_day_built_from_four_hour_buckets_is_the_day_of_minutes_and_holds_a_few_candles() {
    let hub = hub(&DEFAULTS);
    let minutes: Vec<Candle> = (0..2 * 1440 + 1).map(minute).collect();
    for hour in minutes.chunks(60) {
        hub.apply(hour);
    }
    for (k, name) in DEFAULTS.iter().enumerate().skip(1) {
        let interval = Interval::parse(name).unwrap();
        let open = DAY0 + 1440 * MINUTE - interval.millis();
        assert_eq!(
            held(&hub, k, open),
            Some(from_minutes(name, open, &minutes)),
            "the last {name} bucket of the first day"
        );
    }
    let day = held(&hub, 5, DAY0 + 1440 * MINUTE).expect("the second day");
    assert_eq!(day, from_minutes("1d", DAY0 + 1440 * MINUTE, &minutes));
    // Two buckets each of its source's candles: not two days of minutes.
    let holding = builders_holding(&hub);
    assert!(
        holding <= 2 * (5 + 3 + 4 + 4 + 6),
        "builders hold {holding} candles"
    );
}

#[test]
fn a_corrected_minute_recomputes_every_bucket_above_it() {
    let hub = hub(&DEFAULTS);
    let mut minutes: Vec<Candle> = (0..1440 + 1).map(minute).collect();
    hub.apply(&minutes);
    // In the newest two buckets of each interval: a base candle the builders hold.
    let late = 1440 - 2;
    minutes[late].high = 1e6;
    minutes[late].volume += 1.5;
    let mut built = Vec::new();
    hub.apply_building(&minutes[late..=late], &mut built);
    let names: Vec<&str> = built.iter().map(|c| c.interval.as_str()).collect();
    assert_eq!(names, ["5m", "15m", "1h", "4h", "1d"]);
    for (k, name) in DEFAULTS.iter().enumerate().skip(1) {
        let open = Interval::parse(name)
            .unwrap()
            .open_time_containing(minutes[late].open_time);
        let bucket = held(&hub, k, open).unwrap();
        assert_eq!(bucket, from_minutes(name, open, &minutes), "{name}");
        assert_eq!(bucket.high, 1e6);
    }
}

#[test]
fn the_exchange_s_closed_buckets_of_the_day_complete_the_open_day() {
    let hub = hub(&["1m", "4h", "1d"]);
    let four_hours = Interval::parse("4h").unwrap();
    // Up: minutes from 20:00 to 23:58; the day's closed 4h buckets come from the
    // exchange, as do two of the day before.
    let minutes: Vec<Candle> = (20 * 60..1439).map(minute).collect();
    hub.apply(&minutes);
    let seed = |open: i64, close: f64| Candle {
        interval: "4h".into(),
        open_time: open,
        close_time: open + four_hours.millis() - 1,
        close,
        high: close + 1.0,
        ..minute(0)
    };
    let seeds: Vec<Candle> = [-8, -4, 0, 4, 8, 12, 16]
        .iter()
        .map(|h| seed(DAY0 + h * HOUR, 1000.0 + *h as f64))
        .collect();
    let mut built = Vec::new();
    hub.seed_building(1, &seeds, &mut built);
    assert!(built.is_empty(), "no day is whole yet: {built:?}");
    assert_eq!(held(&hub, 1, DAY0 + 16 * HOUR), Some(seeds[6].clone()));

    hub.apply_building(&[minute(1439)], &mut built);
    let evening = from_minutes(
        "4h",
        DAY0 + 20 * HOUR,
        &[minutes.clone(), vec![minute(1439)]].concat(),
    );
    let mut day_parts = seeds[2..].to_vec();
    day_parts.push(evening.clone());
    let day = aggregate(&Interval::parse("1d").unwrap(), DAY0, &day_parts);
    assert_eq!(built, [evening, day.clone()]);
    assert_eq!(held(&hub, 2, DAY0), Some(day));
    assert_eq!(
        held(&hub, 2, DAY0 - 1440 * MINUTE),
        None,
        "half a day before is not a day"
    );
}

#[test]
fn the_forming_day_is_the_day_s_closed_buckets_and_the_forming_minute() {
    let hub = hub(&DEFAULTS);
    let mut forming = hub.subscribe_forming();
    let minutes: Vec<Candle> = (0..1440).map(minute).collect();
    hub.apply(&minutes[..1439]);
    hub.forming(&minutes[1439..]);
    let snapshot = forming.borrow_and_update().clone();
    for (k, name) in DEFAULTS.iter().enumerate().skip(1) {
        let interval = Interval::parse(name).unwrap();
        let open = interval.open_time_containing(minutes[1439].open_time);
        let frame = snapshot.coins[slot(DEFAULTS.len(), k, 0)].as_ref().unwrap();
        assert_eq!(
            *frame.candle(),
            from_minutes(name, open, &minutes),
            "{name}"
        );
    }
}

#[test]
fn a_bucket_that_ended_incomplete_is_reported_until_its_window_holds_it() {
    let hub = hub(&["1m", "5m"]);
    // Listed at 00:02: the bucket of 00:00 lacks two minutes.
    hub.apply(&(2..5).map(minute).collect::<Vec<_>>());
    assert_eq!(hub.closed_incomplete(), [], "00:05 has not closed yet");
    hub.apply(&[minute(5)]);
    assert_eq!(hub.closed_incomplete(), [("BTCUSDT".to_owned(), 1, DAY0)]);
    let exchange_s = Candle {
        interval: "5m".into(),
        close_time: DAY0 + 5 * MINUTE - 1,
        ..minute(0)
    };
    hub.seed_building(1, std::slice::from_ref(&exchange_s), &mut Vec::new());
    assert_eq!(held(&hub, 1, DAY0), Some(exchange_s));
    assert_eq!(hub.closed_incomplete(), []);
    // Long past (not among the newest two buckets) or not ended: not reported.
    let hub = self::hub(&["1m", "5m"]);
    hub.apply(&[minute(3), minute(20)]);
    assert_eq!(hub.closed_incomplete(), []);
}

#[test]
fn seeded_longer_windows_keep_no_closes_behind_them_and_the_base_keeps_its_warm_up() {
    let intervals = [
        Interval::parse("1m").unwrap(),
        Interval::parse("5m").unwrap(),
    ];
    let options = WindowOptions {
        history_len: 3,
        history_max: 10,
        time_zone: Tz::UTC,
        seeded: true,
    };
    let hub = Hub::new(&["BTCUSDT".into()], &intervals, &options);
    hub.apply(&(0..200).map(minute).collect::<Vec<_>>());
    let ledger = hub.inner.ledger.lock().unwrap();
    assert_eq!(ledger.windows[0].oldest_open_time(), Some(DAY0));
    // The 5m window: the 10 shown and the one before, of the 40 built.
    assert_eq!(
        ledger.windows[1].oldest_open_time(),
        Some(DAY0 + (40 - 11) * 5 * MINUTE)
    );
}

//! Unit tests of the hub's longer intervals, forming candles and indicators.

use super::*;
use chrono_tz::Tz;

const MINUTE: i64 = 60_000;
/// 2025-11-22 06:05 UTC: a multiple of five minutes.
const T0: i64 = 1_763_791_500_000;

fn minute(symbol: &str, m: i64, close: f64) -> Candle {
    Candle {
        symbol: symbol.into(),
        interval: "1m".into(),
        open_time: T0 + m * MINUTE,
        close_time: T0 + (m + 1) * MINUTE - 1,
        open: close - 1.0,
        high: close + 1.0,
        low: close - 2.0,
        close,
        volume: 1.0,
        quote_volume: 10.0,
        taker_buy_volume: 0.5,
        taker_buy_quote_volume: 5.0,
        trades: 3,
    }
}

fn hub(intervals: &[&str]) -> Hub {
    let intervals: Vec<Interval> = intervals
        .iter()
        .map(|i| Interval::parse(i).unwrap())
        .collect();
    let options = WindowOptions {
        history_len: 3,
        history_max: 10,
        time_zone: Tz::UTC,
        seeded: false,
    };
    Hub::new(&["BTCUSDT".into(), "ETHUSDT".into()], &intervals, &options)
}

fn candles_view(interval: usize, indicators: &[Indicator]) -> View {
    View {
        limit: 10,
        format: Format::Candles,
        interval,
        indicators: Arc::from(indicators),
    }
}

fn render(hub: &Hub, position: usize, view: &View) -> serde_json::Value {
    let snapshot = hub.subscribe().borrow().clone();
    serde_json::from_str(hub.message(&snapshot, position, view).as_str()).unwrap()
}

#[test]
fn a_bucket_is_published_when_its_last_minute_closes() {
    let hub = hub(&["1m", "5m"]);
    let five = candles_view(1, &[]);
    for m in 0..4 {
        hub.apply(&[minute("BTCUSDT", m, 100.0 + m as f64)]);
        assert_eq!(hub.subscribe().borrow().frame(1, 0).version, 0);
    }
    hub.apply(&[minute("BTCUSDT", 4, 104.0)]);
    let snapshot = hub.subscribe().borrow().clone();
    assert_eq!(snapshot.frame(1, 0).version, 1);
    assert_eq!(snapshot.frame(1, 1).version, 0, "other coins are untouched");
    let message = render(&hub, 0, &five);
    assert_eq!(message["interval"], "5m");
    let bucket = &message["candles"][0];
    assert_eq!(bucket["open_time"], T0);
    assert_eq!(bucket["close_time"], T0 + 5 * MINUTE - 1);
    assert_eq!(
        (bucket["open"].as_f64(), bucket["close"].as_f64()),
        (Some(99.0), Some(104.0))
    );
    assert_eq!(
        (bucket["high"].as_f64(), bucket["low"].as_f64()),
        (Some(105.0), Some(98.0))
    );
    assert_eq!(bucket["volume"], 5.0);
    assert_eq!(bucket["trades"], 15);
    assert!(bucket.get("indicators").is_none());
}

#[test]
fn a_partial_first_bucket_is_left_out_and_a_late_minute_completes_its_bucket() {
    let hub = hub(&["1m", "5m"]);
    let five = candles_view(1, &[]);
    // Starts mid-bucket: minutes 2–4 of the first bucket, then 5–9 without 7.
    for m in [2, 3, 4, 5, 6, 8, 9] {
        hub.apply(&[minute("BTCUSDT", m, m as f64)]);
    }
    assert_eq!(render(&hub, 0, &five)["candles"], serde_json::json!([]));
    hub.apply(&[minute("BTCUSDT", 7, 7.0)]);
    let message = render(&hub, 0, &five);
    assert_eq!(message["candles"].as_array().unwrap().len(), 1);
    assert_eq!(message["candles"][0]["open_time"], T0 + 5 * MINUTE);
    // A corrected minute recomputes the bucket.
    hub.apply(&[minute("BTCUSDT", 9, 42.0)]);
    assert_eq!(render(&hub, 0, &five)["candles"][0]["close"], 42.0);
}

/// The 5m candle opened at `T0` as another replica stored it, closing at `close`.
fn stored_bucket(close: f64) -> Candle {
    Candle {
        interval: "5m".into(),
        close_time: T0 + 5 * MINUTE - 1,
        ..minute("BTCUSDT", 0, close)
    }
}

#[test]
fn a_seed_never_replaces_a_held_bucket_and_a_stored_one_does() {
    let hub = hub(&["1m", "5m"]);
    let five = candles_view(1, &[]);
    for m in 0..5 {
        hub.apply(&[minute("BTCUSDT", m, 100.0 + m as f64)]);
    }
    let built = render(&hub, 0, &five)["candles"][0].clone();
    // The exchange's REST row does not override the bucket built from final minutes.
    assert_eq!(
        hub.seed_building(1, &[stored_bucket(7.0)], &mut Vec::new()),
        0
    );
    assert_eq!(render(&hub, 0, &five)["candles"][0], built);
    // The store's candle does: it is what every replica and a restart read.
    assert_eq!(hub.apply_stored(1, &[stored_bucket(7.0)]), 1);
    assert_eq!(render(&hub, 0, &five)["candles"][0]["close"], 7.0);
    // The same candle again changes nothing, so clients get no repeat.
    assert_eq!(hub.apply_stored(1, &[stored_bucket(7.0)]), 0);
    // Not for the base window, another interval, or a coin not held.
    let mut other = stored_bucket(8.0);
    assert_eq!(hub.apply_stored(0, std::slice::from_ref(&other)), 0);
    other.interval = "15m".into();
    assert_eq!(hub.apply_stored(1, std::slice::from_ref(&other)), 0);
    other.interval = "5m".into();
    other.symbol = "DOGEUSDT".into();
    assert_eq!(hub.apply_stored(1, &[other]), 0);
}

#[test]
fn daily_candles_are_labelled_by_their_utc_date_in_the_compact_format() {
    let hub = hub(&["1m", "1d"]);
    let day = 1_763_769_600_000; // 2025-11-22 00:00 UTC
    let minutes: Vec<Candle> = (0..1440)
        .map(|m| {
            let mut c = minute("BTCUSDT", 0, 1.0 + m as f64);
            c.open_time = day + m * MINUTE;
            c.close_time = c.open_time + MINUTE - 1;
            c
        })
        .collect();
    hub.apply(&minutes);
    let compact = View {
        limit: 3,
        format: Format::Compact,
        interval: 1,
        indicators: Arc::new([]),
    };
    let message = render(&hub, 0, &compact);
    assert_eq!(message["time"], serde_json::json!(["2025-11-22"]));
    assert_eq!(message["values"], serde_json::json!([1440.0]));
}

#[test]
fn forming_candles_reach_only_their_listeners_and_never_after_the_close() {
    let hub = hub(&["1m", "5m"]);
    // Nobody listens: nothing is built.
    hub.forming(&[minute("BTCUSDT", 0, 1.0)]);
    let mut forming = hub.subscribe_forming();
    assert!(forming.borrow().coins.iter().all(Option::is_none));
    hub.apply(&[minute("BTCUSDT", 0, 10.0), minute("BTCUSDT", 1, 11.0)]);
    hub.forming(&[minute("BTCUSDT", 2, 15.0)]);
    assert!(forming.has_changed().unwrap());
    let snapshot = forming.borrow_and_update().clone();
    let one = snapshot.coins[slot(2, 0, 0)].as_ref().unwrap();
    let five = snapshot.coins[slot(2, 1, 0)].as_ref().unwrap();
    assert_eq!(one.open_time, T0 + 2 * MINUTE);
    let five: serde_json::Value = serde_json::from_str(five.text().as_str()).unwrap();
    assert_eq!(five["coin"], "BTCUSDT");
    assert_eq!(five["interval"], "5m");
    // The bucket so far: the two closed minutes and the forming one.
    assert_eq!(five["forming"]["open_time"], T0);
    assert_eq!(five["forming"]["open"], 9.0);
    assert_eq!(five["forming"]["close"], 15.0);
    assert_eq!(five["forming"]["volume"], 3.0);
    assert_eq!(five["forming"]["quote_volume"], 30.0);
    assert_eq!(five["forming"]["taker_buy_quote_volume"], 15.0);
    // An update for a minute already closed is stale and dropped.
    hub.forming(&[minute("BTCUSDT", 1, 99.0)]);
    assert!(!forming.has_changed().unwrap());
}

#[test]
fn indicators_use_the_closes_behind_the_window_and_are_null_until_enough_exist() {
    let hub = hub(&["1m"]);
    let sma3 = Indicator::parse("sma3").unwrap();
    let view = candles_view(0, &[sma3]);
    hub.apply(&[minute("BTCUSDT", 0, 1.0), minute("BTCUSDT", 1, 2.0)]);
    let message = render(&hub, 0, &view);
    assert_eq!(
        message["candles"][0]["indicators"],
        serde_json::json!({"sma3": null})
    );
    // Fifteen more minutes: the window shows ten, the closes hold them all.
    hub.apply(
        &(2..17)
            .map(|m| minute("BTCUSDT", m, 1.0 + m as f64))
            .collect::<Vec<_>>(),
    );
    let message = render(&hub, 0, &view);
    let candles = message["candles"].as_array().unwrap();
    assert_eq!(candles.len(), 10);
    assert_eq!(candles[0]["indicators"]["sma3"], 16.0);
    assert_eq!(candles[9]["indicators"]["sma3"], 7.0);
    // An older close arriving late changes the indicator view's version only.
    let before = hub.subscribe().borrow().frame(0, 0).clone();
    hub.apply(&[minute("BTCUSDT", -1, 0.0)]);
    let after = hub.subscribe().borrow().frame(0, 0).clone();
    assert_eq!(after.shown_version, before.shown_version);
    assert_eq!(after.version_for(&view), before.version_for(&view) + 1);
}

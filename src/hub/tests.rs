//! Unit tests of the hub: windows, versions and cached views.

use super::*;
use chrono_tz::Tz;

const MINUTE: i64 = 60_000;
const T0: i64 = 1_763_791_500_000; // 2025-11-22 06:05 UTC

fn candle(symbol: &str, minute: i64, open: f64, close: f64) -> Candle {
    Candle {
        symbol: symbol.into(),
        interval: "1m".into(),
        open_time: T0 + minute * MINUTE,
        close_time: T0 + (minute + 1) * MINUTE - 1,
        open,
        high: open.max(close),
        low: open.min(close),
        close,
        volume: 1.0,
        quote_volume: 1.0,
        taker_buy_volume: 0.5,
        taker_buy_quote_volume: 0.5,
        trades: 1,
    }
}

fn new_hub(symbols: &[&str], intervals: &[&str], history_len: usize, history_max: usize) -> Hub {
    let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    let intervals: Vec<Interval> = intervals
        .iter()
        .map(|i| Interval::parse(i).unwrap())
        .collect();
    let options = WindowOptions {
        history_len,
        history_max,
        time_zone: Tz::UTC,
        seeded: false,
    };
    Hub::new(&symbols, &intervals, &options)
}

fn hub(history_len: usize) -> Hub {
    new_hub(&["BTCUSDT", "ETHUSDT"], &["1m"], history_len, history_len)
}

fn view(limit: usize, format: Format) -> View {
    View {
        limit,
        format,
        interval: 0,
        indicators: Arc::new([]),
    }
}

fn message(hub: &Hub, position: usize) -> serde_json::Value {
    let snapshot = hub.subscribe().borrow().clone();
    serde_json::from_str(snapshot.coins[position].text.as_str()).unwrap()
}

#[test]
fn starts_with_empty_messages_for_every_coin() {
    let hub = hub(3);
    assert_eq!(
        message(&hub, 0),
        serde_json::json!({"coin":"BTCUSDT","values":[],"operations":[],"time":[]})
    );
    assert_eq!(message(&hub, 1)["coin"], "ETHUSDT");
}

#[test]
fn newest_first_with_operations_from_previous_closes() {
    let hub = hub(3);
    hub.apply(&[
        candle("BTCUSDT", 0, 10.0, 11.0),
        candle("BTCUSDT", 1, 11.0, 10.5), // SELL vs 11
        candle("BTCUSDT", 2, 10.5, 10.5), // BUY (equal)
        candle("BTCUSDT", 3, 10.5, 12.0), // BUY
    ]);
    assert_eq!(
        message(&hub, 0),
        serde_json::json!({
            "coin":"BTCUSDT",
            "values":[12.0,10.5,10.5],
            "operations":["BUY","BUY","SELL"],
            "time":["06:09","06:08","06:07"]
        })
    );
    assert_eq!(
        hub.newest("BTCUSDT"),
        Some(Newest {
            open_time: T0 + 3 * MINUTE,
            window_full: true
        })
    );
    assert_eq!(hub.newest("ETHUSDT"), None);
}

#[test]
fn the_only_candle_compares_with_its_open() {
    let hub = hub(3);
    hub.apply(&[candle("ETHUSDT", 0, 10.0, 9.0)]);
    assert_eq!(
        hub.newest("ETHUSDT"),
        Some(Newest {
            open_time: T0,
            window_full: false
        })
    );
    assert_eq!(message(&hub, 1)["operations"], serde_json::json!(["SELL"]));
}

#[test]
fn late_and_duplicate_candles_keep_the_window_ordered() {
    let hub = hub(3);
    let mut rx = hub.subscribe();
    rx.borrow_and_update();
    assert_eq!(
        hub.apply(&[
            candle("BTCUSDT", 0, 1.0, 1.0),
            candle("BTCUSDT", 2, 1.0, 3.0)
        ]),
        1
    );
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();
    // The same candle again changes nothing and wakes no one.
    assert_eq!(hub.apply(&[candle("BTCUSDT", 2, 1.0, 3.0)]), 0);
    assert!(!rx.has_changed().unwrap());
    // A late candle lands in the middle and recomputes the one after it.
    assert_eq!(hub.apply(&[candle("BTCUSDT", 1, 1.0, 4.0)]), 1);
    assert_eq!(
        message(&hub, 0)["values"],
        serde_json::json!([3.0, 4.0, 1.0])
    );
    assert_eq!(
        message(&hub, 0)["operations"],
        serde_json::json!(["SELL", "BUY", "BUY"])
    );
    let version = hub.subscribe().borrow().coins[0].shown_version;
    // A candle older than everything shown joins only the closes behind the
    // window (indicator inputs): the shown version stays.
    hub.apply(&[candle("BTCUSDT", 3, 3.0, 5.0)]);
    assert_eq!(hub.apply(&[candle("BTCUSDT", -5, 1.0, 1.0)]), 1);
    assert_eq!(hub.subscribe().borrow().coins[0].shown_version, version + 1);
    assert_eq!(
        message(&hub, 0)["values"],
        serde_json::json!([5.0, 3.0, 4.0])
    );
    // The hidden reference candle (minute 0) still drives the oldest operation.
    assert_eq!(
        message(&hub, 0)["operations"],
        serde_json::json!(["BUY", "SELL", "BUY"])
    );
    assert_eq!(hub.subscribe().borrow().coins[0].shown_version, version + 1);
}

#[test]
fn other_views_are_rendered_from_the_same_window_and_cached_per_version() {
    let hub = new_hub(&["BTCUSDT"], &["1m"], 2, 4);
    hub.apply(
        &(0..6)
            .map(|m| candle("BTCUSDT", m, 1.0, m as f64))
            .collect::<Vec<_>>(),
    );
    let snapshot = hub.subscribe().borrow().clone();
    let parse = |text: Utf8Bytes| serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap();
    // The default view is the published message itself.
    assert_eq!(
        hub.message(&snapshot, 0, &hub.default_view()).as_str(),
        snapshot.coins[0].text.as_str()
    );
    let longer = view(4, Format::Compact);
    assert_eq!(
        parse(hub.message(&snapshot, 0, &longer))["values"],
        serde_json::json!([5.0, 4.0, 3.0, 2.0])
    );
    let candles = view(2, Format::Candles);
    let message = parse(hub.message(&snapshot, 0, &candles));
    assert_eq!(message["coin"], "BTCUSDT");
    assert_eq!(message["candles"][0]["open_time"], T0 + 5 * MINUTE);
    assert_eq!(message["candles"][0]["close_time"], T0 + 6 * MINUTE - 1);
    assert_eq!(message["candles"][1]["close"], 4.0);
    assert_eq!(message["candles"].as_array().unwrap().len(), 2);
    // Asking for more than is kept gives what is kept.
    let all = view(50, Format::Compact);
    assert_eq!(
        parse(hub.message(&snapshot, 0, &all))["values"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // A new close invalidates the cached rendering.
    hub.apply(&[candle("BTCUSDT", 6, 1.0, 6.0)]);
    let snapshot = hub.subscribe().borrow().clone();
    assert_eq!(
        parse(hub.message(&snapshot, 0, &longer))["values"],
        serde_json::json!([6.0, 5.0, 4.0, 3.0])
    );
}

#[test]
fn a_corrected_candle_replaces_the_old_one() {
    let hub = hub(3);
    hub.apply(&[candle("BTCUSDT", 0, 1.0, 2.0)]);
    hub.apply(&[candle("BTCUSDT", 0, 1.0, 0.5)]);
    assert_eq!(message(&hub, 0)["values"], serde_json::json!([0.5]));
}

#[test]
fn other_symbols_and_intervals_are_ignored() {
    let hub = hub(3);
    let mut other = candle("BTCUSDT", 0, 1.0, 2.0);
    other.interval = "5m".into();
    assert_eq!(hub.apply(&[candle("DOGEUSDT", 0, 1.0, 2.0), other]), 0);
}

#[test]
fn only_changed_coins_get_a_new_version() {
    let hub = hub(3);
    hub.apply(&[candle("ETHUSDT", 0, 1.0, 2.0)]);
    let snapshot = hub.subscribe().borrow().clone();
    assert_eq!(snapshot.coins[0].version, 0);
    assert_eq!(snapshot.coins[1].version, 1);
}

#[test]
fn missing_lists_the_holes_of_a_window() {
    let hub = hub(10);
    assert!(
        hub.missing("BTCUSDT", 0, T0 + 10 * MINUTE, MINUTE)
            .is_empty()
    );
    hub.apply(&[
        candle("BTCUSDT", 0, 1.0, 1.0),
        candle("BTCUSDT", 1, 1.0, 1.0),
        candle("BTCUSDT", 3, 1.0, 1.0),
        candle("BTCUSDT", 6, 1.0, 1.0),
    ]);
    assert_eq!(
        hub.missing("BTCUSDT", 0, T0 + 8 * MINUTE, MINUTE),
        [2, 4, 5, 7].map(|m| T0 + m * MINUTE)
    );
    assert_eq!(
        hub.missing("BTCUSDT", T0 + 4 * MINUTE, T0 + 6 * MINUTE, MINUTE),
        [4, 5].map(|m| T0 + m * MINUTE)
    );
    assert!(hub.candle_at("BTCUSDT", T0 + 3 * MINUTE).is_some());
    assert!(hub.candle_at("BTCUSDT", T0 + 2 * MINUTE).is_none());
    assert!(hub.candle_at("DOGEUSDT", T0).is_none());
}

#[test]
fn views_nobody_holds_are_dropped_from_the_cache() {
    let hub = new_hub(&["BTCUSDT"], &["1m"], 2, 100);
    hub.apply(&[candle("BTCUSDT", 0, 1.0, 2.0)]);
    let compact = |limit| view(limit, Format::Compact);
    let kept = hub.hold(compact(5));
    let also_kept = hub.hold(compact(5));
    let passing: Vec<HeldView> = (10..60).map(|limit| hub.hold(compact(limit))).collect();
    let _default = hub.hold(hub.default_view());
    let snapshot = hub.subscribe().borrow().clone();
    for held in &passing {
        hub.message(&snapshot, 0, held.view());
    }
    assert_eq!(hub.cached_views(), 51, "the default view is never cached");
    drop(passing);
    assert_eq!(hub.cached_views(), 1);
    drop(kept);
    assert_eq!(hub.cached_views(), 1, "still held by another client");
    drop(also_kept);
    assert_eq!(hub.cached_views(), 0);
}

#[test]
fn a_client_gets_exactly_its_snapshot_even_when_a_newer_rendering_is_cached() {
    let hub = new_hub(&["BTCUSDT"], &["1m"], 2, 10);
    hub.apply(&[candle("BTCUSDT", 0, 1.0, 2.0)]);
    let view = view(5, Format::Compact);
    let _held = hub.hold(view.clone());
    let old = hub.subscribe().borrow().clone();
    hub.apply(&[candle("BTCUSDT", 1, 2.0, 3.0)]);
    let new = hub.subscribe().borrow().clone();
    let values = |text: Utf8Bytes| {
        serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap()["values"].clone()
    };
    // A faster client caches the new window first; the slower one, still on the
    // old snapshot, must not get the new window now (it would get it again later).
    assert_eq!(
        values(hub.message(&new, 0, &view)),
        serde_json::json!([3.0, 2.0])
    );
    assert_eq!(
        values(hub.message(&old, 0, &view)),
        serde_json::json!([2.0])
    );
    assert_eq!(
        values(hub.message(&new, 0, &view)),
        serde_json::json!([3.0, 2.0])
    );
}

#[test]
fn a_coin_added_later_gets_windows_of_its_own_and_moves_no_other() {
    let hub =
        new_hub(&["BTCUSDT", "ETHUSDT"], &["1m", "5m"], 3, 3).with_plain(&["ETHUSDT".to_owned()]);
    let view = view(3, Format::Candles);
    let _held = hub.hold(view.clone());
    hub.apply(&[candle("ETHUSDT", 0, 1.0, 2.0)]);
    let before = hub.message(&hub.snapshot(), 1, &view);
    let mut closes = hub.subscribe();
    closes.borrow_and_update();

    let added = hub.add_symbols(&["SOLUSDT".to_owned(), "ETHUSDT".to_owned()]);
    assert_eq!(added, ["SOLUSDT"], "a coin held is not added twice");
    assert_eq!(hub.position("SOLUSDT"), Some(2));
    assert_eq!(&*hub.symbols(), ["BTCUSDT", "ETHUSDT", "SOLUSDT"]);
    assert!(
        closes.has_changed().unwrap(),
        "the new frames are published"
    );
    let snapshot = hub.snapshot();
    assert_eq!((snapshot.symbols(), snapshot.coins.len()), (3, 6));
    assert_eq!(hub.message(&snapshot, 1, &view), before, "ETH's index kept");

    // Its candles land in its own windows, 5m buckets included.
    let sol: Vec<Candle> = (0..5).map(|m| candle("SOLUSDT", m, 5.0, 6.0)).collect();
    hub.apply(&sol);
    let snapshot = hub.snapshot();
    let last = hub.window_candles(&snapshot, 0, 2).pop().unwrap();
    assert_eq!(last.open_time, T0 + 4 * MINUTE);
    assert_eq!(hub.window_candles(&snapshot, 1, 2).len(), 1);
    assert_eq!(hub.window_candles(&snapshot, 0, 1).len(), 1);
    assert!(hub.window_candles(&snapshot, 0, 0).is_empty());
    let message: serde_json::Value =
        serde_json::from_str(hub.message(&snapshot, 2, &view).as_str()).unwrap();
    assert_eq!(message["coin"], "SOLUSDT");
    assert_eq!(
        hub.newest("SOLUSDT").map(|n| n.open_time),
        Some(T0 + 4 * MINUTE)
    );

    // Plain `/` stays with what it was given; a coin let go keeps its windows.
    assert_eq!(hub.plain_positions(), [1]);
    assert!(hub.let_go("BTCUSDT"));
    assert!(!hub.let_go("BTCUSDT"));
    assert_eq!(hub.followed(), ["ETHUSDT", "SOLUSDT"]);
    assert_eq!(hub.position("BTCUSDT"), Some(0));
    hub.add_symbols(&["BTCUSDT".to_owned()]);
    assert_eq!(
        hub.followed(),
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        "listed again"
    );
}

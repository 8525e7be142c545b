//! `SYMBOLS=*`: the longer intervals' buckets close whole without the base minutes
//! behind them. Each interval is built from the one below; the exchange's own
//! candles of the closed buckets (the seeds) complete the ones open at a cold
//! start, and the exchange's candle of a bucket that ended incomplete in minutes
//! (a contract's first hours after its listing) takes its place. On the fake
//! exchange's clock set to a chosen time of the UTC day.

mod common;

use common::contracts::*;
use common::*;
use std::time::Duration;

const DAY: i64 = 1_440 * MINUTE;

/// Sets the fake's clock to the latest `hh:mm` UTC not after now (whole minutes
/// behind the wall clock); returns that minute's open time.
fn clock_at(fake: &FakeExchange, hours: i64, minutes: i64) -> i64 {
    let wall = chrono::Utc::now().timestamp_millis().div_euclid(MINUTE) * MINUTE;
    let mut opened = wall.div_euclid(DAY) * DAY + (hours * 60 + minutes) * MINUTE;
    if opened > wall {
        opened -= DAY;
    }
    fake.set_clock_offset_ms(opened - wall);
    opened
}

/// Gives `symbol` every minute from `from` to the one before `until`, closed.
fn minutes_between(fake: &FakeExchange, symbol: &str, from: i64, until: i64) {
    let mut first = fake.history(symbol)[0].clone();
    first.open_time = from;
    first.close_time = from + MINUTE - 1;
    fake.set_history(symbol, vec![first]);
    while fake.history(symbol).last().unwrap().open_time < until - MINUTE {
        fake.close_next_silently(symbol);
    }
}

/// Waits (up to 60 s) until the fake has been asked for `symbol`'s klines of
/// `interval`: seeded, the last interval of a contract, even when none were closed.
async fn asked_for(fake: &FakeExchange, symbol: &str, interval: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !fake
        .rest_requests()
        .iter()
        .any(|r| r.symbol == symbol && r.interval == interval)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{symbol} {interval} never asked for"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `symbol`'s newest candle at `interval` is the fake's own.
async fn newest_is_the_exchange_s(
    app: &TestApp,
    fake: &FakeExchange,
    symbol: &str,
    interval: &str,
    within: Duration,
) {
    let exchange_s = exchange_s(fake, symbol, interval, 1);
    let deadline = std::time::Instant::now() + within;
    loop {
        let ours = served(app, symbol, interval, 1).await;
        if ours == exchange_s {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{symbol} {interval}: {ours:?}, the exchange's {exchange_s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With `SYMBOLS=*` the buckets open at a cold start close whole without their
/// base minutes being fetched: the day's closed `4h` candles come from the
/// exchange (the `4h` seeds), the open `4h` from the closed `1h` ones, and so on
/// down to the minutes of the recent window. On the exchange's clock at 23:57 UTC,
/// the day that closes three minutes later is the exchange's own day.
#[tokio::test]
async fn the_day_open_at_a_cold_start_closes_whole_without_its_minutes_fetched() {
    let backend = Backend::sqlite();
    let names = contracts(2);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 1).await;
    fake.freeze();
    let opened = clock_at(&fake, 23, 57);
    let day = opened.div_euclid(DAY) * DAY;
    for symbol in &refs {
        minutes_between(&fake, symbol, day, opened);
    }
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m,15m,1h,4h,1d"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    // The seeds of the day's closed buckets (one klines request per interval).
    let seeded = [
        ("5m", 23 * 60 + 50),
        ("15m", 23 * 60 + 30),
        ("1h", 22 * 60),
        ("4h", 16 * 60),
    ];
    for symbol in &names {
        for (interval, minute) in seeded {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !served(&app, symbol, interval, 20)
                .await
                .iter()
                .any(|c| c.0 == day + minute * MINUTE)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{symbol} {interval} not seeded"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // And the 1d windows asked for, the last of each contract, while the day was
    // open: only the intervals below can complete it.
    for symbol in &names {
        asked_for(&fake, symbol, "1d").await;
    }
    for _ in 0..3 {
        for symbol in &refs {
            fake.close_next(symbol);
        }
    }
    for symbol in &names {
        for interval in ["4h", "1d"] {
            let newest = exchange_s(&fake, symbol, interval, 1)[0].0;
            assert_eq!(newest + interval_len(interval), day + DAY);
            newest_is_the_exchange_s(&app, &fake, symbol, interval, Duration::from_secs(20)).await;
        }
    }
    // Only the recent window's minutes were asked for, not the day's.
    for request in fake.rest_requests().iter().filter(|r| r.interval == "1m") {
        let start = request.start_time.unwrap_or(0);
        assert!(
            start >= opened - 60 * MINUTE,
            "{} minutes fetched from {} min before the start",
            request.symbol,
            (opened - start) / MINUTE
        );
    }
    drop(app);
}

/// A contract listed at 11:17 has no minutes before then: its `1h` bucket of 11:00
/// and its `4h` bucket of 08:00, open at the start, never complete from minutes.
/// Once they end at noon, the exchange's own candle of each is fetched, once, and
/// served; a contract whole in minutes is never asked for one.
#[tokio::test]
async fn a_young_contract_s_first_buckets_are_the_exchange_s_own() {
    let backend = Backend::sqlite();
    let names = contracts(1);
    let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
    refs.push("NEWUSDT");
    let fake = FakeExchange::start_sized(&refs, 1).await;
    fake.freeze();
    let opened = clock_at(&fake, 11, 57);
    let day = opened.div_euclid(DAY) * DAY;
    for symbol in &names {
        minutes_between(&fake, symbol, day, opened);
    }
    let (eight, eleven) = (day + 8 * 60 * MINUTE, day + 11 * 60 * MINUTE);
    minutes_between(&fake, "NEWUSDT", eleven + 17 * MINUTE, opened);
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m,15m,1h,4h"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    // Seeded, the young contract last and its 4h window last of all (none of its
    // 1h and 4h buckets had closed then): from here on only a bucket's own request
    // can bring them.
    asked_for(&fake, "NEWUSDT", "4h").await;
    // Noon and the minute after it.
    for _ in 0..4 {
        for symbol in &refs {
            fake.close_next(symbol);
        }
    }
    for interval in ["1h", "4h"] {
        newest_is_the_exchange_s(&app, &fake, "NEWUSDT", interval, Duration::from_secs(30)).await;
    }
    assert_eq!(served(&app, "NEWUSDT", "1h", 1).await[0].0, eleven);
    assert_eq!(served(&app, "NEWUSDT", "4h", 1).await[0].0, eight);
    // Asked for once each, by the bucket's own interval; scans run every 10 s.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let asked = |interval: &str, open: i64| {
        fake.rest_requests()
            .iter()
            .filter(|r| {
                r.symbol == "NEWUSDT" && r.interval == interval && r.start_time == Some(open)
            })
            .count()
    };
    let longer: Vec<String> = fake
        .rest_requests()
        .iter()
        .filter(|r| r.symbol == "NEWUSDT" && r.interval != "1m")
        .map(|r| format!("{} {:?} {:?}", r.interval, r.start_time, r.limit))
        .collect();
    assert_eq!(
        (asked("1h", eleven), asked("4h", eight)),
        (1, 1),
        "NEWUSDT's requests of longer intervals: {longer:?}"
    );
    assert_eq!(asked_any_bucket(&fake, &names), 0);
    drop(app);
}

/// Klines requests of a longer interval for one bucket (`limit=1`) for `symbols`.
fn asked_any_bucket(fake: &FakeExchange, symbols: &[String]) -> usize {
    fake.rest_requests()
        .iter()
        .filter(|r| symbols.contains(&r.symbol) && r.interval != "1m" && r.limit == Some(1))
        .count()
}

fn interval_len(name: &str) -> i64 {
    common::fake_exchange::intervals::interval_ms(name).unwrap()
}

/// With `SYMBOLS=*` no deep base history is kept: the mirror answers a longer
/// interval's rows beyond the seeded window with the exchange's own (one request of
/// that interval), not by fetching and storing the thousands of minutes behind them.
#[tokio::test]
async fn rows_of_a_longer_interval_beyond_the_window_are_the_exchange_s_own() {
    let backend = Backend::sqlite();
    let names = contracts(1);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 400).await;
    fake.freeze();
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m,15m"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    windows_full(
        &app,
        &fake,
        &names,
        &["5m", "15m"],
        20,
        Duration::from_secs(60),
    )
    .await;
    let minutes_asked = |fake: &FakeExchange| {
        let requests = fake.rest_requests();
        requests.iter().filter(|r| r.interval == "1m").count()
    };
    let before = minutes_asked(&fake);
    let path = "/fapi/v1/klines?symbol=C000USDT&interval=5m&limit=60";
    let ours = common::mirror::mirror_get(&app, path).await;
    assert_eq!(ours.status, 200, "{}", ours.body);
    let now = chrono::Utc::now().timestamp_millis();
    let theirs = common::mirror::exchange_get(&fake, path).await;
    assert_eq!(ours.closed_rows(now).len(), 59);
    assert_eq!(ours.closed_rows(now), theirs.closed_rows(now));
    assert_eq!(
        minutes_asked(&fake),
        before,
        "minutes fetched to build 5m rows"
    );
}

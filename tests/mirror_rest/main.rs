//! Binance's USD-M REST protocol served by candlecast (DESIGN.md §8, issue 22):
//! every klines answer is held against the fake exchange's own answer to the same
//! request, and the exchange's request log against what the mirror should have
//! asked it: nothing for what the service holds, once for what it did not.

#[path = "../common/mod.rs"]
mod common;
mod forwarding;

use common::mirror::*;
use common::*;
use serde_json::{Value, json};

const BTC: &str = "BTCUSDT";

/// The service's answer and the exchange's to `query`, closed rows only (the
/// forming candle is the stream's on one side, the fake's synthetic one on the other).
async fn same_as_exchange(fake: &FakeExchange, app: &TestApp, query: &str) -> Vec<Value> {
    mirrored(fake, app, query).await.0
}

/// [`same_as_exchange`], and how many klines requests for history older than 20
/// minutes (not the service's own repairs near now) the mirror sent the exchange.
///
/// A query without times asks for the newest rows, which move when a minute closes:
/// between the two answers, or just before them while the service has yet to learn
/// of it (the fake adds the minute without a frame; the service fetches it). Such a
/// pair is asked again, for up to 40 s, until the rows agree.
async fn mirrored(fake: &FakeExchange, app: &TestApp, query: &str) -> (Vec<Value>, usize) {
    let mut asked = 0;
    for attempt in 1.. {
        let old = this_minute() - 20 * MINUTE;
        let before = klines_requests_in(fake, "", i64::MIN, old);
        let ours = mirror_get(app, &format!("/fapi/v1/klines?{query}")).await;
        asked += klines_requests_in(fake, "", i64::MIN, old) - before;
        assert_eq!(ours.status, 200, "{query}: {}", ours.body);
        assert_eq!(ours.headers["content-type"], "application/json");
        let theirs = exchange_get(fake, &format!("/fapi/v1/klines?{query}")).await;
        let now = chrono::Utc::now().timestamp_millis();
        let (ours, theirs) = (ours.closed_rows(now), theirs.closed_rows(now));
        let newest = !query.contains("Time=");
        if ours == theirs || !newest || attempt == 80 {
            assert_eq!(ours, theirs, "{query}");
            return (ours, asked);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    unreachable!("the loop returns by its third attempt")
}

async fn held_ranges_match_the_exchange_and_cost_it_nothing(backend: Backend) {
    let (fake, app) = mirror_on(&backend, 600, &[]).await;
    let now = this_minute();
    let (from, to) = (now - 60 * MINUTE, now - 31 * MINUTE);
    let q = |rest: String| format!("symbol={BTC}&{rest}");
    let mut asked = 0;
    let (rows, n) = mirrored(
        &fake,
        &app,
        &q(format!("interval=1m&startTime={from}&endTime={to}")),
    )
    .await;
    asked += n;
    assert_eq!(rows.len(), 30, "both ends included");
    let (rows, n) = mirrored(
        &fake,
        &app,
        &q(format!("interval=1m&startTime={from}&limit=5")),
    )
    .await;
    asked += n;
    assert_eq!(
        (rows.len(), &rows[0][0]),
        (5, &json!(from)),
        "the first rows from startTime"
    );
    let (rows, n) = mirrored(&fake, &app, &q(format!("interval=1m&endTime={to}&limit=7"))).await;
    asked += n;
    assert_eq!(
        (rows.len(), &rows[6][0]),
        (7, &json!(to)),
        "the rows ending at endTime"
    );
    // Intervals INTERVALS does not list, folded from the held minutes.
    let (rows, n) = mirrored(
        &fake,
        &app,
        &q(format!("interval=3m&startTime={from}&endTime={to}")),
    )
    .await;
    asked += n;
    assert_eq!(rows.len(), 10);
    let (_, n) = mirrored(
        &fake,
        &app,
        &q(format!("interval=15m&startTime={from}&limit=2")),
    )
    .await;
    asked += n;
    // The newest rows: the closed ones are the exchange's.
    let (polled, _) = mirrored(&fake, &app, &q("interval=5m&limit=12".into())).await;
    assert!(polled.len() >= 10, "{polled:?}");
    assert_eq!(asked, 0, "the exchange was not asked");
}

#[tokio::test]
async fn held_ranges_match_the_exchange_and_cost_it_nothing_on_mongodb() {
    held_ranges_match_the_exchange_and_cost_it_nothing(Backend::mongo()).await;
}

#[tokio::test]
async fn held_ranges_match_the_exchange_and_cost_it_nothing_on_sqlite() {
    held_ranges_match_the_exchange_and_cost_it_nothing(Backend::sqlite()).await;
}

async fn a_range_not_held_is_fetched_once_stored_and_then_held(backend: Backend) {
    let (fake, app) = mirror_on(&backend, 900, &[]).await;
    let history = fake.history(BTC);
    let old = |n: usize| history[n].open_time;
    let query = format!(
        "symbol={BTC}&interval=1m&startTime={}&endTime={}",
        old(100),
        old(199)
    );
    let (rows, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!((rows.len(), asked), (100, 1), "fetched once");
    for candle in &history[100..200] {
        assert!(
            backend_catches_up(&backend, candle).await,
            "stored: {candle:?}"
        );
    }
    let (_, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!(asked, 0, "held now");

    // A longer interval nobody serves, over history not held: fetched once too.
    let two_hours = 2 * 60 * MINUTE;
    let bucket = (old(300) / two_hours + 1) * two_hours;
    let query = format!("symbol={BTC}&interval=2h&startTime={bucket}&limit=2");
    let (rows, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!((rows.len(), asked), (2, 1), "{rows:?}");
    let (_, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!(asked, 0, "held now");
}

/// Whether `candle` reaches the store within a few seconds (the writer's queue).
async fn backend_catches_up(backend: &Backend, candle: &candlecast::candle::Candle) -> bool {
    for _ in 0..100 {
        if backend.stored(&candle.symbol).await.contains(candle) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_range_not_held_is_fetched_once_stored_and_then_held_on_mongodb() {
    a_range_not_held_is_fetched_once_stored_and_then_held(Backend::mongo()).await;
}

#[tokio::test]
async fn a_range_not_held_is_fetched_once_stored_and_then_held_on_sqlite() {
    a_range_not_held_is_fetched_once_stored_and_then_held(Backend::sqlite()).await;
}

/// A follower never reads the exchange's kline strings (it has no upstream): it
/// writes each symbol's decimals as exchangeInfo lists them, digit for digit
/// what the exchange writes, XRP's four price decimals as BTC's two.
#[tokio::test]
async fn a_follower_writes_the_exchange_s_decimals_from_its_listing() {
    let backend = Backend::mongo();
    let (fake, _ingester) = mirror_on(&backend, 120, &[]).await;
    let history = fake.history("XRPUSDT");
    let newest = history[history.len() - 15].open_time;
    for symbol in [BTC, "XRPUSDT"] {
        let stored = &fake.history(symbol)[history.len() - 15];
        assert!(
            backend_catches_up(&backend, stored).await,
            "stored: {stored:?}"
        );
    }
    let follower = TestApp::spawn(config_for(&fake, &backend, &[("INGEST", "false")])).await;
    for symbol in [BTC, "XRPUSDT"] {
        let query = format!("symbol={symbol}&interval=5m&endTime={newest}&limit=12");
        let before = fake.rest_requests().len();
        let (ours, theirs) = (
            mirror_get(&follower, &format!("/fapi/v1/klines?{query}")).await,
            exchange_get(&fake, &format!("/fapi/v1/klines?{query}")).await,
        );
        assert_eq!(ours.body, theirs.body, "{symbol}: byte for byte");
        assert!(ours.body.contains(".000\""), "padded: {}", ours.body);
        let asked: Vec<_> = fake.rest_requests()[before..]
            .iter()
            .filter(|r| r.symbol == symbol)
            .map(|r| (r.interval.clone(), r.start_time, r.end_time, r.limit))
            .collect();
        assert_eq!(
            asked.len(),
            1,
            "only the test's own request reached the exchange: {asked:?}"
        );
    }
}

#[tokio::test]
async fn two_identical_requests_share_one_exchange_request() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 600, &[]).await;
    let first = fake.history(BTC)[0].open_time;
    fake.set_rest_delay_ms(400);
    let before = klines_requests_in(&fake, BTC, i64::MIN, first + 400 * MINUTE);
    let query = format!("/fapi/v1/klines?symbol={BTC}&interval=1m&startTime={first}&limit=50");
    let (a, b) = tokio::join!(mirror_get(&app, &query), mirror_get(&app, &query));
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
    assert_eq!(a.json().as_array().unwrap().len(), 50);
    assert_eq!(
        klines_requests_in(&fake, BTC, i64::MIN, first + 400 * MINUTE),
        before + 1
    );
}

#[tokio::test]
async fn the_first_candle_ever_probe_gets_the_exchange_s_first_candle() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 600, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    // python-binance's `_get_earliest_valid_timestamp`.
    let query = format!("symbol={BTC}&interval=1m&limit=1&startTime=0&endTime={now}");
    let (rows, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], json!(fake.history(BTC)[0].open_time));
    assert!(asked >= 1);
    let (_, asked) = mirrored(&fake, &app, &query).await;
    assert_eq!(asked, 0, "known now");

    // At a longer interval the listing's first bucket holds only the minutes
    // after it, as on Binance.
    for interval in ["1h", "4h"] {
        let query = format!("symbol={BTC}&interval={interval}&limit=3&startTime=0&endTime={now}");
        let (rows, _) = mirrored(&fake, &app, &query).await;
        let length = candlecast::candle::Interval::parse(interval).unwrap();
        let first = length.open_time_containing(fake.history(BTC)[0].open_time);
        assert_eq!(rows[0][0], json!(first), "{interval}");
        let (_, asked) = mirrored(&fake, &app, &query).await;
        assert_eq!(asked, 0, "{interval}: known now");
    }
}

#[tokio::test]
async fn the_last_row_is_the_candle_still_forming() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 120, &[]).await;
    let forming = fake.send_forming(BTC);
    let query = format!("/fapi/v1/klines?symbol={BTC}&interval=1m&limit=3");
    let mut last = Value::Null;
    for _ in 0..100 {
        let rows = mirror_get(&app, &query).await.json();
        last = rows[2].clone();
        if last[0] == json!(forming.open_time) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let expected = common::fake_exchange::rest_row(&forming);
    assert_eq!(last, expected, "the forming candle, as the stream sent it");
    // A newer update of it replaces the last row; the closed rows stay as they were.
    let before = mirror_get(&app, &query).await.json();
    let mut forming = forming;
    forming.close += 1.5;
    forming.high = forming.high.max(forming.close);
    forming.volume += 2.0;
    fake.send_update(&forming, false);
    let expected = common::fake_exchange::rest_row(&forming);
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = mirror_get(&app, &query).await.json();
        if rows[2] == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows[2], expected, "the newest update");
    assert_eq!(
        rows.as_array().unwrap()[..2],
        before.as_array().unwrap()[..2]
    );

    // 5m (not served): the bucket so far, its closed minutes and the forming one.
    let five = 5 * MINUTE;
    let open = forming.open_time - forming.open_time.rem_euclid(five);
    let mut parts: Vec<_> = fake
        .history(BTC)
        .into_iter()
        .filter(|c| c.open_time >= open && c.open_time < forming.open_time)
        .collect();
    parts.push(forming.clone());
    let interval = candlecast::candle::Interval::parse("5m").unwrap();
    let bucket = candlecast::candle::aggregate(&interval, open, &parts);
    let rows = mirror_get(
        &app,
        &format!("/fapi/v1/klines?symbol={BTC}&interval=5m&limit=2"),
    )
    .await
    .json();
    assert_eq!(rows[1], common::fake_exchange::rest_row(&bucket));
}

#[tokio::test]
async fn errors_are_binance_s() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 120, &[]).await;
    // No wall-clock minute adds a candle between the answer and the count.
    fake.freeze();
    let cases = [
        (
            "interval=1m",
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        (
            "symbol=BTCUSDT",
            -1102,
            "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
        ),
        ("symbol=BTCUSDT&interval=7m", -1120, "Invalid interval."),
        ("symbol=NOPEUSDT&interval=1m", -1121, "Invalid symbol."),
        (
            "symbol=BTCUSDT&interval=1m&limit=1501",
            -1130,
            "Data sent for parameter 'limit' is not valid.",
        ),
        (
            "symbol=BTCUSDT&interval=1m&limit=ten",
            -1100,
            "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
        ),
        (
            "symbol=BTCUSDT&interval=1m&startTime=1763791500000&endTime=1763791440000",
            -1023,
            "Start time is greater than end time.",
        ),
        (
            "symbol=BTCUSDT&interval=1m&symbol=ETHUSDT",
            -1101,
            "Duplicate values for a parameter detected.",
        ),
    ];
    for (query, code, msg) in cases {
        let answer = mirror_get(&app, &format!("/fapi/v1/klines?{query}")).await;
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.json(), json!({"code": code, "msg": msg}), "{query}");
    }
    // The newest close the fake made before it froze may still be on its way.
    let all = fake.history("BTCUSDT").len();
    let mut rows = Value::Null;
    for _ in 0..40 {
        rows = mirror_get(&app, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m")
            .await
            .json();
        if rows.as_array().unwrap().len() == all {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        rows.as_array().unwrap().len(),
        all,
        "limit 500 by default: all the fake has"
    );
    let rows = mirror_get(
        &app,
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1500",
    )
    .await;
    assert_eq!(rows.status, 200);
}

#[tokio::test]
async fn ping_time_and_exchange_info_are_the_exchange_s() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 120, &[]).await;
    fake.list_symbol("BTCUSDT_260626", "CURRENT_QUARTER");
    let ping = mirror_get(&app, "/fapi/v1/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "{}"));
    let time = mirror_get(&app, "/fapi/v1/time").await.json();
    let server = exchange_get(&fake, "/fapi/v1/time").await.json();
    let skew = time["serverTime"].as_i64().unwrap() - server["serverTime"].as_i64().unwrap();
    assert!(skew.abs() < 2_000, "{time} vs {server}");
    let ours = mirror_get(&app, "/fapi/v1/exchangeInfo").await;
    assert_eq!(ours.headers["content-type"], "application/json");
    let mut ours = ours.json();
    let mut theirs = exchange_get(&fake, "/fapi/v1/exchangeInfo").await.json();
    ours["serverTime"] = Value::Null;
    theirs["serverTime"] = Value::Null;
    // Listed after the cache was filled: the cache still has the exchange's
    // earlier answer, symbols exactly as it listed them then.
    let listed = |info: &Value| {
        info["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["symbol"].clone())
            .collect::<Vec<_>>()
    };
    let mut now_listed = listed(&theirs);
    now_listed.retain(|s| s != "BTCUSDT_260626");
    assert_eq!(listed(&ours), now_listed);
    theirs["symbols"] = ours["symbols"].clone();
    assert_eq!(ours, theirs);
}

//! The stream state machine without sockets: feeds shared and ended with their last
//! subscriber, subscriptions listed in order, Binance's limits.

use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::*;
use crate::candle::Interval;
use crate::clock::Clock;
use crate::hub::{Hub, WindowOptions};
use crate::read::CandleReader;
use crate::store::{SqliteStore, Unacknowledged};

/// A market over an empty hub; the store under the read path is never asked.
fn market() -> Market {
    let symbols = vec!["BTCUSDT".to_owned(), "ETHUSDT".to_owned()];
    let intervals = vec![
        Interval::parse("1m").unwrap(),
        Interval::parse("5m").unwrap(),
    ];
    let options = WindowOptions {
        history_len: 10,
        history_max: 10,
        time_zone: Tz::UTC,
        seeded: false,
    };
    let hub = Hub::new(&symbols, &intervals, &options);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let reader = CandleReader::new(hub, Unacknowledged::default(), store);
    Market::new(reader, Clock::system())
}

fn ask(session: &mut Session, request: Value) -> Value {
    serde_json::from_str(session.handle(&request.to_string()).as_str()).unwrap()
}

#[tokio::test]
async fn one_feed_per_stream_however_many_subscribe_and_none_after_the_last_leaves() {
    let market = market();
    let (first, _inbox) = inbox(1);
    let (second, _other) = inbox(2);
    let paths = [
        "btcusdt@kline_1m",
        "btcusdt@kline_3m",
        "0",
        "dogeusdt@kline_1m",
    ];
    let mut a = Session::open(market.clone(), first, paths, false).unwrap();
    let b = Session::open(market.clone(), second, ["btcusdt@kline_1m"], true).unwrap();
    // The symbol SYMBOLS does not follow is subscribed but has no feed.
    assert_eq!(a.streams(), 3);
    assert_eq!(market.feeds(), 2);
    drop(b);
    assert_eq!(market.feeds(), 2);
    let answer = ask(
        &mut a,
        json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_3m"], "id": 1}),
    );
    assert_eq!(answer, json!({"result": null, "id": 1}));
    assert_eq!(market.feeds(), 1);
    let answer = ask(&mut a, json!({"method": "LIST_SUBSCRIPTIONS", "id": 2}));
    assert_eq!(
        answer["result"],
        json!(["btcusdt@kline_1m", "dogeusdt@kline_1m"])
    );
    drop(a);
    assert_eq!(market.feeds(), 0);
}

#[tokio::test]
async fn streams_that_cannot_be_built_are_accepted_and_silent() {
    let market = market();
    let (sink, _inbox) = inbox(1);
    let names = [
        "btcusdt@kline_1M",
        // Binance's own 3-day buckets: forwarded on REST, not built here either.
        "btcusdt@kline_3d",
        "btcusdt_next_quarter@continuousKline_1m",
        "btcusdt@kline_1w",
    ];
    let session = Session::open(market.clone(), sink, names, false).unwrap();
    assert_eq!(session.streams(), 4);
    assert_eq!(market.feeds(), 1, "only the weekly stream is built");
}

#[tokio::test]
async fn a_subscription_beyond_1024_streams_is_refused_whole() {
    let market = market();
    let (sink, _inbox) = inbox(1);
    let names: Vec<String> = (0..MAX_STREAMS - 1)
        .map(|i| format!("c{i}@kline_1m"))
        .collect();
    let mut session = Session::open(market, sink, names.iter().map(String::as_str), false).unwrap();
    let answer = ask(
        &mut session,
        json!({"method": "SUBSCRIBE", "params": ["a@kline_1m", "b@kline_1m"], "id": 1}),
    );
    assert_eq!(
        answer,
        json!({"error": {"code": 2, "msg": "Invalid request: too many streams"}, "id": 1})
    );
    assert_eq!(session.streams(), MAX_STREAMS - 1);
    // Already subscribed streams do not count twice.
    let answer = ask(
        &mut session,
        json!({"method": "SUBSCRIBE", "params": ["c0@kline_1m", "a@kline_1m"], "id": 2}),
    );
    assert_eq!(answer, json!({"result": null, "id": 2}));
    assert_eq!(session.streams(), MAX_STREAMS);
}

#[tokio::test]
async fn more_than_ten_messages_within_a_second_are_over_the_limit() {
    let (sink, _inbox) = inbox(1);
    let mut session = Session::open(market(), sink, [], false).unwrap();
    let start = Instant::now();
    for i in 0..10 {
        assert!(session.admit(start + Duration::from_millis(i * 90)));
    }
    // The eleventh within a second of the first.
    assert!(!session.admit(start + Duration::from_millis(950)));

    let (sink, _inbox) = inbox(2);
    let mut steady = Session::open(market(), sink, [], false).unwrap();
    for i in 0..100 {
        assert!(steady.admit(start + Duration::from_millis(i * 100)), "{i}");
    }
}

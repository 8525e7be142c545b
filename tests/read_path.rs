//! Every read sees every candle the service holds (DESIGN.md §7): with windows of 21
//! candles, 112 close in quick succession while the database stalls (MongoDB frozen
//! with SIGSTOP, stopped and started again, or SQLite's file locked by another
//! writer). A resume, the history API and the CSV export must each give all of them,
//! once, in order, from memory while the database does not answer, and from memory
//! and store merged once it does.

mod common;

use std::time::Duration;

use candlecast::candle::Candle;
use common::mongo_server::MongoServer;
use common::*;
use serde_json::Value;

/// How the database is kept from acknowledging writes during the burst.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// MongoDB frozen (SIGSTOP): connections open, nothing answered.
    Frozen,
    /// MongoDB stopped, then started again on the same data.
    Restarted,
    /// The SQLite file held by another writer's exclusive transaction.
    Locked,
}

/// The open times in a `candles` message, newest first as sent.
fn open_times(message: &Value) -> Vec<i64> {
    message["candles"]
        .as_array()
        .expect("a candles message")
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect()
}

fn newest(message: &Value) -> i64 {
    open_times(message)[0]
}

/// The 5-minute buckets whose five minutes are all in `history`, opened after
/// `since`, newest first.
fn whole_five_minutes_after(history: &[Candle], since: i64) -> Vec<i64> {
    whole_buckets(history, 5)
        .into_iter()
        .filter(|b| *b > since)
        .collect()
}

/// The buckets of `minutes` whose minutes are all in `history`, newest first.
fn whole_buckets(history: &[Candle], minutes: i64) -> Vec<i64> {
    let held: std::collections::BTreeSet<i64> = history.iter().map(|c| c.open_time).collect();
    let mut buckets: Vec<i64> = held
        .iter()
        .map(|t| t - t.rem_euclid(minutes * MINUTE))
        .filter(|b| (0..minutes).all(|i| held.contains(&(b + i * MINUTE))))
        .collect();
    buckets.dedup();
    buckets.reverse();
    buckets
}

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", app.addr))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The open times the history API answers for `query`, newest first.
async fn api_open_times(app: &TestApp, query: &str) -> Vec<i64> {
    api_open_times_of(app, "BTCUSDT", query).await
}

/// The open times the history API answers for `symbol` and `query`, newest first.
async fn api_open_times_of(app: &TestApp, symbol: &str, query: &str) -> Vec<i64> {
    let (status, body) = get(app, &format!("/api/v1/candles/{symbol}?{query}")).await;
    assert_eq!(status, 200, "{symbol}?{query}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    open_times(&body)
}

/// Holds SQLite's write lock as another process's writer would.
fn lock_sqlite(backend: &Backend) -> rusqlite::Connection {
    let Backend::Sqlite { dir } = backend else {
        panic!("a SQLite lock on MongoDB");
    };
    let connection =
        rusqlite::Connection::open(dir.path().join(candlecast::store::SQLITE_FILE)).unwrap();
    connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
    connection
}

async fn every_read_sees_every_candle(stall: Stall) {
    let mut server = match stall {
        Stall::Locked => None,
        Stall::Frozen | Stall::Restarted => Some(MongoServer::start().await),
    };
    let backend = match &server {
        Some(server) => Backend::Mongo {
            uri: server.uri(),
            database: unique_database("read_path"),
        },
        None => Backend::sqlite(),
    };
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("HISTORY_MAX", "20"), ("INTERVALS", "1m,5m")],
    ))
    .await;
    fake.wait_for_connections(1).await;
    let url = |query: &str| format!("{}?format=candles&symbols=BTCUSDT&{query}", app.ws_url());
    // The newest minute ends a 5m bucket, and everything up to it is stored: what
    // closes next is held in memory alone while the database is away.
    while (fake.history("BTCUSDT").last().unwrap().open_time + MINUTE) % (5 * MINUTE) != 0 {
        fake.close_next("BTCUSDT");
    }
    backend
        .wait_for_stored("BTCUSDT", &fake.history("BTCUSDT"))
        .await;
    // What two clients hold before they go away.
    let held = newest(&Client::connect(&url("")).await.next_json().await);
    let held_buckets = newest(&Client::connect(&url("interval=5m")).await.next_json().await);
    let mut watcher = Client::connect(&url("limit=1")).await;
    watcher.next_json().await;

    // The database stops acknowledging; 112 candles close in quick succession.
    let mut lock = None;
    match (stall, &mut server) {
        (Stall::Frozen, Some(server)) => server.pause(),
        (Stall::Restarted, Some(server)) => server.stop().await,
        _ => lock = Some(lock_sqlite(&backend)),
    }
    let closed: Vec<Candle> = (0..112).map(|_| fake.close_next("BTCUSDT")).collect();
    let last = closed.last().unwrap().open_time;
    while newest(&watcher.next_json().await) != last {}

    // A resume from before the burst: all 112, newest first, with their values.
    let mut resumed = Client::connect(&url(&format!("since={held}"))).await;
    let message = resumed.next_json().await;
    let expected: Vec<i64> = closed.iter().rev().map(|c| c.open_time).collect();
    assert_eq!(
        open_times(&message),
        expected,
        "every candle closed meanwhile"
    );
    let closes: Vec<f64> = message["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["close"].as_f64().unwrap())
        .collect();
    assert_eq!(
        closes,
        closed.iter().rev().map(|c| c.close).collect::<Vec<_>>()
    );
    let history = fake.history("BTCUSDT");
    let mut resumed_buckets =
        Client::connect(&url(&format!("interval=5m&since={held_buckets}"))).await;
    assert_eq!(
        open_times(&resumed_buckets.next_json().await),
        whole_five_minutes_after(&history, held_buckets),
        "every whole 5m bucket since"
    );

    // The history API and the CSV export agree, with the database still away.
    let newest_100: Vec<i64> = history
        .iter()
        .rev()
        .take(100)
        .map(|c| c.open_time)
        .collect();
    assert_eq!(api_open_times(&app, "limit=100").await, newest_100);
    assert_eq!(
        api_open_times(&app, "interval=5m&limit=20").await,
        whole_five_minutes_after(&history, 0)[..20]
    );
    let (status, csv) = get(
        &app,
        &format!(
            "/api/v1/candles/BTCUSDT?format=csv&from={}&to={}",
            closed[0].open_time,
            last + MINUTE
        ),
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    let rows: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|row| row.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows, closed.iter().map(|c| c.open_time).collect::<Vec<_>>());

    // The next close reaches the resumed client once, as it reaches a plain one.
    let next = fake.close_next("BTCUSDT");
    assert_eq!(newest(&resumed.next_json().await), next.open_time);

    // The database comes back: everything lands once, and reads that need the
    // store merge it with memory without a gap.
    match (stall, &mut server) {
        (Stall::Frozen, Some(server)) => server.unpause(),
        (Stall::Restarted, Some(server)) => server.resume().await,
        _ => drop(lock.take()),
    }
    let history = fake.history("BTCUSDT");
    let stored = backend
        .wait_for_stored_within(60, "BTCUSDT", &history)
        .await;
    assert_eq!(
        stored, history,
        "stored once each, as the exchange sent them"
    );
    let all: Vec<i64> = history.iter().rev().map(|c| c.open_time).collect();
    assert_eq!(api_open_times(&app, "limit=1000").await, all);
    let mut from_the_start =
        Client::connect(&url(&format!("since={}", history[0].open_time))).await;
    assert_eq!(
        open_times(&from_the_start.next_json().await),
        all[..all.len() - 1]
    );
    let first_bucket = whole_five_minutes_after(&history, 0).pop().unwrap();
    let mut buckets_from_the_start =
        Client::connect(&url(&format!("interval=5m&since={first_bucket}"))).await;
    assert_eq!(
        open_times(&buckets_from_the_start.next_json().await),
        whole_five_minutes_after(&history, first_bucket)
    );
    // Nothing more than one message per close reached the resumed client meanwhile.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), resumed.next_json())
            .await
            .is_err(),
        "no message without a close"
    );
    app.stop().await.unwrap();
}

/// Right after a first start, the longer intervals' windows fill from the deep
/// history while the database stalls: the history API answers what the socket
/// shows, bucket for bucket.
async fn the_history_api_answers_what_the_socket_shows_after_a_first_start(stall: Stall) {
    let server = match stall {
        Stall::Locked => None,
        Stall::Frozen | Stall::Restarted => Some(MongoServer::start().await),
    };
    let backend = match &server {
        Some(server) => Backend::Mongo {
            uri: server.uri(),
            database: unique_database("read_path_first_start"),
        },
        None => Backend::sqlite(),
    };
    // The default HISTORY_MAX (100): the deep history covers 101 hours.
    let fake = FakeExchange::start_sized(&SYMBOLS, 103 * 60).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INTERVALS", "1m,5m,15m,1h")],
    ))
    .await;
    let history = fake.history("XRPUSDT");
    // The issue's own queries: 1h with limit 30, 5m with limit 50.
    let intervals = [("1h", 60, 30), ("15m", 15, 30), ("5m", 5, 50)];
    let mut shown = Vec::new();
    for (interval, minutes, limit) in intervals {
        let expected = whole_buckets(&history, minutes)[..limit].to_vec();
        let url = format!(
            "{}?format=candles&symbols=XRPUSDT&interval={interval}&limit={limit}",
            app.ws_url()
        );
        // The deep history arrives in the background: the socket shows it first.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let window = loop {
            let window = open_times(&Client::connect(&url).await.next_json().await);
            if window == expected || tokio::time::Instant::now() > deadline {
                break window;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(window, expected, "{interval} on the socket");
        shown.push(window);
    }
    // The store may still be catching up, and now stalls too.
    let _lock = match &server {
        Some(server) => {
            server.pause();
            None
        }
        None => Some(lock_sqlite(&backend)),
    };
    for ((interval, _, limit), window) in intervals.iter().zip(shown) {
        let query = format!("interval={interval}&limit={limit}");
        assert_eq!(
            api_open_times_of(&app, "XRPUSDT", &query).await,
            window,
            "{interval}: the API answers what the socket shows"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_history_api_answers_what_the_socket_shows_while_mongodb_is_frozen() {
    the_history_api_answers_what_the_socket_shows_after_a_first_start(Stall::Frozen).await;
}

#[tokio::test]
async fn the_history_api_answers_what_the_socket_shows_while_sqlite_is_locked() {
    the_history_api_answers_what_the_socket_shows_after_a_first_start(Stall::Locked).await;
}

#[tokio::test]
async fn every_read_sees_every_candle_while_mongodb_is_frozen() {
    every_read_sees_every_candle(Stall::Frozen).await;
}

#[tokio::test]
async fn every_read_sees_every_candle_while_mongodb_restarts() {
    every_read_sees_every_candle(Stall::Restarted).await;
}

#[tokio::test]
async fn every_read_sees_every_candle_while_sqlite_is_locked() {
    every_read_sees_every_candle(Stall::Locked).await;
}

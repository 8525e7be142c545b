//! `SYMBOLS=*`: every contract the exchange lists as `TRADING` is followed, plain
//! `/` keeps sending the five majors in their order, `?symbols=` picks any followed
//! contract, `/api/v1/info` lists what is followed; contracts listed and delisted
//! while the service runs are followed and let go.

mod common;

use common::contracts::*;
use common::*;
use std::time::Duration;

use serde_json::Value;

async fn every_trading_contract_is_followed_and_plain_clients_keep_the_majors(backend: Backend) {
    let names = contracts(40);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 30).await;
    // Only the test's closes add candles: a wall-clock minute would race the
    // comparisons with the fake's history.
    fake.freeze();
    fake.set_status("C007USDT", "SETTLING");
    fake.set_status("C008USDT", "PENDING_TRADING");
    let app = TestApp::spawn(config_for(&fake, &backend, &[("SYMBOLS", "*")])).await;

    // The majors first, then the exchange's order; what is not TRADING is not followed.
    let expected: Vec<String> = names
        .iter()
        .filter(|s| !["C007USDT", "C008USDT"].contains(&s.as_str()))
        .cloned()
        .collect();
    assert_eq!(info_symbols(&app).await, expected);

    // Plain `/`: the five majors, in their order, as without SYMBOLS=*.
    let mut plain = app.client().await;
    let first = plain.next_n(5).await;
    let coins: Vec<&str> = first.iter().map(|m| m["coin"].as_str().unwrap()).collect();
    assert_eq!(coins, MAJORS);
    for (message, symbol) in first.iter().zip(MAJORS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }
    // `?symbols=` picks any followed contract, its window full from the exchange.
    let url = format!("ws://{}/?symbols=C031USDT,ETHUSDT", app.addr);
    let mut picked = Client::connect(&url).await;
    let messages = picked.next_n(2).await;
    assert_eq!(
        messages[0],
        expected_message("C031USDT", &fake.history("C031USDT"), 10, chrono_tz::UTC)
    );
    assert_eq!(messages[1]["coin"], "ETHUSDT");

    // A close of a contract plain clients do not see reaches only those who asked.
    let other = fake.close_next("C031USDT");
    let btc = fake.close_next("BTCUSDT");
    let next = plain.next_json().await;
    assert_eq!(next["coin"], "BTCUSDT", "plain / got {next}");
    assert_eq!(
        next,
        expected_message("BTCUSDT", &fake.history("BTCUSDT"), 10, chrono_tz::UTC)
    );
    let next: Value = picked.next_json().await;
    assert_eq!(next["coin"], "C031USDT");
    assert!(
        next.to_string().contains(&other.close.to_string()),
        "{next} lacks {other:?}"
    );
    let _ = btc;
}

#[tokio::test]
async fn every_trading_contract_is_followed_and_plain_clients_keep_the_majors_on_sqlite() {
    every_trading_contract_is_followed_and_plain_clients_keep_the_majors(Backend::sqlite()).await;
}

#[tokio::test]
async fn every_trading_contract_is_followed_and_plain_clients_keep_the_majors_on_mongodb() {
    every_trading_contract_is_followed_and_plain_clients_keep_the_majors(Backend::mongo()).await;
}

/// A restart loads the base and seeded windows from the store: every 1m window is
/// served within 30 s, and the exchange is asked only for what closed meanwhile.
async fn a_restart_is_cheap(backend: Backend) {
    let names = contracts(35);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 400).await;
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m,15m"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let all = ["5m", "15m"];
    windows_full(&app, &fake, &names, &all, 20, Duration::from_secs(120)).await;
    // Stop once the store holds every seeded window (the writer's queue drains
    // slower than memory fills on a busy machine; what it never stored a restart
    // must fetch again, which is not what this test is about).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for symbol in &names {
        loop {
            let stored = backend.stored(symbol).await;
            let count = |i: &str| stored.iter().filter(|c| c.interval == i).count();
            if count("5m") >= 21 && count("15m") >= 21 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{symbol}'s seeds not stored"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    app.stop().await.unwrap();

    let before = fake.rest_requests().len();
    let restarted = std::time::Instant::now();
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    windows_full(&app, &fake, &names, &["1m"], 21, Duration::from_secs(30)).await;
    let served_in = restarted.elapsed();
    windows_full(&app, &fake, &names, &all, 20, Duration::from_secs(60)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let asked: Vec<_> = fake.rest_requests()[before..].to_vec();
    for request in &asked {
        let len = common::fake_exchange::intervals::interval_ms(&request.interval).unwrap();
        let start = request.start_time.unwrap_or(0);
        assert!(
            start >= now - 3 * len - 2 * MINUTE,
            "a restart fetched more than the gap: {} {} from {start} ({} s back)",
            request.symbol,
            request.interval,
            (now - start) / 1000
        );
    }
    assert!(served_in < Duration::from_secs(30), "{served_in:?}");
}

#[tokio::test]
async fn a_restart_is_cheap_on_sqlite() {
    a_restart_is_cheap(Backend::sqlite()).await;
}

#[tokio::test]
async fn a_restart_is_cheap_on_mongodb() {
    a_restart_is_cheap(Backend::mongo()).await;
}

/// With seeded windows, a longer bucket built from live minutes is stored with its
/// interval, so the next start loads it instead of asking the exchange again.
#[tokio::test]
async fn buckets_built_while_running_are_stored_with_their_interval() {
    let backend = Backend::sqlite();
    let names = contracts(5);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 120).await;
    let settings = [
        ("SYMBOLS", "*"),
        ("INTERVALS", "1m,5m"),
        ("HISTORY_MAX", "20"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    windows_full(&app, &fake, &names, &["5m"], 20, Duration::from_secs(60)).await;
    fake.freeze();
    let closed: Vec<_> = (0..6).map(|_| fake.close_next("C002USDT")).collect();
    let five = 5 * MINUTE;
    let bucket = closed
        .iter()
        .map(|c| c.open_time + MINUTE)
        .filter(|end| end % five == 0)
        .map(|end| end - five)
        .next_back()
        .expect("six minutes complete a 5m bucket");
    let history = fake.history("C002USDT");
    let expected = common::fake_exchange::intervals::aggregate(&history, "5m")
        .into_iter()
        .find(|c| c.open_time == bucket)
        .map(|c| (c.open_time, c.open, c.high, c.low, c.close, c.volume))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = backend.stored("C002USDT").await;
        let built = stored
            .iter()
            .find(|c| c.interval == "5m" && c.open_time == bucket);
        if let Some(c) = built {
            assert_eq!(
                (c.open_time, c.open, c.high, c.low, c.close, c.volume),
                expected
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the built 5m bucket {bucket} was not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);
}
/// Listing and delisting while running: a contract newly TRADING is followed (its
/// recent history fetched, then live); one that leaves TRADING is let go (no longer
/// subscribed upstream, gone from /api/v1/info) while its history is still served.
async fn listings_are_followed_and_delistings_let_go(backend: Backend) {
    let names = contracts(10);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 60).await;
    // Only the test's closes add candles: a wall-clock minute would race the
    // comparisons with the fake's history.
    fake.freeze();
    let settings = [("SYMBOLS", "*"), ("SYMBOLS_REFRESH_SECS", "1")];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    assert_eq!(info_symbols(&app).await, names);

    fake.list_new("NEWUSDT", 30);
    fake.set_status("C003USDT", "SETTLING");
    let mut expected: Vec<String> = names.iter().filter(|s| *s != "C003USDT").cloned().collect();
    expected.push("NEWUSDT".to_owned());
    wait_for_info_symbols(&app, &expected, Duration::from_secs(20)).await;
    // The new contract: its recent history, then its live closes.
    windows_full(
        &app,
        &fake,
        &["NEWUSDT".to_owned()],
        &["1m"],
        11,
        Duration::from_secs(20),
    )
    .await;
    let url = format!("ws://{}/?symbols=NEWUSDT", app.addr);
    let mut client = Client::connect(&url).await;
    client.next_json().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let subscribed = fake.subscriptions().concat();
        if subscribed.iter().any(|s| s == "newusdt@kline_1m")
            && !subscribed.iter().any(|s| s == "c003usdt@kline_1m")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream not changed: {subscribed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fake.close_next("NEWUSDT");
    let message = client.next_json().await;
    assert_eq!(
        message,
        expected_message("NEWUSDT", &fake.history("NEWUSDT"), 10, chrono_tz::UTC)
    );
    // The delisted one: history still served.
    let held = served(&app, "C003USDT", "1m", 10).await;
    assert_eq!(held.len(), 10, "stored history of a delisted contract");
}

#[tokio::test]
async fn listings_are_followed_and_delistings_let_go_on_sqlite() {
    listings_are_followed_and_delistings_let_go(Backend::sqlite()).await;
}

#[tokio::test]
async fn listings_are_followed_and_delistings_let_go_on_mongodb() {
    listings_are_followed_and_delistings_let_go(Backend::mongo()).await;
}

//! `SYMBOLS=*`: every contract the exchange lists as `TRADING` is followed, plain
//! `/` keeps sending the five majors in their order, `?symbols=` picks any followed
//! contract, `/api/v1/info` lists what is followed; contracts listed and delisted
//! while the service runs are followed and let go.

mod common;

use common::mirror::mirror_get;
use common::*;
use serde_json::Value;

const MAJORS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// The majors and `others` generated contracts, names as the exchange lists them.
fn contracts(others: usize) -> Vec<String> {
    let mut names: Vec<String> = MAJORS.iter().map(|s| s.to_string()).collect();
    names.extend((0..others).map(|i| format!("C{i:03}USDT")));
    names
}

async fn info_symbols(app: &TestApp) -> Vec<String> {
    let info = mirror_get(app, "/api/v1/info").await.json();
    info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

async fn every_trading_contract_is_followed_and_plain_clients_keep_the_majors(backend: Backend) {
    let names = contracts(40);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakeExchange::start_sized(&refs, 30).await;
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

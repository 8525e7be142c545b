//! Unit tests of `SYMBOLS=*` and `SYMBOLS_REFRESH_SECS`.

use std::time::Duration;

use super::tests::config_with;
use super::*;

#[test]
fn symbols_star_follows_the_exchange_and_plain_clients_keep_the_majors() {
    let config = config_with(&[("SYMBOLS", " * ")]).unwrap();
    assert!(config.follow_all && config.symbols == MAJORS);
    assert_eq!(config.symbols_refresh, Duration::from_secs(300));
    assert!(
        config
            .summary()
            .contains("SYMBOLS=* SYMBOLS_REFRESH_SECS=300")
    );
    let config = config_with(&[("SYMBOLS", "*"), ("SYMBOLS_REFRESH_SECS", "60")]).unwrap();
    assert_eq!(config.symbols_refresh, Duration::from_secs(60));
    assert!(!config_with(&[]).unwrap().follow_all);
    let bad = [("SYMBOLS", "*,BTCUSDT"), ("SYMBOLS", "BTC*USDT")];
    for (name, value) in bad.into_iter().chain([("SYMBOLS_REFRESH_SECS", "0")]) {
        assert_eq!(
            config_with(&[(name, value)]).unwrap_err().var,
            name,
            "{value}"
        );
    }
}

//! The live page in a real headless Chromium (Debian's package, driven by
//! playwright-core from tests/browser): five charts with the fake's candles, and a
//! new candle drawn when the fake closes one. `./scripts/test` installs both.
//! `SCREENSHOT=docs/live-page.png` also saves what the browser showed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_page_charts_every_coin_and_draws_each_new_candle() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./scripts/test, which installs it (npm ci in tests/browser) \
         and Debian's chromium"
    );
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    fake.wait_for_connections(1).await;

    let mut node = Command::new("node")
        .current_dir(&browser_dir)
        .arg("page.mjs")
        .arg(format!("http://{}/", app.addr))
        .args(
            std::env::var("SCREENSHOT")
                .ok()
                .map(|path| repo_root().join(path)),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed for the browser test");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut report = async |prefix: &str| -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no {prefix} report from the browser"))
            .unwrap_or_else(|| panic!("the browser driver exited before {prefix}"));
        let json = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix}, got {line}"));
        serde_json::from_str(json.trim()).unwrap()
    };

    let ready = report("READY").await;
    assert_eq!(ready["state"]["status"], "live");
    assert_eq!(
        ready["status"], "live",
        "the page shows the connection state"
    );
    assert_eq!(
        ready["charts"],
        serde_json::json!(SYMBOLS),
        "one chart per coin, in order"
    );
    for symbol in SYMBOLS {
        let shown = &ready["state"]["coins"][symbol];
        let history = fake.history(symbol);
        assert_eq!(
            shown["count"], 100,
            "{symbol}: the page asks for 100 candles"
        );
        assert_eq!(
            shown["newestOpenTime"].as_i64(),
            Some(history.last().unwrap().open_time)
        );
        assert_eq!(
            shown["newestClose"].as_f64(),
            Some(history.last().unwrap().close)
        );
    }

    let candle = fake.close_next("BTCUSDT");
    let updated = report("UPDATED").await;
    let btc = &updated["state"]["coins"]["BTCUSDT"];
    assert_eq!(btc["newestOpenTime"].as_i64(), Some(candle.open_time));
    assert_eq!(btc["newestClose"].as_f64(), Some(candle.close));
    assert_eq!(
        updated["price"].as_str().unwrap().parse::<f64>().ok(),
        Some(candle.close)
    );
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser driver failed: {status}");
    app.stop().await.unwrap();
}

//! The live page in a real headless Chromium (Debian's package, driven by
//! playwright-core from tests/browser/page.mjs): the default view with every coin's
//! candles, a new candle drawn when the fake closes one, older candles loaded by
//! dragging the chart, five-minute candles after clicking 5m, the forming candle
//! moving with the fake's open frames, RSI in a pane of its own, and the view kept
//! through a reload. `./scripts/test` installs Chromium and playwright-core.
//! `SCREENSHOT=docs/live-page.png` also saves what the browser showed at the end.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use candlecast::candle::Candle;
use common::*;
use serde_json::Value;

const FIVE_MINUTES: i64 = 5 * MINUTE;

/// The newest five-minute candle whose every minute has closed, built from one-minute
/// `history` (oldest first): open of its first minute, close of its last, extremes.
fn newest_closed_five_minutes(history: &[Candle]) -> (i64, f64, f64, f64, f64) {
    let last = history.last().unwrap();
    let end = (last.open_time + MINUTE).div_euclid(FIVE_MINUTES) * FIVE_MINUTES;
    let start = end - FIVE_MINUTES;
    let minutes: Vec<&Candle> = history
        .iter()
        .filter(|c| c.open_time >= start && c.open_time < end)
        .collect();
    assert_eq!(minutes.len(), 5, "the fake's history covers the window");
    (
        start,
        minutes[0].open,
        minutes.iter().map(|c| c.high).fold(f64::MIN, f64::max),
        minutes.iter().map(|c| c.low).fold(f64::MAX, f64::min),
        minutes[4].close,
    )
}

/// A still-open one-minute candle after `previous`, as Binance sends it partway
/// through the minute: its last price `close` and its extremes so far.
fn forming_after(previous: &Candle, close: f64, high: f64, low: f64) -> Candle {
    Candle {
        open_time: previous.open_time + MINUTE,
        close_time: previous.open_time + 2 * MINUTE - 1,
        open: previous.close,
        high,
        low,
        close,
        volume: 12.5,
        quote_volume: 12.5 * close,
        taker_buy_volume: 6.0,
        taker_buy_quote_volume: 6.0 * close,
        trades: 40,
        ..previous.clone()
    }
}

#[tokio::test]
async fn the_page_charts_intervals_the_forming_candle_indicators_and_older_history() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./scripts/test, which installs it (npm ci in tests/browser) \
         and Debian's chromium"
    );
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INTERVALS", "1m,5m,15m,1h"), ("LIVE_INTERVAL_MS", "50")],
    ))
    .await;
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed for the browser test");
    let mut to_page = node.stdin.take().unwrap();
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
    let url_has = |seen: &Value, key: &str, part: &str| {
        let url = seen[key].as_str().unwrap();
        assert!(url.contains(part), "{key} {url} lacks {part}");
    };

    // The default view: the base interval, the first coin, every coin's window.
    let ready = report("READY").await;
    let state = &ready["state"];
    assert_eq!(state["status"], "live");
    assert_eq!(
        ready["status"], "live",
        "the page shows the connection state"
    );
    assert_eq!(
        ready["tiles"],
        serde_json::json!(SYMBOLS),
        "a tile per coin, in order"
    );
    assert!(ready["canvas"].as_u64().unwrap() > 0, "the chart is drawn");
    assert_eq!(state["interval"], "1m");
    assert_eq!(state["coin"], "BTCUSDT");
    for part in [
        "format=candles",
        "interval=1m",
        "limit=100",
        "live=true",
        "indicators=",
    ] {
        url_has(state, "url", part);
    }
    url_has(&ready, "pageUrl", "interval=1m");
    assert_eq!(state["panes"], serde_json::json!([["candles", "volume"]]));
    for symbol in SYMBOLS {
        let shown = &state["coins"][symbol];
        let history = fake.history(symbol);
        assert_eq!(
            shown["windowCount"], 100,
            "{symbol}: the page asks for history_max candles"
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
    assert_eq!(state["chart"]["coin"], "BTCUSDT");
    assert_eq!(state["chart"]["bars"], 100);

    // A closed candle is drawn.
    let candle = fake.close_next("BTCUSDT");
    let updated = report("UPDATED").await;
    let btc = &updated["state"]["coins"]["BTCUSDT"];
    assert_eq!(btc["newestOpenTime"].as_i64(), Some(candle.open_time));
    assert_eq!(btc["newestClose"].as_f64(), Some(candle.close));
    assert_eq!(
        updated["price"].as_str().unwrap().parse::<f64>().ok(),
        Some(candle.close)
    );
    assert_eq!(
        updated["state"]["chart"]["lastTime"].as_i64(),
        Some(candle.open_time)
    );

    // Dragging left fetched the rest of the stored history through the history API.
    let older = report("OLDER").await;
    let history = fake.history("BTCUSDT");
    let state = &older["state"];
    assert!(state["historyRequests"].as_u64().unwrap() >= 1);
    assert_eq!(
        state["coins"]["BTCUSDT"]["oldestOpenTime"].as_i64(),
        Some(history[0].open_time),
        "the page reached the oldest stored candle"
    );
    assert_eq!(state["coins"]["BTCUSDT"]["count"], history.len());
    assert_eq!(state["chart"]["bars"], history.len());
    assert_eq!(
        state["chart"]["firstTime"].as_i64(),
        Some(history[0].open_time)
    );

    // Five-minute candles after clicking 5m.
    let switched = report("SWITCHED").await;
    let state = &switched["state"];
    assert_eq!(state["interval"], "5m");
    url_has(state, "url", "interval=5m");
    url_has(&switched, "pageUrl", "interval=5m");
    assert!(
        switched["pressed"]
            .as_array()
            .unwrap()
            .contains(&"5m".into())
    );
    for symbol in SYMBOLS {
        let newest = &state["coins"][symbol]["newest"];
        let (open_time, open, high, low, close) = newest_closed_five_minutes(&fake.history(symbol));
        assert_eq!(newest["open_time"].as_i64(), Some(open_time), "{symbol}");
        assert_eq!(newest["open"].as_f64(), Some(open), "{symbol}");
        assert_eq!(newest["high"].as_f64(), Some(high), "{symbol}");
        assert_eq!(newest["low"].as_f64(), Some(low), "{symbol}");
        assert_eq!(newest["close"].as_f64(), Some(close), "{symbol}");
    }
    let times = state["chart"]["times"].as_array().unwrap();
    assert!(!times.is_empty());
    assert!(
        times
            .iter()
            .all(|t| t.as_i64().unwrap() % FIVE_MINUTES == 0),
        "every bar opens on a five-minute boundary: {times:?}"
    );

    // The forming candle: drawn as the last bar, then moved by the next update.
    let last = fake.history("BTCUSDT").last().unwrap().clone();
    let window = (last.open_time + MINUTE).div_euclid(FIVE_MINUTES) * FIVE_MINUTES;
    let up = ((last.close * 1.01) * 100.0).round() / 100.0;
    let down = ((last.close * 0.99) * 100.0).round() / 100.0;
    let (mut high, mut low) = (last.close, last.close);
    for close in [up, down] {
        (high, low) = (high.max(close), low.min(close));
        fake.send_update(&forming_after(&last, close, high, low), false);
        writeln!(
            to_page,
            "{}",
            serde_json::json!({"open_time": window, "close": close})
        )
        .unwrap();
        let seen = report("FORMING").await;
        let chart = &seen["state"]["chart"];
        assert_eq!(
            seen["state"]["coins"]["BTCUSDT"]["forming"]["open_time"].as_i64(),
            Some(window)
        );
        assert_eq!(chart["lastTime"].as_i64(), Some(window));
        assert_eq!(chart["last"]["close"].as_f64(), Some(close));
        assert!(chart["last"]["low"].as_f64().unwrap() <= close);
        assert!(chart["last"]["high"].as_f64().unwrap() >= close);
        assert_eq!(
            chart["bars"].as_u64().unwrap(),
            seen["state"]["coins"]["BTCUSDT"]["count"].as_u64().unwrap() + 1,
            "one forming bar after the closed ones, moved rather than added to"
        );
    }

    // A calmer update of the same minute, so that the test's ±1 % swings do not
    // tower over the screenshot's chart.
    let calm = ((last.close * 1.0004) * 100.0).round() / 100.0;
    fake.send_update(&forming_after(&last, calm, calm, last.close), false);

    // RSI in a pane of its own, for the coin chosen, without a new connection.
    let rsi = report("RSI").await;
    let state = &rsi["state"];
    assert_eq!(state["coin"], "ETHUSDT");
    assert_eq!(state["indicators"], serde_json::json!(["rsi14"]));
    assert_eq!(
        state["panes"],
        serde_json::json!([["candles", "volume"], ["rsi14"]])
    );
    assert!(state["chart"]["points"]["rsi14"].as_u64().unwrap() > 0);
    assert_eq!(state["connects"], switched["state"]["connects"]);
    for part in ["interval=5m", "ind=rsi14", "coin=ETHUSDT"] {
        url_has(&rsi, "pageUrl", part);
    }

    // A reload opens the same view from the URL.
    let reloaded = report("RELOADED").await;
    let state = &reloaded["state"];
    assert_eq!(reloaded["pageUrl"], rsi["pageUrl"]);
    assert_eq!(state["interval"], "5m");
    assert_eq!(state["coin"], "ETHUSDT");
    assert_eq!(state["indicators"], serde_json::json!(["rsi14"]));
    assert_eq!(state["panes"], rsi["state"]["panes"]);
    url_has(state, "url", "interval=5m");
    assert_eq!(state["chart"]["coin"], "ETHUSDT");
    let mut pressed: Vec<String> = serde_json::from_value(reloaded["pressed"].clone()).unwrap();
    pressed.sort();
    assert_eq!(pressed, ["5m", "ETHUSDT", "rsi14"]);

    // Overlays and both oscillator panes on 1m (the screenshot's view).
    let done = report("DONE").await;
    let state = &done["state"];
    let panes = state["panes"].as_array().unwrap();
    assert_eq!(panes.len(), 3);
    for id in ["sma20", "bb20", "bb20.1", "bb20.2"] {
        assert!(
            panes[0].as_array().unwrap().contains(&id.into()),
            "{id} over the price"
        );
    }
    for id in [
        "sma20", "bb20", "bb20.1", "bb20.2", "rsi14", "macd", "macd.1", "macd.2",
    ] {
        assert!(
            state["chart"]["points"][id].as_u64().unwrap_or(0) > 0,
            "{id} draws nothing: are the feed's values shaped as promised (bb as \
             {{upper,middle,lower}}, macd as {{macd,signal,histogram}})? {}",
            state["chart"]["points"]
        );
    }
    assert_eq!(panes[1], serde_json::json!(["rsi14"]));
    assert_eq!(panes[2], serde_json::json!(["macd", "macd.1", "macd.2"]));
    for part in ["interval=1m", "ind=sma20,bb20,rsi14,macd", "coin=BTCUSDT"] {
        url_has(&done, "pageUrl", part);
    }

    // An outage: candles close while the page is away; it reconnects with `since`
    // and holds every one of them, no hole.
    let dropped = report("DROPPED").await;
    let connects = dropped["state"]["connects"].as_u64().unwrap();
    let closed: Vec<_> = (0..3).map(|_| fake.close_next("BTCUSDT")).collect();
    let through = closed.last().unwrap().open_time;
    writeln!(to_page, "{}", serde_json::json!({ "through": through })).unwrap();
    let resumed = report("RESUMED").await;
    let state = &resumed["state"];
    assert!(state["connects"].as_u64().unwrap() > connects);
    url_has(state, "url", "since=");
    let btc = &state["coins"]["BTCUSDT"];
    let (oldest, newest) = (
        btc["oldestOpenTime"].as_i64().unwrap(),
        btc["newestOpenTime"].as_i64().unwrap(),
    );
    assert_eq!(newest, through);
    assert_eq!(
        btc["count"].as_i64().unwrap(),
        (newest - oldest) / MINUTE + 1,
        "every minute from the oldest held to the newest, no hole"
    );

    drop(to_page);
    let status = tokio::task::spawn_blocking(move || node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser driver failed: {status}");
    app.stop().await.unwrap();
}

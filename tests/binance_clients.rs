//! Real, unmodified Binance clients pointed at candlecast's Binance mirror (issue
//! 22), which is pointed at the fake exchange: every answer is held against the
//! same client's answer from the fake itself (Binance's stand-in), and the fake's
//! request log against "asked the exchange for nothing" where the service holds the
//! range. `./scripts/test` installs the clients (tests/common/clients.rs runs them).
//!
//! What the clients send (read from their sources, ccxt 4.5.90 and python-binance
//! 1.0.37, and seen in the first test's request log):
//!
//! ccxt `binanceusdm`, its `urls.api.fapiPublic` = `{base}/fapi/v1` (also
//! `fapiPublicV2` `/fapi/v2`, `fapiPublicV3` `/fapi/v3`, `fapiData` `/futures/data`;
//! the private URLs stay Binance's):
//! - `load_markets()`: one `GET /fapi/v1/exchangeInfo`, no parameters (binanceusdm's
//!   `options.fetchMarkets.types` is `['linear']`; `fetch_currencies` is skipped
//!   without API keys, so no `sapi`; no `/time` unless `adjustForTimeDifference`).
//!   Its `parse_market` reads `symbol`, `baseAsset`, `quoteAsset`, `marginAsset`
//!   (settle), `contractType` (`PERPETUAL`, or `deliveryDate` 4133404800000, makes a
//!   swap), `status` (`TRADING` is active), `pricePrecision`, `quantityPrecision`,
//!   `baseAssetPrecision`, `quotePrecision`, `onboardDate` (created) and the filters
//!   `PRICE_FILTER` (minPrice, maxPrice, tickSize), `LOT_SIZE` and `MARKET_LOT_SIZE`
//!   (minQty, maxQty, stepSize), `MIN_NOTIONAL` (notional).
//! - `fetch_ohlcv(symbol, tf, since, limit)`: `GET /fapi/v1/klines?interval=<tf>&
//!   limit=<limit, default 500, at most 1000>&symbol=<id>[&startTime=<since>]`, in
//!   that order; never `endTime` unless `params.until`. It keeps columns 0-5 as
//!   numbers and drops rows before `since`.
//! - `fetch_time()`: `GET /fapi/v1/time`, reads `serverTime`.
//! - Headers: python-requests' defaults (`User-Agent: python-requests/…`,
//!   `Accept-Encoding: gzip, deflate`), no API key.
//!
//! python-binance `Client(api_key=None, api_secret=None, ping=False)` with the
//! instance's `FUTURES_URL` = `{base}/fapi`, parameters sorted by name:
//! - `futures_klines(**p)`: `GET /fapi/v1/klines?interval=&limit=&symbol=` plus
//!   whatever `startTime`/`endTime` the caller gives.
//! - `futures_historical_klines(symbol, interval, start, end)`: first the probe
//!   `GET /fapi/v1/klines?endTime=<now ms>&interval=<i>&limit=1&startTime=0&symbol=`
//!   for the first candle ever (it starts at the later of that and `start`), then
//!   pages `endTime=<end>&interval=&limit=1000&startTime=<t>&symbol=`, the next
//!   `startTime` the last row's open time plus one interval, until a page is short
//!   (`endTime` left out when `end` is None).
//! - `futures_ping()` `GET /fapi/v1/ping`, `futures_time()` `GET /fapi/v1/time`.
//! - Headers: `Accept: application/json`, `Content-Type: application/json` (on GETs
//!   too, with no body) and a browser `User-Agent`; `X-MBX-APIKEY` only with a key.

mod common;

use candlecast::candle::Candle;
use common::clients::{
    self, assert_clock_within, assert_same_answers, assert_same_rows, binance_rows, ccxt_rows,
    klines_asked, log_position, wall_ms,
};
use common::fake_exchange::intervals::aggregate;
use common::*;
use serde_json::{Value, json};

const SYMBOL: &str = "BTCUSDT";
const CCXT_SYMBOL: &str = "BTC/USDT:USDT";
/// Days of history: enough for a day of hourly candles.
const HISTORY_MINUTES: i64 = 3_000;

/// The ccxt calls every ccxt test makes: markets (twice: cached), then candles of
/// three intervals, the newest and from a time.
fn ccxt_calls(history: &[Candle]) -> Value {
    let since = |minute: usize| history[minute].open_time;
    json!([
        {"call": "load_markets"},
        {"call": "load_markets"},
        {"call": "fetch_time"},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "1m", "since": null, "limit": 120},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "1m", "since": since(700), "limit": 300},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "5m", "since": null, "limit": 100},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "5m", "since": since(1_003), "limit": 50},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "1h", "since": null, "limit": 24},
        {"call": "fetch_ohlcv", "symbol": CCXT_SYMBOL, "timeframe": "1h", "since": since(120), "limit": 10},
    ])
}

/// python-binance's calls in the history tests: a range the service never held, one
/// across the seam into what it holds, and five-minute candles inside the first.
fn history_calls(history: &[Candle]) -> Value {
    let at = |minute: usize| history[minute].open_time;
    json!([
        {"call": "futures_historical_klines", "symbol": SYMBOL, "interval": "1m",
         "start_str": at(100), "end_str": at(1_600)},
        {"call": "futures_historical_klines", "symbol": SYMBOL, "interval": "1m",
         "start_str": at(2_000), "end_str": at(2_900)},
        {"call": "futures_historical_klines", "symbol": SYMBOL, "interval": "5m",
         "start_str": at(200), "end_str": at(1_200)},
    ])
}

fn base_of(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

/// The drivers against the fake directly: the clients install and run, the fake
/// answers them as Binance would (any interval from its minutes, newest rows without
/// `startTime`, the probe for the first candle), and they send what the file's
/// opening comment says.
#[tokio::test]
async fn the_clients_get_the_fakes_candles_from_the_fake_itself() {
    let fake = FakeExchange::start_lagging_sized(&[SYMBOL, "ETHUSDT"], 30, HISTORY_MINUTES).await;
    let base = fake.rest_url();
    let history = fake.history(SYMBOL);
    assert_eq!(history.len(), HISTORY_MINUTES as usize);

    let before = wall_ms();
    let ccxt = clients::ccxt(&base, ccxt_calls(&history)).await;
    let run = (before, wall_ms());
    ccxt.assert_only_asked(&base);
    let markets = ccxt.ok(0);
    assert_eq!(markets, ccxt.ok(1));
    let btc = &markets[CCXT_SYMBOL];
    assert_eq!(
        json!([
            btc["id"],
            btc["type"],
            btc["linear"],
            btc["settle"],
            btc["active"]
        ]),
        json!([SYMBOL, "swap", true, "USDT", true])
    );
    assert_eq!(btc["precision"]["price"], 0.01);
    assert_eq!(btc["limits"]["cost"]["min"], 5.0);
    assert!(markets["ETH/USDT:USDT"].is_object());
    assert_clock_within(ccxt.ok(2), run, "fetch_time");

    let five = aggregate(&history, "5m");
    let hours = aggregate(&history, "1h");
    let from = |candles: &[Candle], since: i64, n: usize| -> Vec<Candle> {
        candles
            .iter()
            .filter(|c| c.open_time >= since)
            .take(n)
            .cloned()
            .collect()
    };
    let newest = |candles: &[Candle], n: usize| candles[candles.len() - n..].to_vec();
    let expected = [
        newest(&history, 120),
        history[700..1_000].to_vec(),
        newest(&five, 100),
        from(&five, history[1_003].open_time, 50),
        newest(&hours, 24),
        from(&hours, history[120].open_time, 10),
    ];
    for (index, candles) in expected.iter().enumerate() {
        assert_eq!(
            ccxt.ok(index + 3),
            &ccxt_rows(candles),
            "ccxt call {}",
            index + 3
        );
    }
    // One five-minute candle by hand: its minutes' first open, last close, extremes
    // and decimal volume sum.
    let bucket = &five[five.len() - 2];
    let minutes: Vec<&Candle> = history
        .iter()
        .filter(|c| c.open_time / (5 * MINUTE) == bucket.open_time / (5 * MINUTE))
        .collect();
    let high = minutes.iter().map(|c| c.high).fold(f64::MIN, f64::max);
    let volume: f64 = minutes.iter().map(|c| c.volume).sum(); // whole numbers: exact
    assert_eq!(
        (bucket.open, bucket.close, bucket.high, bucket.volume),
        (minutes[0].open, minutes[4].close, high, volume)
    );
    assert_eq!(bucket.close_time, bucket.open_time + 5 * MINUTE - 1);
    let urls = ccxt.urls();
    assert_eq!(urls[0], format!("{base}/fapi/v1/exchangeInfo"));
    assert_eq!(urls[2], format!("{base}/fapi/v1/time"));
    assert_eq!(
        urls[3],
        format!("{base}/fapi/v1/klines?interval=1m&limit=120&symbol={SYMBOL}")
    );
    assert_eq!(
        urls[4],
        format!(
            "{base}/fapi/v1/klines?interval=1m&limit=300&symbol={SYMBOL}&startTime={}",
            history[700].open_time
        )
    );

    let before = wall_ms();
    let binance = clients::python_binance(&base, {
        let mut calls = json!([
            {"call": "futures_ping"},
            {"call": "futures_time"},
            {"call": "futures_klines", "symbol": SYMBOL, "interval": "1m", "limit": 5},
            {"call": "futures_klines", "symbol": SYMBOL, "interval": "1h", "limit": 3},
        ]);
        calls
            .as_array_mut()
            .unwrap()
            .extend(history_calls(&history).as_array().unwrap().clone());
        calls
    })
    .await;
    let run = (before, wall_ms());
    binance.assert_only_asked(&base);
    assert_eq!(binance.ok(0), &json!({}));
    assert_clock_within(&binance.ok(1)["serverTime"], run, "futures_time");
    let at = |minute: usize| history[minute].open_time;
    let five_from: Vec<Candle> = five
        .iter()
        .filter(|c| c.open_time >= at(200) && c.open_time <= at(1_200))
        .cloned()
        .collect();
    let expected = [
        newest(&history, 5),
        newest(&hours, 3),
        history[100..=1_600].to_vec(),
        history[2_000..=2_900].to_vec(),
        five_from,
    ];
    for (index, candles) in expected.iter().enumerate() {
        let call = binance.calls[index + 2].to_string();
        assert_same_rows(binance.ok(index + 2), &binance_rows(candles), &call);
    }
    let urls = binance.urls();
    assert_eq!(urls[0], format!("{base}/fapi/v1/ping"));
    let probe = urls[4]
        .strip_prefix(&format!("{base}/fapi/v1/klines?endTime="))
        .unwrap();
    assert!(
        probe.ends_with("&interval=1m&limit=1&startTime=0&symbol=BTCUSDT"),
        "{probe}"
    );
    assert_eq!(
        urls[5],
        format!(
            "{base}/fapi/v1/klines?endTime={}&interval=1m&limit=1000&startTime={}&symbol={SYMBOL}",
            at(1_600),
            at(100)
        )
    );
    assert_eq!(
        urls.len(),
        4 + 3 + 2 + 2,
        "ping, time, two klines; each history: the probe, then pages of 1,000 until a short one"
    );
}

/// A service on `backend` with the fake's history of both symbols stored, minutes
/// `[keep_from..]` of it (all of it for 0).
async fn service_holding(backend: &Backend, keep_from: usize) -> (FakeExchange, TestApp) {
    let fake = FakeExchange::start_lagging_sized(&[SYMBOL, "ETHUSDT"], 30, HISTORY_MINUTES).await;
    for symbol in [SYMBOL, "ETHUSDT"] {
        seed(backend, &fake.history(symbol)[keep_from..]).await;
    }
    let app = TestApp::spawn(config_for(
        &fake,
        backend,
        &[("SYMBOLS", "BTCUSDT,ETHUSDT")],
    ))
    .await;
    (fake, app)
}

/// ccxt through candlecast answers as ccxt from the exchange: markets, the time,
/// candles of 1m, 5m and 1h with and without `since`, all from the store.
async fn ccxt_reads_markets_and_candles_as_from_the_exchange(backend: Backend) {
    let (fake, app) = service_holding(&backend, 0).await;
    let history = fake.history(SYMBOL);
    let (position, exchange_infos) = (log_position(&fake), fake.exchange_info_requests());
    let before = wall_ms();
    let mirrored = clients::ccxt(&base_of(app.addr), ccxt_calls(&history)).await;
    let run = (before, wall_ms());
    let asked = klines_asked(
        &fake,
        position,
        SYMBOL,
        (history[0].open_time, history[history.len() - 1].close_time),
    );
    let exchange_infos = fake.exchange_info_requests() - exchange_infos;

    mirrored.assert_only_asked(&base_of(app.addr));
    let direct = clients::ccxt(&fake.rest_url(), ccxt_calls(&history)).await;
    let (mirrored_answers, direct_answers) = (mirrored.answers(), direct.answers());
    assert_eq!(
        mirrored_answers[0], direct_answers[0],
        "load_markets: the exchange's markets"
    );
    assert_eq!(mirrored_answers[1], direct_answers[1]);
    assert_clock_within(mirrored_answers[2], run, "fetch_time");
    for index in 3..mirrored_answers.len() {
        assert_eq!(
            mirrored_answers[index], direct_answers[index],
            "{}",
            mirrored.calls[index]
        );
    }
    assert!(
        asked.is_empty(),
        "the service held every candle, yet asked the exchange: {asked:#?}"
    );
    assert!(
        exchange_infos <= 1,
        "exchangeInfo is cached: {exchange_infos} requests for two loads"
    );
}

#[tokio::test]
async fn ccxt_reads_markets_and_candles_as_from_the_exchange_on_mongodb() {
    ccxt_reads_markets_and_candles_as_from_the_exchange(Backend::mongo()).await;
}

#[tokio::test]
async fn ccxt_reads_markets_and_candles_as_from_the_exchange_on_sqlite() {
    ccxt_reads_markets_and_candles_as_from_the_exchange(Backend::sqlite()).await;
}

/// python-binance through candlecast: ping and time, the newest candles from the
/// store (1m, and 15m built from them), history the service never held fetched from
/// the exchange once (each minute asked at most once) and stored, the probe answered
/// with the exchange's first candle, and the same calls again cost the exchange
/// nothing.
async fn python_binance_reads_history_the_service_never_held(backend: Backend) {
    const HELD_FROM: usize = 2_400;
    let (fake, app) = service_holding(&backend, HELD_FROM).await;
    let history = fake.history(SYMBOL);
    let stored = backend.stored(SYMBOL).await;
    assert_eq!(
        stored[0].open_time, history[HELD_FROM].open_time,
        "the old history is not held yet"
    );
    let base = base_of(app.addr);
    let mut calls = json!([
        {"call": "futures_ping"},
        {"call": "futures_time"},
        {"call": "futures_klines", "symbol": SYMBOL, "interval": "1m", "limit": 500},
        {"call": "futures_klines", "symbol": SYMBOL, "interval": "15m", "limit": 20},
    ]);
    calls
        .as_array_mut()
        .unwrap()
        .extend(history_calls(&history).as_array().unwrap().clone());
    let whole = (history[0].open_time, history[history.len() - 1].close_time);

    let (position, before) = (log_position(&fake), wall_ms());
    let first = clients::python_binance(&base, calls.clone()).await;
    let run = (before, wall_ms());
    let fetched = klines_asked(&fake, position, SYMBOL, whole);
    first.assert_only_asked(&base);
    assert_eq!(first.ok(0), &json!({}), "futures_ping");
    assert_clock_within(&first.ok(1)["serverTime"], run, "futures_time");
    let direct = clients::python_binance(&fake.rest_url(), calls.clone()).await;
    assert_same_answers(&first, &direct);
    let mut minutes: Vec<i64> = fetched
        .iter()
        .filter(|r| r.interval == "1m")
        .flat_map(|r| r.closed_rows.iter().map(|c| c.open_time))
        .filter(|&t| t != history[0].open_time) // the probe's answer
        .collect();
    let asked = minutes.len();
    minutes.sort_unstable();
    minutes.dedup();
    assert_eq!(minutes.len(), asked, "a minute fetched twice: {fetched:#?}");
    // Fetched rows reach the store through the write queue: give it its moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let held: std::collections::BTreeSet<i64> = backend
            .stored(SYMBOL)
            .await
            .iter()
            .map(|c| c.open_time)
            .collect();
        let missing: Vec<usize> = (100..=1_600)
            .chain(2_000..=2_900)
            .filter(|&m| !held.contains(&history[m].open_time))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fetched history is stored: minutes {missing:?} are not"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let position = log_position(&fake);
    let second = clients::python_binance(&base, calls).await;
    let asked = klines_asked(&fake, position, SYMBOL, whole);
    assert_same_answers(&second, &direct);
    assert!(
        asked.is_empty(),
        "the second run asked the exchange: {asked:#?}"
    );
}

#[tokio::test]
async fn python_binance_reads_history_the_service_never_held_on_mongodb() {
    python_binance_reads_history_the_service_never_held(Backend::mongo()).await;
}

#[tokio::test]
async fn python_binance_reads_history_the_service_never_held_on_sqlite() {
    python_binance_reads_history_the_service_never_held(Backend::sqlite()).await;
}

//! Checks the fake exchange itself over real sockets, with plain reqwest and
//! tokio-tungstenite clients: no candlecast service is started.

#[path = "common/fake_exchange.rs"]
mod fake_exchange;

use std::time::Duration;

use fake_exchange::{FakeExchange, MINUTE};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const ACK: &str = r#"{"result":null,"id":1}"#;
const ACK_ERROR: &str = r#"{"error":{"code":2,"msg":"Invalid request"},"id":2}"#;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Connects to the fake's stream and waits until it holds `nth` connections.
async fn connect(fake: &FakeExchange, url: &str, nth: usize) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect to the fake stream");
    fake.wait_for_connections(nth).await;
    ws
}

/// The next text frame within `within`, skipping pings; None if none came.
async fn next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("stream failed: {e}"),
            Ok(None) => panic!("stream ended"),
            Err(_) => return None,
        }
    }
}

/// The next kline frame within `within`, skipping anything else.
async fn next_kline(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let text = next_text(ws, left).await?;
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["data"]["e"] == "kline" {
            return Some(frame);
        }
    }
}

/// Every text frame that arrives within `within`.
async fn texts_for(ws: &mut Ws, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut texts = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match next_text(ws, left).await {
            Some(text) => texts.push(text),
            None => break,
        }
    }
    texts
}

async fn get(url: String) -> reqwest::Response {
    reqwest::get(url).await.expect("the fake answers")
}

#[tokio::test]
async fn a_silent_close_is_served_by_rest_but_never_streamed() {
    // Lagging, so no minute boundary adds a candle during the test.
    let fake = FakeExchange::start_lagging(&["BTCUSDT"], 30).await;

    let mut ws = connect(
        &fake,
        &format!("{}?streams=btcusdt@kline_1m", fake.ws_url()),
        1,
    )
    .await;
    let before = fake.history("BTCUSDT");

    let silent = fake.close_next_silently("BTCUSDT");
    assert_eq!(silent.open_time, before.last().unwrap().open_time + MINUTE);
    assert_eq!(fake.history("BTCUSDT").last(), Some(&silent));

    let forming = fake.send_forming("BTCUSDT");
    assert_eq!(forming.open_time, silent.open_time + MINUTE);
    assert_eq!(forming.open, silent.close);
    assert_eq!(
        fake.history("BTCUSDT").len(),
        before.len() + 1,
        "forming is not history"
    );

    // Frames keep their order, so a closing frame of `silent` would come first.
    let first: Value =
        serde_json::from_str(&next_text(&mut ws, Duration::from_secs(5)).await.unwrap()).unwrap();
    assert_eq!(first["stream"], "btcusdt@kline_1m");
    assert_eq!(first["data"]["k"]["t"], forming.open_time);
    assert_eq!(first["data"]["k"]["x"], false);
    // The exchange's decimals: 83607.2 is written "83607.20".
    let decimals = fake_exchange::precisions("BTCUSDT").0;
    assert_eq!(
        first["data"]["k"]["c"],
        fake_exchange::exchange_decimal(forming.close, decimals)
    );
    assert_eq!(next_text(&mut ws, Duration::from_millis(300)).await, None);

    let rows: Vec<Value> = get(format!(
        "{}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={}",
        fake.rest_url(),
        silent.open_time
    ))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], silent.open_time);
    assert_eq!(
        rows[0][4],
        fake_exchange::exchange_decimal(silent.close, decimals)
    );
}

#[tokio::test]
async fn acks_only_connections_get_acknowledgements_instead_of_klines() {
    let fake = FakeExchange::start_lagging(&["BTCUSDT"], 30).await;
    let url = format!("{}?streams=btcusdt@kline_1m", fake.ws_url());
    let mut open = connect(&fake, &url, 1).await;
    fake.acks_only(true);
    fake.replay_last_close_on_connect(true);
    let mut new = connect(&fake, &url, 2).await;
    assert!(
        fake.replayed("BTCUSDT").is_empty(),
        "no replay while acks only"
    );
    let ticker = fake.tick(Duration::from_millis(100));
    fake.close_next("BTCUSDT");
    fake.send_forming("BTCUSDT");

    let window = Duration::from_millis(2500);
    let (on_open, on_new) = tokio::join!(texts_for(&mut open, window), texts_for(&mut new, window));
    for texts in [on_open, on_new] {
        assert!(
            texts.iter().all(|t| t == ACK || t == ACK_ERROR),
            "{texts:?}"
        );
        let acks = texts.iter().filter(|t| *t == ACK).count();
        let errors = texts.iter().filter(|t| *t == ACK_ERROR).count();
        assert!((2..=4).contains(&acks), "about one a second: {texts:?}");
        assert!((2..=4).contains(&errors), "about one a second: {texts:?}");
    }

    fake.acks_only(false);
    let closed = fake.close_next("BTCUSDT");
    for ws in [&mut open, &mut new] {
        // The first kline after acks_only(false) may be a tick; look for the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = next_kline(ws, left).await.expect("klines flow again");
            if frame["data"]["k"]["x"] == true {
                assert_eq!(frame["data"]["k"]["t"], closed.open_time);
                break;
            }
        }
    }
    ticker.abort();
}

#[tokio::test]
async fn exchange_info_lists_history_and_listed_symbols() {
    let fake = FakeExchange::start(&["BTCUSDT", "BTCUSDT_260626", "币安人生USDT"]).await;
    fake.list_symbol("ETHUSDT_260925", "NEXT_QUARTER");
    fake.list_symbol("SOLUSDT", "PERPETUAL");
    let url = format!("{}/fapi/v1/exchangeInfo", fake.rest_url());

    let response = get(url.clone()).await;
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["timezone"], "UTC");
    assert!((info["serverTime"].as_i64().unwrap() - now_ms()).abs() < 2_000);
    let symbols = info["symbols"].as_array().unwrap();
    let names: Vec<&str> = symbols
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "BTCUSDT",
            "BTCUSDT_260626",
            "币安人生USDT",
            "ETHUSDT_260925",
            "SOLUSDT"
        ]
    );
    let by_name = |name: &str| symbols.iter().find(|s| s["symbol"] == name).unwrap();
    let btc = by_name("BTCUSDT");
    assert_eq!(btc["pair"], "BTCUSDT");
    assert_eq!(btc["contractType"], "PERPETUAL");
    assert_eq!(btc["status"], "TRADING");
    assert_eq!(btc["baseAsset"], "BTC");
    assert_eq!(btc["quoteAsset"], "USDT");
    assert_eq!(btc["deliveryDate"], 4_133_404_800_000_i64);
    assert!(
        btc["filters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["filterType"] == "PRICE_FILTER")
    );
    let quarter = by_name("BTCUSDT_260626");
    assert_eq!(quarter["pair"], "BTCUSDT");
    assert_eq!(quarter["contractType"], "CURRENT_QUARTER");
    assert_eq!(quarter["deliveryDate"], 1_782_460_800_000_i64); // 2026-06-26 08:00 UTC
    let meme = by_name("币安人生USDT");
    assert_eq!(meme["pair"], "币安人生USDT");
    assert_eq!(meme["baseAsset"], "币安人生");
    assert_eq!(meme["contractType"], "PERPETUAL");
    assert_eq!(by_name("ETHUSDT_260925")["contractType"], "NEXT_QUARTER");
    assert_eq!(by_name("ETHUSDT_260925")["pair"], "ETHUSDT");
    // Listed only: klines does not know it.
    let unknown = get(format!(
        "{}/fapi/v1/klines?symbol=SOLUSDT&interval=1m",
        fake.rest_url()
    ))
    .await;
    assert_eq!(unknown.status(), 400);

    fake.list_symbol("BTCUSDT_260626", "NEXT_QUARTER");
    let info: Value = get(url.clone()).await.json().await.unwrap();
    let quarter = &info["symbols"][1];
    assert_eq!(quarter["symbol"], "BTCUSDT_260626");
    assert_eq!(quarter["contractType"], "NEXT_QUARTER");
    assert_eq!(info["symbols"].as_array().unwrap().len(), 5);

    fake.fail_exchange_info(true);
    assert_eq!(get(url.clone()).await.status(), 503);
    assert_eq!(get(url.clone()).await.status(), 503);
    fake.fail_exchange_info(false);
    assert_eq!(get(url.clone()).await.status(), 200);
    assert_eq!(fake.exchange_info_requests(), 5);
}

#[tokio::test]
async fn klines_of_an_unknown_symbol_is_an_invalid_symbol() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let response = get(format!(
        "{}/fapi/v1/klines?symbol=NOPEUSDT&interval=1m&limit=5&startTime=1000",
        fake.rest_url()
    ))
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"code": -1121, "msg": "Invalid symbol."}));
    let requests = fake.rest_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.symbol, "NOPEUSDT");
    assert_eq!(request.status, 400);
    assert_eq!((request.limit, request.start_time), (Some(5), Some(1000)));
    assert!(request.closed_rows.is_empty() && request.open_row.is_none());
}

#[tokio::test]
async fn delivery_and_non_ascii_symbols_work_end_to_end() {
    let symbols = ["BTCUSDT_260626", "币安人生USDT"];
    let fake = FakeExchange::start(&symbols).await;
    for (symbol, base) in symbols.into_iter().zip([84_000.0, 0.3]) {
        let history = fake.history(symbol);
        assert!(history.len() >= 119, "{symbol}: {}", history.len());
        assert_eq!(history[0].open, base);
        assert!(history.iter().all(|c| c.symbol == symbol
            && c.low > base * 0.5
            && c.high < base * 1.5
            && c.low <= c.open.min(c.close)
            && c.high >= c.open.max(c.close)));
    }

    // REST: reqwest percent-encodes the symbol, axum's Query decodes it.
    let client = reqwest::Client::new();
    for symbol in symbols {
        let response = client
            .get(format!("{}/fapi/v1/klines", fake.rest_url()))
            .query(&[("symbol", symbol), ("interval", "1m"), ("limit", "3")])
            .send()
            .await
            .unwrap();
        assert!(
            !response.url().as_str().contains('币'),
            "{}",
            response.url()
        );
        assert_eq!(response.status(), 200);
        let rows: Vec<Value> = response.json().await.unwrap();
        assert_eq!(rows.len(), 3);
        // Without startTime, Binance's newest rows: the last one the minute open now.
        let wall_minute = now_ms().div_euclid(MINUTE) * MINUTE;
        let newest = rows[2][0].as_i64().unwrap();
        assert!(
            (newest - wall_minute).abs() <= MINUTE,
            "{newest} vs {wall_minute}"
        );
        assert_eq!(rows[1][0], newest - MINUTE);
        assert_eq!(fake.rest_requests().last().unwrap().symbol, symbol);
    }

    // The stream, with the URL written as the service writes it: `@` and `/` as
    // they are, the non-ASCII name percent-encoded by `Url::parse`.
    let streams: Vec<String> = symbols
        .iter()
        .map(|s| format!("{}@kline_1m", s.to_lowercase()))
        .collect();
    let streams = streams.join("/");
    assert_eq!(streams, "btcusdt_260626@kline_1m/币安人生usdt@kline_1m");
    let url = url::Url::parse(&format!("{}?streams={streams}", fake.ws_url())).unwrap();
    assert!(url.as_str().contains("%E5%B8%81%E5%AE%89"), "{url}");
    let mut ws = connect(&fake, url.as_str(), 1).await;
    // Fully encoded, `@` and `/` included, decodes the same.
    let encoded =
        percent_encoding::utf8_percent_encode(&streams, percent_encoding::NON_ALPHANUMERIC);
    let mut encoded_ws = connect(&fake, &format!("{}?streams={encoded}", fake.ws_url()), 2).await;
    assert_eq!(fake.stream_queries(), [streams.clone(), streams.clone()]);

    let closed: Vec<_> = symbols.iter().map(|s| fake.close_next(s)).collect();
    for ws in [&mut ws, &mut encoded_ws] {
        for candle in &closed {
            let stream = format!("{}@kline_1m", candle.symbol.to_lowercase());
            for x in [false, true] {
                let frame = next_kline(ws, Duration::from_secs(5)).await.unwrap();
                assert_eq!(frame["stream"], stream);
                assert_eq!(frame["data"]["s"], candle.symbol);
                assert_eq!(frame["data"]["k"]["s"], candle.symbol);
                assert_eq!(frame["data"]["k"]["t"], candle.open_time);
                assert_eq!(frame["data"]["k"]["x"], x);
            }
        }
    }
}

/// The ban's `msg` and the ban's end in it.
fn banned_until(body: &Value) -> i64 {
    assert_eq!(body["code"], -1003);
    let msg = body["msg"].as_str().unwrap();
    msg.strip_prefix("Way too many requests; IP banned until ")
        .and_then(|rest| rest.strip_suffix('.'))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("not a ban message: {msg}"))
}

#[tokio::test]
async fn a_ban_answers_every_klines_request_until_it_ends() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let url = format!(
        "{}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=2",
        fake.rest_url()
    );
    let banned_at = now_ms();
    fake.ban_rest(418, 2);
    for _ in 0..2 {
        let response = get(url.clone()).await;
        assert_eq!(response.status(), 418);
        assert_eq!(response.headers()["retry-after"], "2");
        let until = banned_until(&response.json().await.unwrap());
        assert!(
            (until - (banned_at + 2_000)).abs() < 500,
            "{until} vs {banned_at}"
        );
    }
    // Even an unknown symbol: the ban comes first.
    let other = get(format!(
        "{}/fapi/v1/klines?symbol=NOPE&interval=1m",
        fake.rest_url()
    ))
    .await;
    assert_eq!(other.status(), 418);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let response = get(url.clone()).await;
    assert_eq!(response.status(), 418);
    assert_eq!(response.headers()["retry-after"], "1", "the seconds left");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(get(url.clone()).await.status(), 200, "the ban is over");

    fake.ban_rest(429, 1);
    let response = get(url.clone()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let statuses: Vec<(String, u16)> = fake
        .rest_requests()
        .into_iter()
        .map(|r| (r.symbol, r.status))
        .collect();
    let btc = |status| ("BTCUSDT".to_owned(), status);
    assert_eq!(
        statuses,
        [
            btc(418),
            btc(418),
            ("NOPE".to_owned(), 418),
            btc(418),
            btc(200),
            btc(429)
        ]
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get(url).await.status(), 200);
}

#[tokio::test]
async fn the_exchange_clock_runs_at_an_offset_but_the_history_does_not() {
    let fake = FakeExchange::start(&["BTCUSDT"]).await;
    let time = format!("{}/fapi/v1/time", fake.rest_url());
    let server_time = |body: Value| body["serverTime"].as_i64().unwrap();
    let unset = server_time(get(time.clone()).await.json().await.unwrap());
    assert!((unset - now_ms()).abs() < 1_000, "default offset 0");

    let offset = -5 * MINUTE - 123;
    fake.set_clock_offset_ms(offset);
    let answered = server_time(get(time).await.json().await.unwrap());
    assert!((answered - (now_ms() + offset)).abs() < 1_000, "{answered}");
    let info: Value = get(format!("{}/fapi/v1/exchangeInfo", fake.rest_url()))
        .await
        .json()
        .await
        .unwrap();
    assert!((server_time(info) - (now_ms() + offset)).abs() < 1_000);

    // The history still ends at the wall clock's previous minute.
    let wall_minute = now_ms().div_euclid(MINUTE) * MINUTE;
    let last = fake.history("BTCUSDT").last().unwrap().open_time;
    assert!(
        (last - (wall_minute - MINUTE)).abs() <= MINUTE,
        "{last} vs {wall_minute}"
    );

    fake.ban_rest(429, 3);
    let body: Value = get(format!(
        "{}/fapi/v1/klines?symbol=BTCUSDT&interval=1m",
        fake.rest_url()
    ))
    .await
    .json()
    .await
    .unwrap();
    let until = banned_until(&body);
    assert!(
        (until - (now_ms() + offset + 3_000)).abs() < 1_000,
        "the ban ends on the exchange's clock"
    );

    let mut ws = connect(
        &fake,
        &format!("{}?streams=btcusdt@kline_1m", fake.ws_url()),
        1,
    )
    .await;
    fake.close_next("BTCUSDT");
    let ticker = fake.tick(Duration::from_millis(50));
    for _ in 0..3 {
        let frame = next_kline(&mut ws, Duration::from_secs(5)).await.unwrap();
        // The exchange's clock, or the candle's own span where tests close
        // candles faster than the clock runs (see `event_time_for`).
        let event_time = frame["data"]["E"].as_i64().unwrap();
        let exchange_now = now_ms() + offset;
        let k = &frame["data"]["k"];
        let earliest = if k["x"].as_bool().unwrap() {
            k["T"].as_i64().unwrap() + 1
        } else {
            k["t"].as_i64().unwrap()
        };
        assert!(
            (event_time - exchange_now.max(earliest)).abs() < 1_000,
            "{event_time}"
        );
    }
    ticker.abort();
}

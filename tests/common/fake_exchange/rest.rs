//! The fake's REST endpoints: `GET /fapi/v1/klines` (any interval, built from the
//! minutes by [`super::intervals`]), `/fapi/v1/exchangeInfo`, `/fapi/v1/time` and
//! `/fapi/v1/ping`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use candlecast::candle::Candle;
use serde_json::{Value, json};

use super::intervals::{aggregate, interval_ms};
use super::{FakeState, MINUTE, RestRequest, exchange_decimals, next_candle, precisions};

/// Binance's `deliveryDate` of a perpetual contract (2100-12-25 08:00 UTC).
const PERPETUAL_DELIVERY: i64 = 4_133_404_800_000;

/// A klines row as Binance writes it, decimals padded to the symbol's precisions.
pub fn rest_row(c: &Candle) -> Value {
    let [
        open,
        high,
        low,
        close,
        volume,
        quote,
        taker_volume,
        taker_quote,
    ] = exchange_decimals(c);
    json!([
        c.open_time,
        open,
        high,
        low,
        close,
        volume,
        c.close_time,
        quote,
        c.trades,
        taker_volume,
        taker_quote,
        "0"
    ])
}

pub(super) async fn klines(
    Query(query): Query<HashMap<String, String>>,
    State(state): State<Arc<FakeState>>,
) -> Response {
    state.catch_up();
    let symbol = query.get("symbol").cloned().unwrap_or_default();
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let (start_time, end_time) = (number("startTime"), number("endTime"));
    let limit = number("limit").map(|l| l as usize);
    let interval = query.get("interval").cloned().unwrap_or_default();
    let refused = |symbol: String, status: u16| RestRequest {
        symbol,
        interval: interval.clone(),
        at: std::time::Instant::now(),
        status,
        start_time,
        end_time,
        limit,
        closed_rows: Vec::new(),
        open_row: None,
    };
    if let Some(ban) = state.current_ban() {
        state
            .rest_requests
            .lock()
            .unwrap()
            .push(refused(symbol, ban.status));
        let left = ban
            .until
            .saturating_duration_since(std::time::Instant::now());
        let seconds = (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1);
        let msg = format!("Way too many requests; IP banned until {}.", ban.until_ms);
        let mut response = (
            StatusCode::from_u16(ban.status).unwrap(),
            Json(json!({"code": -1003, "msg": msg})),
        )
            .into_response();
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
        return response;
    }
    let failure = state.rest_failures.lock().unwrap().pop_front();
    if let Some((status, retry_after)) = failure {
        state.rest_requests.lock().unwrap().push(RestRequest {
            symbol,
            interval,
            at: std::time::Instant::now(),
            status,
            start_time: query.get("startTime").and_then(|v| v.parse().ok()),
            end_time: None,
            limit: None,
            closed_rows: Vec::new(),
            open_row: None,
        });
        let mut response = (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"code": -1003, "msg": "Way too many requests."})),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return response;
    }
    if interval_ms(&interval).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": -1120, "msg": "Invalid interval."})),
        )
            .into_response();
    };
    let delay = state.rest_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let history = state.history.lock().unwrap().clone();
    let Some(candles) = history.get(&symbol) else {
        state
            .rest_requests
            .lock()
            .unwrap()
            .push(refused(symbol, 400));
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": -1121, "msg": "Invalid symbol."})),
        )
            .into_response();
    };
    let take = limit
        .unwrap_or(500)
        .min(1500)
        .min(state.page_cap.load(Ordering::SeqCst));
    // Closed by the exchange's clock, which runs with the closes tests send.
    let now = state.server_ms();
    let (closed_rows, open_rows) = if interval == "1m" && start_time.is_some() {
        minutes_from(candles, &symbol, (start_time, end_time), take, now)
    } else {
        newest_or_from(
            candles,
            &symbol,
            &interval,
            (start_time, end_time),
            take,
            now,
        )
    };
    let body: Vec<Value> = closed_rows
        .iter()
        .chain(open_rows.iter())
        .map(rest_row)
        .collect();
    state.rest_requests.lock().unwrap().push(RestRequest {
        symbol,
        interval,
        at: std::time::Instant::now(),
        status: 200,
        start_time,
        end_time,
        limit,
        closed_rows,
        open_row: open_rows.into_iter().next(),
    });
    Json(body).into_response()
}

/// One-minute rows from `startTime`, as the service pages them: closed rows, then
/// the candle still open if the page has room.
fn minutes_from(
    candles: &[Candle],
    symbol: &str,
    (start_time, end_time): (Option<i64>, Option<i64>),
    take: usize,
    now: i64,
) -> (Vec<Candle>, Vec<Candle>) {
    let mut rows: Vec<Candle> = candles
        .iter()
        .filter(|c| {
            start_time.is_none_or(|s| c.open_time >= s) && end_time.is_none_or(|e| c.open_time <= e)
        })
        .take(take)
        .cloned()
        .collect();
    let (closed_rows, mut open_rows): (Vec<Candle>, Vec<Candle>) =
        rows.drain(..).partition(|c| c.close_time < now);
    // Like Binance without endTime, end with the candle still open (its close time
    // lies ahead); this fake appends it even past endTime, so the service's own
    // "closed before now" filter is what keeps it out of the store.
    let current = now.div_euclid(MINUTE) * MINUTE;
    if closed_rows.len() < take && open_rows.is_empty() && start_time.is_none_or(|s| current >= s) {
        open_rows.extend(forming_minute(candles, symbol, now));
    }
    (closed_rows, open_rows)
}

/// Rows of any interval as Binance answers them: with `startTime`, the first `take`
/// buckets opened from it; without, the `take` newest opened by `endTime` (or now),
/// the last one the bucket still forming. Closed rows, then the open one.
fn newest_or_from(
    candles: &[Candle],
    symbol: &str,
    interval: &str,
    (start_time, end_time): (Option<i64>, Option<i64>),
    take: usize,
    now: i64,
) -> (Vec<Candle>, Vec<Candle>) {
    let mut minutes = candles.to_vec();
    minutes.extend(forming_minute(candles, symbol, now));
    let in_range = aggregate(&minutes, interval).into_iter().filter(|c| {
        start_time.is_none_or(|s| c.open_time >= s) && end_time.is_none_or(|e| c.open_time <= e)
    });
    let rows: Vec<Candle> = if start_time.is_some() {
        in_range.take(take).collect()
    } else {
        let all: Vec<Candle> = in_range.collect();
        all[all.len().saturating_sub(take)..].to_vec()
    };
    rows.into_iter().partition(|c| c.close_time < now)
}

/// The minute open now, if the history is current (a lagging fake has none):
/// nothing traded in it yet, unlike any closed candle here.
fn forming_minute(candles: &[Candle], symbol: &str, now: i64) -> Option<Candle> {
    let current = now.div_euclid(MINUTE) * MINUTE;
    let last = candles.last().filter(|c| c.open_time == current - MINUTE)?;
    let mut open = next_candle(symbol, current, Some(last));
    (open.close, open.high, open.low) = (open.open, open.open, open.open);
    (open.volume, open.quote_volume, open.trades) = (0.0, 0.0, 0);
    Some(open)
}

/// `{}`, as Binance answers a ping.
pub(super) async fn ping() -> Response {
    Json(json!({})).into_response()
}

/// Any other public endpoint, for forwarding tests: `GET /fapi/v1/ticker/price`
/// as Binance answers it, with Binance's weight headers.
pub(super) async fn ticker_price(
    Query(query): Query<HashMap<String, String>>,
    State(state): State<Arc<FakeState>>,
) -> Response {
    let history = state.history.lock().unwrap().clone();
    let price = |symbol: &str, candles: &Vec<Candle>| {
        json!({
            "symbol": symbol,
            "price": format!("{}", candles.last().map_or(0.0, |c| c.close)),
            "time": candles.last().map_or(0, |c| c.close_time),
        })
    };
    let body = match query.get("symbol") {
        Some(symbol) => match history.get(symbol) {
            Some(candles) => price(symbol, candles),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"code": -1121, "msg": "Invalid symbol."})),
                )
                    .into_response();
            }
        },
        None => Value::Array(history.iter().map(|(s, c)| price(s, c)).collect()),
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert("x-mbx-used-weight", "7".parse().unwrap());
    headers.insert("x-mbx-used-weight-1m", "7".parse().unwrap());
    headers.insert("x-fake-private", "not forwarded".parse().unwrap());
    response
}

/// `{"serverTime": <ms>}` on the exchange's clock.
pub(super) async fn server_time(State(state): State<Arc<FakeState>>) -> Response {
    Json(json!({"serverTime": state.server_ms()})).into_response()
}

/// The history's symbols, then those only listed, each with its contract type.
pub(super) async fn exchange_info(State(state): State<Arc<FakeState>>) -> Response {
    state.exchange_info_requests.fetch_add(1, Ordering::SeqCst);
    if state.hang_exchange_info.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if state.fail_exchange_info.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "code": -1001,
                "msg": "Internal error; unable to process your request. Please try again."
            })),
        )
            .into_response();
    }
    let listed = state.listed.lock().unwrap().clone();
    let mut symbols: Vec<(String, String)> = {
        let history = state.history.lock().unwrap();
        let known = history.keys().map(|symbol| {
            let chosen = listed.iter().find(|(s, _)| s == symbol);
            let contract = chosen.map_or(default_contract_type(symbol), |(_, c)| c.as_str());
            (symbol.clone(), contract.to_owned())
        });
        known.collect()
    };
    for (symbol, contract) in listed {
        if !symbols.iter().any(|(s, _)| *s == symbol) {
            symbols.push((symbol, contract));
        }
    }
    let statuses = state.statuses.lock().unwrap().clone();
    let infos: Vec<Value> = symbols
        .iter()
        .map(|(s, c)| {
            let mut info = symbol_info(s, c);
            if let Some(status) = statuses.get(s) {
                info["status"] = json!(status);
            }
            info
        })
        .collect();
    let mut margin_assets: Vec<&str> = infos
        .iter()
        .filter_map(|info| info["marginAsset"].as_str())
        .collect();
    margin_assets.sort_unstable();
    margin_assets.dedup();
    let assets: Vec<Value> = margin_assets
        .iter()
        .map(|a| json!({"asset": a, "marginAvailable": true, "autoAssetExchange": "-10000"}))
        .collect();
    let rate_limits = json!([
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
    ]);
    Json(json!({
        "timezone": "UTC",
        "serverTime": state.server_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": rate_limits,
        "exchangeFilters": [],
        "assets": assets,
        "symbols": infos,
    }))
    .into_response()
}

/// `PERPETUAL`, or `CURRENT_QUARTER` for a delivery contract such as `BTCUSDT_260626`.
fn default_contract_type(symbol: &str) -> &'static str {
    if symbol.contains('_') {
        "CURRENT_QUARTER"
    } else {
        "PERPETUAL"
    }
}

/// 08:00 UTC of the `YYMMDD` day a delivery contract settles, in epoch milliseconds.
fn delivery_date(yymmdd: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(yymmdd, "%y%m%d").ok()?;
    Some(day.and_hms_opt(8, 0, 0)?.and_utc().timestamp_millis())
}

/// One entry of exchangeInfo's `symbols`, in Binance's shape.
fn symbol_info(symbol: &str, contract_type: &str) -> Value {
    let (pair, delivery) = match symbol.split_once('_') {
        Some((pair, day)) => (pair, delivery_date(day)),
        None => (symbol, None),
    };
    let quote = ["USDT", "USDC", "FDUSD", "BUSD"]
        .into_iter()
        .find(|q| pair.len() > q.len() && pair.ends_with(q))
        .unwrap_or("USDT");
    let base = pair.strip_suffix(quote).unwrap_or(pair);
    let (precision, quantity_precision) = precisions(symbol);
    let tick = if precision == 4 { "0.0001" } else { "0.01" };
    let filters = json!([
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
        {"filterType": "MIN_NOTIONAL", "notional": "5"},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
         "multiplierDecimal": "4"}
    ]);
    let order_types = json!([
        "LIMIT",
        "MARKET",
        "STOP",
        "STOP_MARKET",
        "TAKE_PROFIT",
        "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET"
    ]);
    let mut info = json!({
        "symbol": symbol,
        "pair": pair,
        "contractType": contract_type,
        "deliveryDate": delivery.unwrap_or(PERPETUAL_DELIVERY),
        "onboardDate": 1_569_398_400_000_i64,
        "status": "TRADING",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": precision,
        "quantityPrecision": quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
    });
    let rest = json!({
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": filters,
        "orderTypes": order_types,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    });
    if let (Some(info), Value::Object(rest)) = (info.as_object_mut(), rest) {
        info.extend(rest);
    }
    info
}

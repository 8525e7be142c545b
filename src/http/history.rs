//! `GET /api/v1/candles/{symbol}?limit=&before=`: stored candles, newest first,
//! paged by open time.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::HttpError;
use super::query::{Parameters, Params, number_in};
use crate::candle::Candle;
use crate::hub::CandleEntry;

/// Most candles one history request returns.
pub const HISTORY_API_MAX: usize = 1000;
/// Candles returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// A stored candle as the history API returns it: the `candles` format's fields
/// plus the remaining volumes (symbol and interval are given once per answer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCandle {
    #[serde(flatten)]
    pub candle: CandleEntry,
    pub quote_volume: f64,
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
}

impl From<&Candle> for StoredCandle {
    fn from(c: &Candle) -> Self {
        Self {
            candle: c.into(),
            quote_volume: c.quote_volume,
            taker_buy_volume: c.taker_buy_volume,
            taker_buy_quote_volume: c.taker_buy_quote_volume,
        }
    }
}

/// `?limit=&before=`, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
}

impl Parameters for HistoryParams {
    const NAMES: &'static [&'static str] = &["limit", "before"];
}

/// Stored candles of `symbol`, newest first: `limit` (1 to 1000, default 100) of
/// them, opened before `before` (ms since the epoch, UTC, exclusive) when given.
///
/// `{"symbol":"BTCUSDT","interval":"1m","candles":[{"open_time":…,…},…]}`
pub async fn history(
    Path(symbol): Path<String>,
    State(state): State<AppState>,
    params: Result<Params<HistoryParams>, HttpError>,
) -> Result<Json<Value>, HttpError> {
    let parts = &state.parts;
    let symbol = symbol.to_uppercase();
    if parts.hub.position(&symbol).is_none() {
        return Err(HttpError::UnknownSymbol {
            symbol,
            symbols: parts.hub.symbols().to_vec(),
        });
    }
    // An unknown symbol is reported before a bad parameter.
    let Params(params) = params?;
    let limit = match params.limit {
        Some(value) => number_in("limit", &value, 1..=HISTORY_API_MAX)?,
        None => DEFAULT_LIMIT,
    };
    let before = match params.before {
        Some(value) => Some(number_in("before", &value, 0..=i64::MAX)?),
        None => None,
    };
    let _reading = state
        .reads
        .try_acquire()
        .map_err(|_| HttpError::TooManyReads)?;
    let interval = parts.interval.name();
    let candles = parts
        .store
        .page(&symbol, interval, limit, before)
        .await
        .map_err(HttpError::StoreUnavailable)?;
    let candles: Vec<StoredCandle> = candles.iter().map(Into::into).collect();
    Ok(Json(
        json!({"symbol": symbol, "interval": interval, "candles": candles}),
    ))
}

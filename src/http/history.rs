//! `GET /api/v1/candles/{symbol}?limit=&before=&interval=&indicators=`: stored
//! candles of any served interval, newest first, paged by open time.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::HttpError;
use super::query::{Parameters, Params, number_in};
use super::subscription::{indicator_list, interval_index};
use crate::candle::Indicator;
use crate::hub::{IndicatorValues, StoredCandle};
use crate::store::read_buckets;

/// Most candles one history request returns.
pub const HISTORY_API_MAX: usize = 1000;
/// Candles returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `?limit=&before=&interval=&indicators=`, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    interval: Option<String>,
    indicators: Option<String>,
}

impl Parameters for HistoryParams {
    const NAMES: &'static [&'static str] = &["limit", "before", "interval", "indicators"];
}

/// Stored candles of `symbol` at `interval` (default `INTERVAL`; longer ones are
/// built from the stored base candles, whole buckets only), newest first: `limit`
/// (1 to 1000, default 100) of them, opened before `before` (ms since the epoch,
/// UTC, exclusive) when given; with `indicators`, each computed over the stored
/// closes before it too.
///
/// `{"symbol":"BTCUSDT","interval":"1m","candles":[{"open_time":…,…},…]}`
///
/// # Errors
/// 404 for an unknown symbol, 400 naming a bad parameter, 503 when the store does
/// not answer or too many reads are under way.
pub async fn history(
    Path(symbol): Path<String>,
    State(state): State<AppState>,
    params: Result<Params<HistoryParams>, HttpError>,
) -> Result<Json<Value>, HttpError> {
    let parts = &state.parts;
    let hub = &parts.hub;
    let symbol = symbol.to_uppercase();
    if hub.position(&symbol).is_none() {
        return Err(HttpError::UnknownSymbol {
            symbol,
            symbols: hub.symbols().to_vec(),
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
    let interval = match params.interval {
        Some(value) => hub.intervals()[interval_index(&value, hub)?].clone(),
        None => hub.intervals()[0].clone(),
    };
    let indicators: Vec<Indicator> = match params.indicators {
        Some(value) => indicator_list(&value)?.to_vec(),
        None => Vec::new(),
    };
    let _reading = state
        .reads
        .try_acquire()
        .map_err(|_| HttpError::TooManyReads)?;
    // Indicators need the closes before the first candle answered.
    let warmup = indicators.iter().map(Indicator::warmup).max().unwrap_or(0);
    let base = &hub.intervals()[0];
    let candles = read_buckets(
        parts.store.as_ref(),
        &symbol,
        base,
        &interval,
        limit + warmup,
        before,
    )
    .await
    .map_err(HttpError::StoreUnavailable)?;
    let closes: Vec<f64> = candles.iter().map(|c| c.close).collect();
    let series: Vec<(String, Vec<_>)> = indicators
        .iter()
        .map(|indicator| (indicator.name(), indicator.compute(&closes)))
        .collect();
    let first = candles.len().saturating_sub(limit);
    let entries: Vec<StoredCandle> = (first..candles.len())
        .rev()
        .map(|index| {
            let mut entry = StoredCandle::from(&candles[index]);
            if !series.is_empty() {
                entry.candle.indicators = Some(IndicatorValues(
                    series
                        .iter()
                        .map(|(name, values)| (name.clone(), values[index]))
                        .collect(),
                ));
            }
            entry
        })
        .collect();
    Ok(Json(
        json!({"symbol": symbol, "interval": interval.name(), "candles": entries}),
    ))
}

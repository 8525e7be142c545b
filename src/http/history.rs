//! `GET /api/v1/candles/{symbol}?limit=&before=&from=&to=&interval=&indicators=&format=`:
//! the candles the service holds (windows, write queue, store: the read path) of any
//! served interval, newest first and paged by open time as JSON, or a whole range as
//! CSV (see [`super::export`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::HttpError;
use super::export::Export;
use super::query::{Parameters, Params, number_in};
use super::subscription::{indicator_list, interval_index};
use crate::candle::{Indicator, parse_instant};
use crate::hub::{IndicatorValues, StoredCandle};
use crate::read::{Admission, ReadError};

/// Most candles one history request returns.
pub const HISTORY_API_MAX: usize = 1000;
/// Candles returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `?limit=&before=&from=&to=&interval=&indicators=&format=`, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
    indicators: Option<String>,
    format: Option<String>,
}

impl Parameters for HistoryParams {
    const NAMES: &'static [&'static str] = &[
        "limit",
        "before",
        "from",
        "to",
        "interval",
        "indicators",
        "format",
    ];
}

/// `from` or `to`: epoch ms, an RFC 3339 time or a date.
fn instant(parameter: &str, value: Option<String>) -> Result<Option<i64>, HttpError> {
    value
        .map(|raw| {
            parse_instant(&raw).map_err(|err| HttpError::bad_parameter(parameter, err.to_string()))
        })
        .transpose()
}

/// Candles of `symbol` at `interval` (default `INTERVAL`; longer ones are built from
/// the base candles, whole buckets only) as the read path holds them, opened in
/// `[from, to)` (ms since the epoch, RFC 3339 or a date; UTC) and before `before`
/// (ms, exclusive) when given.
///
/// As JSON (the default), newest first, `limit` (1 to 1000, default 100) of them,
/// with `indicators` computed over the stored closes before each too:
/// `{"symbol":"BTCUSDT","interval":"1m","candles":[{"open_time":…,…},…]}`.
/// With `format=csv`, all of them, oldest first, streamed (from defaults to the
/// first stored candle, to to now).
///
/// # Errors
/// 404 for an unknown symbol, 400 naming a bad parameter, 503 when the part memory
/// does not cover needs the store and it does not answer or too many reads are
/// under way.
pub async fn history(
    Path(symbol): Path<String>,
    State(state): State<AppState>,
    params: Result<Params<HistoryParams>, HttpError>,
) -> Result<Response, HttpError> {
    let parts = &state.parts;
    let hub = &parts.hub;
    let symbol = symbol.to_uppercase();
    let Some(position) = hub.position(&symbol) else {
        return Err(HttpError::UnknownSymbol {
            symbol,
            symbols: hub.symbols().to_vec(),
        });
    };
    // An unknown symbol is reported before a bad parameter.
    let Params(params) = params?;
    let limit_given = params.limit.is_some();
    let limit = match params.limit {
        Some(value) => number_in("limit", &value, 1..=HISTORY_API_MAX)?,
        None => DEFAULT_LIMIT,
    };
    let before = match params.before {
        Some(value) => Some(number_in("before", &value, 0..=i64::MAX)?),
        None => None,
    };
    let interval = match params.interval {
        Some(value) => interval_index(&value, hub)?,
        None => 0,
    };
    let indicators: Vec<Indicator> = match params.indicators {
        Some(value) => indicator_list(&value)?.to_vec(),
        None => Vec::new(),
    };
    let (from, to) = (instant("from", params.from)?, instant("to", params.to)?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(HttpError::bad_parameter(
            "from",
            format!("from ({from}) must be before to ({to})"),
        ));
    }
    match params.format.as_deref() {
        None | Some("json") => {}
        Some("csv") => {
            for (name, given) in [
                ("limit", limit_given),
                ("before", before.is_some()),
                ("indicators", !indicators.is_empty()),
            ] {
                if given {
                    return Err(HttpError::bad_parameter(
                        name,
                        format!(
                            "{name} does not apply to format=csv, which gives every candle from from to to"
                        ),
                    ));
                }
            }
            return export(&state, symbol, position, interval, from, to).await;
        }
        Some(other) => {
            return Err(HttpError::bad_parameter(
                "format",
                format!("format must be json or csv, got {other:?}"),
            ));
        }
    }
    // `to` is an exclusive bound like `before`: the tighter one applies.
    let before = match (before, to) {
        (Some(before), Some(to)) => Some(before.min(to)),
        (before, to) => before.or(to),
    };
    // Indicators need the closes before the first candle answered.
    let warmup = indicators.iter().map(Indicator::warmup).max().unwrap_or(0);
    let candles = parts
        .reader
        .latest(
            &hub.snapshot(),
            position,
            interval,
            limit + warmup,
            before,
            Admission::Refuse,
        )
        .await
        .map_err(unavailable)?
        .candles;
    // Candles before `from` still feed the indicators; they are not answered.
    let first_wanted = candles.partition_point(|c| from.is_some_and(|from| c.open_time < from));
    let values = IndicatorValues::over(&candles, &indicators);
    let first = candles.len().saturating_sub(limit).max(first_wanted);
    let entries: Vec<StoredCandle> = (first..candles.len())
        .rev()
        .map(|index| {
            let mut entry = StoredCandle::from(&candles[index]);
            entry.candle.indicators = values.get(index).cloned();
            entry
        })
        .collect();
    Ok(Json(
        json!({"symbol": symbol, "interval": hub.intervals()[interval].name(), "candles": entries}),
    )
    .into_response())
}

/// The CSV export of `[from, to)` (defaults: the first candle held, now) of the coin
/// at `position` at the served interval `interval`.
async fn export(
    state: &AppState,
    symbol: String,
    position: usize,
    interval: usize,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Response, HttpError> {
    let reader = &state.parts.reader;
    let to = to.unwrap_or_else(|| state.parts.clock.now_ms());
    let from = match from {
        Some(from) => from,
        None => reader
            .oldest_open_time(position, Admission::Refuse)
            .await
            .map_err(unavailable)?
            .unwrap_or(to)
            .min(to),
    };
    let to = to.max(from + 1);
    let candles = reader
        .range(
            &state.parts.hub.snapshot(),
            position,
            interval,
            from,
            to,
            Admission::Refuse,
        )
        .await
        .map_err(unavailable)?;
    let export = Export {
        symbol,
        interval: state.parts.hub.intervals()[interval].clone(),
        from,
        to,
    };
    Ok(export.respond(candles))
}

/// A read that needs the store and cannot have it: 503, with `Retry-After` when the
/// store is only busy.
fn unavailable(err: ReadError) -> HttpError {
    match err {
        ReadError::Busy => HttpError::TooManyReads,
        ReadError::Store(err) => HttpError::StoreUnavailable(err),
    }
}

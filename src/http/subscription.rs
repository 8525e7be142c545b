//! What a websocket client on `/` asks for in its URL: which coins, how many
//! candles, which format and interval, whether it wants the forming candle, and
//! which indicators; each bad value is a 400 naming its parameter.

use std::sync::Arc;

use serde::Deserialize;

use super::error::HttpError;
use super::query::{Parameters, number_in};
use crate::candle::indicators;
use crate::hub::{Format, Hub, View};

/// `?symbols=&limit=&format=&interval=&live=&indicators=&since=`, as given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    symbols: Option<String>,
    limit: Option<String>,
    format: Option<String>,
    interval: Option<String>,
    live: Option<String>,
    indicators: Option<String>,
    since: Option<String>,
}

impl Parameters for FeedParams {
    const NAMES: &'static [&'static str] = &[
        "symbols",
        "limit",
        "format",
        "interval",
        "live",
        "indicators",
        "since",
    ];
}

/// Most candles a `since` resume sends per coin; further back, the history API.
pub const MAX_RESUME: i64 = 1000;

/// Which coins a websocket client wants, in which order, and how.
pub(super) struct Subscription {
    /// Positions of the coins among the hub's; plain `/`: `SYMBOLS` (the five
    /// majors with `SYMBOLS=*`).
    pub(super) positions: Vec<usize>,
    pub(super) view: View,
    /// Whether the client also gets the candle still forming.
    pub(super) live: bool,
    /// Resume after this open time (ms since the epoch, UTC): the first message of
    /// each coin holds every candle opened after it.
    pub(super) since: Option<i64>,
}

impl Subscription {
    /// Validates `?symbols=` (known, each once), `?limit=` (1 to `HISTORY_MAX`),
    /// `?format=` (`compact` or `candles`), `?interval=` (a served interval),
    /// `?live=` (`true` or `false`) and `?indicators=` (with `format=candles` only),
    /// and `?since=` against `now_ms` (ms since the epoch, on the service's clock).
    pub(super) fn from_params(
        params: FeedParams,
        hub: &Hub,
        now_ms: i64,
    ) -> Result<Self, HttpError> {
        let mut subscription = Subscription {
            positions: hub.plain_positions(),
            view: hub.default_view(),
            live: false,
            since: None,
        };
        if let Some(value) = params.symbols {
            subscription.positions = symbol_positions(&value, hub)?;
        }
        if let Some(value) = params.limit {
            subscription.view.limit = number_in("limit", &value, 1..=hub.history_max())?;
        }
        if let Some(value) = params.format {
            subscription.view.format = match value.as_str() {
                "compact" => Format::Compact,
                "candles" => Format::Candles,
                _ => {
                    return Err(HttpError::bad_parameter(
                        "format",
                        format!("format must be compact or candles, got {value:?}"),
                    ));
                }
            }
        }
        if let Some(value) = params.interval {
            subscription.view.interval = interval_index(&value, hub)?;
        }
        if let Some(value) = params.live {
            subscription.live = match value.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(HttpError::bad_parameter(
                        "live",
                        format!("live must be true or false, got {value:?}"),
                    ));
                }
            }
        }
        if let Some(value) = params.indicators {
            if subscription.view.format != Format::Candles {
                return Err(HttpError::bad_parameter(
                    "indicators",
                    "indicators need format=candles: the compact format has no place for them",
                ));
            }
            subscription.view.indicators = indicator_list(&value)?;
        }
        if let Some(value) = params.since {
            subscription.since = Some(resume_point(&value, &subscription.view, hub, now_ms)?);
        }
        Ok(subscription)
    }
}

/// `?since=`: an open time (ms since the epoch) at most [`MAX_RESUME`] candles of the
/// view's interval back, with `format=candles` (the compact format cannot say which
/// candles a message holds).
fn resume_point(value: &str, view: &View, hub: &Hub, now: i64) -> Result<i64, HttpError> {
    if view.format != Format::Candles {
        return Err(HttpError::bad_parameter(
            "since",
            "since needs format=candles: only that format says which candles a message holds",
        ));
    }
    let since = number_in("since", value, 0..=i64::MAX)?;
    let interval = &hub.intervals()[view.interval];
    let oldest = interval.open_time_containing(now) - MAX_RESUME * interval.millis();
    if since < oldest {
        return Err(HttpError::bad_parameter(
            "since",
            format!(
                "since={since} is more than {MAX_RESUME} {interval} candles back; \
                 fetch older candles from GET /api/v1/candles/{{symbol}}?interval={interval}&from={since}, \
                 then resume with a later since"
            ),
        ));
    }
    Ok(since)
}

/// `?symbols=`: known symbols (any case), each once, at least one.
fn symbol_positions(value: &str, hub: &Hub) -> Result<Vec<usize>, HttpError> {
    let mut positions = Vec::new();
    for symbol in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let symbol = symbol.to_uppercase();
        let Some(position) = hub.position(&symbol) else {
            let symbols = hub.symbols();
            // With SYMBOLS=* that is the whole exchange: name a few, point to the rest.
            let known = if symbols.len() > 20 {
                format!(
                    "{},… ({} in all: GET /api/v1/info)",
                    symbols[..10].join(","),
                    symbols.len()
                )
            } else {
                symbols.join(",")
            };
            return Err(HttpError::bad_parameter(
                "symbols",
                format!("unknown symbol {symbol}; this server has {known}"),
            ));
        };
        if positions.contains(&position) {
            return Err(HttpError::bad_parameter(
                "symbols",
                format!("{symbol} is listed twice"),
            ));
        }
        positions.push(position);
    }
    if positions.is_empty() {
        return Err(HttpError::bad_parameter(
            "symbols",
            "symbols must name at least one symbol",
        ));
    }
    Ok(positions)
}

/// `?interval=`: the index of a served interval, or a 400 listing them.
pub(super) fn interval_index(value: &str, hub: &Hub) -> Result<usize, HttpError> {
    hub.interval_index(value).ok_or_else(|| {
        let served: Vec<&str> = hub.intervals().iter().map(|i| i.name()).collect();
        HttpError::bad_parameter(
            "interval",
            format!(
                "interval {value:?} is not served; this server has {} (INTERVALS)",
                served.join(",")
            ),
        )
    })
}

/// `?indicators=`: at most eight known indicators, each once.
pub(super) fn indicator_list(value: &str) -> Result<Arc<[crate::candle::Indicator]>, HttpError> {
    indicators::parse_list(value)
        .map(Arc::from)
        .map_err(|err| HttpError::bad_parameter("indicators", err.to_string()))
}

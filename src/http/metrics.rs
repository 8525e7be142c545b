//! `/metrics`: every metric in the Prometheus (OpenMetrics) text format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::HttpError;
use crate::metrics::SymbolLabel;

/// Sets each symbol's newest-candle age and the view cache's size, then encodes
/// the registry.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, HttpError> {
    let parts = &state.parts;
    parts
        .metrics
        .serving
        .cached_views
        .set(parts.hub.cached_views() as i64);
    let now = parts.clock.now_ms();
    // Every configured symbol has a series; NaN while none of its candles is held
    // (a symbol the exchange refused, a store and exchange both away).
    for symbol in parts.hub.symbols().iter() {
        let age = parts.hub.newest(symbol).map_or(f64::NAN, |newest| {
            let closed_at = newest.open_time + parts.interval.millis();
            (now - closed_at) as f64 / 1000.0
        });
        let label = SymbolLabel {
            symbol: symbol.clone(),
        };
        parts
            .metrics
            .newest_candle_age
            .get_or_create(&label)
            .set(age);
    }
    let body = parts.metrics.encode().map_err(HttpError::Metrics)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

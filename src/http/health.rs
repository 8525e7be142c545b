//! `/health` (the process answers) and `/ready` (it has what it needs to serve
//! fresh candles), with the reasons when it does not.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::time::Duration;

use super::AppState;
use super::request_log::Refused;

/// Writes failing for this long make the replica not ready: candles are piling up
/// in memory, not reaching the store.
pub const WRITES_FAILING_LIMIT: Duration = Duration::from_secs(10);

/// `/health`: 200 `{"status":"ok"}` while the process serves HTTP.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `/ready`: 200 when the store answers and the exchange sent data within the stale
/// window; 503 `{"status":"not ready","reasons":[…]}` otherwise.
pub async fn ready(State(state): State<AppState>) -> Response {
    let parts = &state.parts;
    let mut reasons = Vec::new();
    // From the background ping, never waiting on the database; said in words: the
    // store's own error (host names, replica-set names) goes to the log only.
    if !parts.store_health.reachable() {
        reasons.push("store: not reachable".to_owned());
    }
    if let Some(failing) = parts.store_health.failing_for()
        && failing >= WRITES_FAILING_LIMIT
    {
        reasons.push(format!("store: writes failing for {} s", failing.as_secs()));
    }
    if let Some((status, until)) = parts.health.rest_ban() {
        let left = (until - chrono::Utc::now().timestamp_millis()).max(0) / 1000;
        let until = chrono::DateTime::from_timestamp_millis(until)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        reasons.push(format!(
            "exchange: REST requests banned (HTTP {status}) until {until} ({left} s left); the history is not being repaired"
        ));
    }
    for (symbol, answer) in parts.health.refused_symbols() {
        reasons.push(format!(
            "exchange: the exchange rejects symbol {symbol} from SYMBOLS ({answer})"
        ));
    }
    if parts.readiness.ingest {
        let stale_ms = parts.readiness.upstream_stale_after.as_millis() as i64;
        match parts.health.last_data_ms() {
            None => reasons.push("upstream: no data received from the exchange yet".to_owned()),
            Some(last) => {
                let silent_ms = chrono::Utc::now().timestamp_millis() - last;
                if silent_ms > stale_ms {
                    reasons.push(format!(
                        "upstream: no data from the exchange for {} s",
                        silent_ms / 1000
                    ));
                }
            }
        }
    } else {
        if parts.metrics.change_stream_open.get() == 0 {
            reasons.push(
                "change stream: not open, so candles written by ingesters do not arrive".to_owned(),
            );
        }
        if let Some(reason) = parts.store_health.ingesters_reason() {
            reasons.push(reason);
        }
        if let Some(reason) = parts.store_health.followed_refused() {
            reasons.push(reason);
        }
    }
    if reasons.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let body = json!({"status": "not ready", "reasons": reasons});
        // An answer, not a failure: probes ask every few seconds.
        Refused("not_ready").mark((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
    }
}

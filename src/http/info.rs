//! `GET /api/v1/info`: what this server serves, so a page or a bot can build its
//! requests without knowing the configuration.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

/// `{"symbols":["BTCUSDT",…],"intervals":["1m","5m",…],"base_interval":"1m",
/// "history_len":10,"history_max":100,"live_interval_ms":250}`: `SYMBOLS` in client
/// order, `INTERVALS` shortest first (the first is `INTERVAL`), the most `limit` may
/// ask for, and how often a `live=true` client gets the forming candle.
pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let parts = &state.parts;
    let hub = &parts.hub;
    let intervals: Vec<&str> = hub.intervals().iter().map(|i| i.name()).collect();
    Json(json!({
        "symbols": hub.followed(),
        "intervals": intervals,
        "base_interval": intervals[0],
        "history_len": hub.default_view().limit,
        "history_max": hub.history_max(),
        "live_interval_ms": u64::try_from(parts.feed.live_interval.as_millis()).unwrap_or(u64::MAX),
    }))
}

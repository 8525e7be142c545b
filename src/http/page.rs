//! The live page on `/` (for a plain GET) and the chart library it loads.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The live page, and the chart library it uses (vendored from npm; see web/vendor).
const PAGE: &str = include_str!("../../web/index.html");
const CHARTS_JS: &[u8] = include_bytes!(
    "../../web/vendor/lightweight-charts/lightweight-charts.standalone.production.js"
);

/// The live page.
pub fn page() -> Response {
    Html(PAGE).into_response()
}

/// `/assets/lightweight-charts.standalone.production.js`, cached for a day.
pub async fn charts_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CHARTS_JS,
    )
        .into_response()
}

//! Public market data the mirror does not serve itself, forwarded to the exchange
//! verbatim (status, body, `Content-Type`, Binance's `X-MBX-USED-WEIGHT-*` and
//! `Retry-After`), within the weight budget; requests with an API key or a signature
//! are refused, never forwarded.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Method, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use tracing::warn;

use super::MirrorState;
use super::error::BinanceError;
use super::weights::weight_of;
use crate::telemetry::Chain;

/// The header Binance reads an API key from.
const API_KEY_HEADER: &str = "x-mbx-apikey";

/// Any `GET /fapi/…` or `/futures/data/…` not served here: to the exchange.
pub(super) async fn forward_any(
    State(mirror): State<MirrorState>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    if method != Method::GET {
        return BinanceError::PublicOnly.into_response();
    }
    forward(
        &mirror,
        &headers,
        uri.path(),
        uri.query().unwrap_or_default(),
    )
    .await
}

/// Whether the request carries an API key or a signature: private, never forwarded.
fn is_private(headers: &HeaderMap, query: &str) -> bool {
    headers.contains_key(API_KEY_HEADER)
        || url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "signature")
}

/// `GET {BINANCE_REST_URL}{path}?{query}`, answered verbatim, after spending its
/// weight; Binance's 429 when the budget has none left; 403 (-2015) for a request
/// with an API key or a signature (`headers` are the client's).
pub(super) async fn forward(
    mirror: &MirrorState,
    headers: &HeaderMap,
    path: &str,
    query: &str,
) -> Response<Body> {
    if is_private(headers, query) {
        return BinanceError::PublicOnly.into_response();
    }
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let weight = weight_of(path, &params);
    let inner = &mirror.inner;
    if let Err(refused) = mirror
        .check_ban()
        .and_then(|()| inner.budget.try_spend(weight, inner.clock.now_ms()))
    {
        return refused.into_response();
    }
    let mut url = inner.rest_url.clone();
    url.set_path(&format!(
        "{}{path}",
        inner.rest_url.path().trim_end_matches('/')
    ));
    url.set_query((!query.is_empty()).then_some(query));
    let answer = match inner.http.get(url).send().await {
        Ok(answer) => answer,
        Err(err) => {
            warn!(path, error = %Chain(&err), "cannot forward to the exchange");
            return BinanceError::Unavailable.into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut kept = HeaderMap::new();
    for (name, value) in answer.headers() {
        let name = name.as_str();
        let binance_s = name == "content-type"
            || name == "retry-after"
            || name.starts_with("x-mbx-used-weight");
        if binance_s
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                header::HeaderValue::from_bytes(value.as_bytes()),
            )
        {
            kept.insert(name, value);
        }
    }
    let retry_after = kept
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    mirror.banned(status.as_u16(), retry_after);
    if let Some(used) = kept
        .get("x-mbx-used-weight-1m")
        .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
    {
        inner.budget.observe_used(used, inner.clock.now_ms());
    }
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(err) => {
            warn!(path, error = %Chain(&err), "the exchange's answer broke off");
            return BinanceError::Unavailable.into_response();
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = kept;
    response
}

//! Binance's error answers, to the letter: `{"code":…,"msg":"…"}` with Binance's
//! status, codes and message texts (USD-M futures docs, "Error Codes").

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a mirrored request is answered with an error, as Binance would answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinanceError {
    /// -1102: a mandatory parameter is missing or empty.
    #[error("Mandatory parameter '{0}' was not sent, was empty/null, or malformed.")]
    Mandatory(&'static str),
    /// -1100: a numeric parameter holds something else.
    #[error("Illegal characters found in parameter '{0}'; legal range is '^[0-9]{{1,20}}$'.")]
    IllegalCharacters(&'static str),
    /// -1130: a parameter's value is out of range (e.g. `limit` above 1,500).
    #[error("Data sent for parameter '{0}' is not valid.")]
    InvalidValue(&'static str),
    /// -1120: no such interval.
    #[error("Invalid interval.")]
    InvalidInterval,
    /// -1121: no such symbol.
    #[error("Invalid symbol.")]
    InvalidSymbol,
    /// -1101: a parameter sent twice.
    #[error("Duplicate values for a parameter detected.")]
    Duplicate,
    /// -1023: `startTime` after `endTime`.
    #[error("Start time is greater than end time.")]
    StartAfterEnd,
    /// -1003 (429): the request would take the service over its weight budget.
    #[error(
        "Too many requests; current limit is {limit} requests per minute. Please use the websocket for live updates to avoid polling the API."
    )]
    TooMuchWeight { limit: u32, retry_after_secs: u64 },
    /// -1003 (418 or 429): the exchange banned this address until `until_ms`; no
    /// request reaches it before then.
    #[error(
        "Way too many requests; IP banned until {until_ms}. Please use the websocket for live updates to avoid bans."
    )]
    Banned {
        status: u16,
        until_ms: i64,
        retry_after_secs: u64,
    },
    /// -2015 (403): an API key or signature; candlecast serves public data only.
    #[error(
        "Invalid API-key, IP, or permissions for action: candlecast serves public market data only; send signed requests to Binance."
    )]
    PublicOnly,
    /// -1001 (503): the exchange could not be asked.
    #[error("Internal error; unable to process your request. Please try again.")]
    Unavailable,
}

impl BinanceError {
    /// Binance's error code.
    pub fn code(&self) -> i32 {
        match self {
            BinanceError::Mandatory(_) => -1102,
            BinanceError::IllegalCharacters(_) => -1100,
            BinanceError::InvalidValue(_) => -1130,
            BinanceError::InvalidInterval => -1120,
            BinanceError::InvalidSymbol => -1121,
            BinanceError::Duplicate => -1101,
            BinanceError::StartAfterEnd => -1023,
            BinanceError::TooMuchWeight { .. } | BinanceError::Banned { .. } => -1003,
            BinanceError::PublicOnly => -2015,
            BinanceError::Unavailable => -1001,
        }
    }

    /// The HTTP status Binance answers it with.
    pub fn status(&self) -> StatusCode {
        match self {
            BinanceError::TooMuchWeight { .. } => StatusCode::TOO_MANY_REQUESTS,
            BinanceError::Banned { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::TOO_MANY_REQUESTS)
            }
            BinanceError::PublicOnly => StatusCode::FORBIDDEN,
            BinanceError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for BinanceError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code(), "msg": self.to_string()}).to_string();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let BinanceError::TooMuchWeight {
            retry_after_secs, ..
        }
        | BinanceError::Banned {
            retry_after_secs, ..
        } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

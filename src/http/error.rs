//! The one error type of the HTTP handlers, and the JSON answer each variant gets.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::quiet::Noisy;
use super::request_log::{Cause, Refused};
use crate::store::StoreError;
use crate::telemetry::Chain;

/// Why a request was not served. Each variant is answered with its own status and
/// a JSON body (`{"error": …}` plus details).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 400 `{"error", "parameter"}`: a query parameter is unknown, repeated or invalid.
    #[error("{message}")]
    BadParameter {
        /// The parameter at fault, as the client spelled it.
        parameter: String,
        message: String,
    },
    /// 404 `{"error", "symbols"}`: the symbol is not one this server follows.
    #[error("unknown symbol {symbol}")]
    UnknownSymbol {
        symbol: String,
        /// The symbols this server has.
        symbols: Vec<String>,
    },
    /// 503 `{"error"}`: the store did not answer.
    #[error("the store is unavailable; try again shortly")]
    StoreUnavailable(#[source] StoreError),
    /// 503 `{"error"}` with `Retry-After: 1`: too many history reads under way.
    #[error("too many history requests at once; retry shortly")]
    TooManyReads,
    /// 503 `{"error", "max_connections"}` with `Retry-After: 5`.
    #[error("connection limit reached")]
    ConnectionLimit { max_connections: usize },
    /// 500: the metrics could not be encoded.
    #[error("cannot encode the metrics")]
    Metrics(#[source] std::fmt::Error),
}

impl HttpError {
    /// A 400 naming `parameter`.
    pub fn bad_parameter(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

impl IntoResponse for HttpError {
    /// A 503 is marked [`Refused`] (a decision, summed up where it was made, never
    /// logged as a failure); the one unexpected error carries its [`Cause`] for the
    /// request log's single ERROR line.
    fn into_response(self) -> Response {
        let error = self.to_string();
        match self {
            HttpError::BadParameter { parameter, .. } => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": error, "parameter": parameter})),
            )
                .into_response(),
            HttpError::UnknownSymbol { symbols, .. } => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": error, "symbols": symbols})),
            )
                .into_response(),
            HttpError::StoreUnavailable(err) => {
                Noisy::StoreUnavailable.note(&Chain(&err));
                Refused("store_unavailable").mark(
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": error})),
                    )
                        .into_response(),
                )
            }
            // Noted where the limit is checked, with the limit's value.
            HttpError::ConnectionLimit { max_connections } => Refused("max_connections").mark(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "5")],
                    Json(json!({"error": error, "max_connections": max_connections})),
                )
                    .into_response(),
            ),
            HttpError::TooManyReads => {
                Noisy::TooManyReads.note(&format_args!("{}", super::MAX_CONCURRENT_READS));
                Refused("too_many_reads").mark(
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                        Json(json!({"error": error})),
                    )
                        .into_response(),
                )
            }
            HttpError::Metrics(err) => {
                let mut response = (StatusCode::INTERNAL_SERVER_ERROR, error).into_response();
                let cause = Chain(&HttpError::Metrics(err)).to_string();
                response.extensions_mut().insert(Cause(cause.into()));
                response
            }
        }
    }
}

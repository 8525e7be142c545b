//! Requests on `/` that ask for a websocket (`Upgrade: websocket`) but are not a
//! valid handshake (RFC 6455 §4.2.1), typically because a proxy dropped
//! `Connection: upgrade`: they get 400 naming what is missing (426 for an
//! unsupported version), never the page.

use axum::Json;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::{Metrics, ReasonLabel};

/// The one websocket version there is (RFC 6455).
const VERSION: &str = "13";

/// Why a request that asked for a websocket could not have one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHandshake {
    /// 400: headers a handshake needs are absent, named as a client should send them.
    #[error("not a websocket handshake: missing {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// 426 with `Sec-WebSocket-Version: 13`: a version this server does not speak.
    #[error("unsupported Sec-WebSocket-Version {0:?}; this server speaks {VERSION}")]
    Version(String),
    /// 400: the headers are right but the connection cannot switch protocols (not
    /// HTTP/1.1, or not a GET).
    #[error("this connection cannot be upgraded to a websocket: {0}")]
    NotUpgradable(String),
}

/// Whether the request asks for a websocket: an `Upgrade` header naming it.
pub fn asks_for_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl BadHandshake {
    /// Checks the opening handshake of a request that asks for a websocket: what is
    /// wrong with it, if anything (RFC 6455 §4.2.1).
    pub fn check(parts: &Parts) -> Result<(), Self> {
        let headers = &parts.headers;
        let mut missing = Vec::new();
        if !has_token(headers, header::CONNECTION, "upgrade") {
            missing.push("Connection: upgrade");
        }
        let key = headers.get(header::SEC_WEBSOCKET_KEY);
        if key.is_none_or(|key| key.as_bytes().trim_ascii().is_empty()) {
            missing.push("Sec-WebSocket-Key");
        }
        let version = headers.get(header::SEC_WEBSOCKET_VERSION);
        if version.is_none() {
            missing.push("Sec-WebSocket-Version: 13");
        }
        if !missing.is_empty() {
            return Err(BadHandshake::Missing(missing));
        }
        match version.map(|v| v.to_str().map(str::trim)) {
            Some(Ok(VERSION)) => {}
            Some(Ok(other)) => return Err(BadHandshake::Version(other.to_owned())),
            _ => return Err(BadHandshake::Version("(not text)".to_owned())),
        }
        if parts.version != Version::HTTP_11 {
            return Err(BadHandshake::NotUpgradable(
                "HTTP/1.1 is required".to_owned(),
            ));
        }
        if parts.method != Method::GET {
            return Err(BadHandshake::NotUpgradable(
                "the method must be GET".to_owned(),
            ));
        }
        Ok(())
    }

    /// The `reason` labels this refusal is counted under.
    pub fn reasons(&self) -> Vec<&'static str> {
        match self {
            BadHandshake::Missing(missing) => missing
                .iter()
                .map(|m| match *m {
                    "Connection: upgrade" => "no_connection_upgrade",
                    "Sec-WebSocket-Key" => "no_key",
                    _ => "no_version",
                })
                .collect(),
            BadHandshake::Version(_) => vec!["unsupported_version"],
            BadHandshake::NotUpgradable(_) => vec!["not_upgradable"],
        }
    }

    /// Counts this refusal in `upgrades_refused{reason}` and logs it at debug.
    pub fn count(&self, metrics: &Metrics) {
        for reason in self.reasons() {
            metrics
                .serving
                .upgrades_refused
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        tracing::debug!(reason = %self, "refused an invalid websocket handshake");
    }
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        let error = self.to_string();
        match self {
            BadHandshake::Missing(missing) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": error, "missing": missing})),
            )
                .into_response(),
            BadHandshake::Version(_) => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, VERSION)],
                Json(json!({"error": error})),
            )
                .into_response(),
            BadHandshake::NotUpgradable(_) => {
                (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response()
            }
        }
    }
}

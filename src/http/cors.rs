//! Cross-origin reads of the HTTP API (`CORS_ALLOW_ORIGINS`): which origins a page
//! may read the history API, health, readiness and metrics from.

use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// A `CORS_ALLOW_ORIGINS` entry that is not an origin, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOrigins(String);

/// Which origins may read the HTTP API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`): the API serves public market data and only reads.
    Any,
    /// Only these origins, each `scheme://host[:port]` as browsers send it.
    List(Vec<String>),
    /// No CORS headers at all: only same-origin pages can read the API.
    Off,
}

impl CorsOrigins {
    /// Parses `CORS_ALLOW_ORIGINS`: `*`, a comma-separated list of origins such as
    /// `https://charts.example.com,http://localhost:3000`, or empty for off.
    ///
    /// # Errors
    /// What is wrong with the first entry that is not an origin.
    pub fn parse(raw: &str) -> Result<Self, InvalidOrigins> {
        let entries: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(CorsOrigins::Off);
        }
        if entries == ["*"] {
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::new();
        for entry in entries {
            if entry == "*" {
                return Err(InvalidOrigins(
                    "* allows every origin and cannot be combined with a list".to_owned(),
                ));
            }
            let url = url::Url::parse(entry).map_err(|err| {
                InvalidOrigins(format!(
                    "{entry:?} is not an origin ({err}); expected e.g. https://charts.example.com"
                ))
            })?;
            let is_origin = matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && !entry.ends_with('/');
            if !is_origin {
                return Err(InvalidOrigins(format!(
                    "{entry:?} is not an origin; expected scheme://host[:port] such as https://charts.example.com, no path"
                )));
            }
            let origin = url.origin().ascii_serialization();
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(CorsOrigins::List(origins))
    }

    /// The layer that answers preflights and adds the CORS headers; `None` when off.
    pub fn layer(&self) -> Option<CorsLayer> {
        let allow_origin = match self {
            CorsOrigins::Off => return None,
            CorsOrigins::Any => AllowOrigin::any(),
            CorsOrigins::List(origins) => AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            ),
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::HEAD])
                .allow_headers(Any)
                .expose_headers([header::RETRY_AFTER])
                .max_age(PREFLIGHT_MAX_AGE),
        )
    }
}

/// The setting as `CORS_ALLOW_ORIGINS` would hold it (`(empty: off)` when off).
impl std::fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(origins) => f.write_str(&origins.join(",")),
            CorsOrigins::Off => f.write_str("(empty: off)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_a_list_or_off() {
        assert_eq!(CorsOrigins::parse("*"), Ok(CorsOrigins::Any));
        assert_eq!(CorsOrigins::parse(""), Ok(CorsOrigins::Off));
        assert_eq!(CorsOrigins::parse(" , "), Ok(CorsOrigins::Off));
        assert_eq!(
            CorsOrigins::parse(
                "https://Charts.Example.com, http://localhost:3000,https://charts.example.com:443"
            ),
            Ok(CorsOrigins::List(vec![
                "https://charts.example.com".to_owned(),
                "http://localhost:3000".to_owned()
            ]))
        );
        for bad in [
            "*,https://a.example",
            "charts.example.com",
            "https://a.example/app",
            "ftp://a.example",
            "https://a.example/",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}

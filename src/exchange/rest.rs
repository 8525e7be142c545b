//! Binance's REST klines endpoint (`GET /fapi/v1/klines`): one page at a time,
//! retried with backoff, honouring `Retry-After` on 429 and 418.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use url::Url;

use super::kline::{ParseError, RestKline};
use crate::candle::{Candle, Interval};
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::telemetry::Chain;

/// Binance's maximum page size for `GET /fapi/v1/klines`.
pub const REST_PAGE_LIMIT: usize = 1500;
/// The longest `Retry-After` honoured; a longer ban is retried after this anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why a REST request failed. (URLs are kept as text: it keeps the error small.)
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer.
    #[error("GET {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The exchange answered with an error status.
    #[error("GET {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        /// The first 200 characters of the answer.
        body: String,
        /// How long the exchange asked us to wait (429, 418).
        retry_after: Option<Duration>,
    },
    /// The answer was not a klines array.
    #[error("GET {url}: unreadable klines")]
    Unreadable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A row was not a usable candle.
    #[error("GET {url}: bad kline row")]
    BadRow {
        url: String,
        #[source]
        source: ParseError,
    },
}

impl RestError {
    /// How long the exchange asked us to wait before the next request.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RestError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A client of the klines endpoint for one interval.
pub struct RestClient {
    http: reqwest::Client,
    klines_url: Url,
    interval: Interval,
}

impl RestClient {
    /// A client of `{base}/fapi/v1/klines` for `interval`.
    ///
    /// # Errors
    /// [`RestError::Client`] when the HTTP client cannot be built.
    pub fn new(base: &Url, interval: Interval) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("candlecast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(RestError::Client)?;
        let mut klines_url = base.clone();
        klines_url
            .path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(["fapi", "v1", "klines"]);
        Ok(Self {
            http,
            klines_url,
            interval,
        })
    }

    /// One page of klines, retried with backoff until it arrives or `cancel`; a
    /// `Retry-After` from the exchange (429, 418) is honoured.
    pub async fn fetch_with_retry(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
        backoff_max: Duration,
        cancel: &CancellationToken,
    ) -> Option<Vec<Candle>> {
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, backoff_max);
        loop {
            let error = match self.fetch_page(symbol, start, end).await {
                Ok(page) => return Some(page),
                Err(error) => error,
            };
            let wait = error
                .retry_after()
                .map_or_else(|| backoff.next_delay(), |asked| asked.min(MAX_RETRY_AFTER));
            warn!(symbol, error = %Chain(&error), retry_in = ?wait, "kline backfill request failed");
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    pub async fn fetch_page(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Candle>, RestError> {
        let response = self
            .http
            .get(self.klines_url.clone())
            .query(&[
                ("symbol", symbol.to_owned()),
                ("interval", self.interval.name().to_owned()),
                ("startTime", start.to_string()),
                ("endTime", end.to_string()),
                ("limit", REST_PAGE_LIMIT.to_string()),
            ])
            .send()
            .await
            .map_err(|source| RestError::Request {
                url: self.klines_url.to_string(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(RestError::Status {
                url: self.klines_url.to_string(),
                status: status.as_u16(),
                body,
                retry_after,
            });
        }
        let rows: Vec<RestKline> =
            response
                .json()
                .await
                .map_err(|source| RestError::Unreadable {
                    url: self.klines_url.to_string(),
                    source,
                })?;
        rows.into_iter()
            .map(|row| row.into_candle(symbol, self.interval.name()))
            .collect::<Result<_, _>>()
            .map_err(|source| RestError::BadRow {
                url: self.klines_url.to_string(),
                source,
            })
    }
}

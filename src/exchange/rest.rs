//! Binance's REST klines endpoint (`GET /fapi/v1/klines`): one page at a time,
//! retried with backoff, honouring `Retry-After` on 429 and 418.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use url::Url;

use super::kline::{ParseError, RestKline};
use super::pace::{Pacer, klines_weight};
use crate::candle::{Candle, Interval, Notations};
use crate::health::UpstreamHealth;
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::telemetry::Chain;

/// Binance's maximum page size for `GET /fapi/v1/klines`.
pub const REST_PAGE_LIMIT: usize = 1500;
/// The longest `Retry-After` taken at its word: Binance's IP bans last from two
/// minutes up to three days, and a longer answer is a broken header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3 * 86_400);

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

    /// Whether asking again cannot help: the exchange does not know the symbol
    /// (`400 {"code":-1121,"msg":"Invalid symbol."}`). Other 4xx answers (a 403 from
    /// the exchange's firewall, another error code) are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RestError::Status { status: 400, body, .. } if body.contains("-1121"))
    }
}

/// Why [`RestClient::fetch_with_retry`] gave up.
#[derive(Debug)]
pub enum GaveUp {
    /// Shutdown began.
    Cancelled,
    /// The exchange refused the request for good (see [`RestError::is_permanent`]).
    Refused(RestError),
}

/// One symbol of `GET /fapi/v1/exchangeInfo`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ListedSymbol {
    pub symbol: String,
    /// `TRADING`, `SETTLING`, `PENDING_TRADING`, …
    #[serde(default)]
    pub status: String,
}

#[derive(serde::Deserialize)]
struct ExchangeInfo {
    symbols: Vec<ListedSymbol>,
}

#[derive(serde::Deserialize)]
struct ServerTime {
    #[serde(rename = "serverTime")]
    server_time: i64,
}

/// A client of the klines endpoint for one interval.
pub struct RestClient {
    http: reqwest::Client,
    base: Url,
    klines_url: Url,
    interval: Interval,
    health: Arc<UpstreamHealth>,
    /// Spaces every request by its weight, when set (the backfill command).
    pacer: Option<Arc<Pacer>>,
    /// Where the rows' decimals are learned, when set (the service's clients).
    notations: Option<Arc<Notations>>,
}

impl RestClient {
    /// A client of `{base}/fapi/v1/klines` for `interval`.
    ///
    /// # Errors
    /// [`RestError::Client`] when the HTTP client cannot be built.
    pub fn new(
        base: &Url,
        interval: Interval,
        health: Arc<UpstreamHealth>,
    ) -> Result<Self, RestError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("candlecast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(RestError::Client)?;
        Ok(Self {
            http,
            base: base.clone(),
            klines_url: endpoint(base, "klines"),
            interval,
            health,
            pacer: None,
            notations: None,
        })
    }

    /// The same client with every request it sends (retries included) waiting for
    /// its turn on `pacer`, by its request weight.
    pub fn with_pacer(mut self, pacer: Arc<Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The same client teaching `notations` how each row it reads writes its
    /// decimals.
    pub fn with_notations(mut self, notations: Arc<Notations>) -> Self {
        self.notations = Some(notations);
        self
    }

    /// Waits for a request of `weight`, if this client is paced.
    async fn pace(&self, weight: u32) {
        if let Some(pacer) = &self.pacer {
            pacer.wait(weight).await;
        }
    }

    /// `GET /fapi/v1/time`: the exchange's clock, ms since the epoch.
    ///
    /// # Errors
    /// [`RestError`] when it does not answer with `{"serverTime": …}`.
    pub async fn server_time(&self) -> Result<i64, RestError> {
        let url = endpoint(&self.base, "time");
        self.pace(1).await;
        let request = self.http.get(url.clone()).timeout(Duration::from_secs(5));
        let time: ServerTime = self.get_json(request, &url).await?;
        Ok(time.server_time)
    }

    /// `GET /fapi/v1/exchangeInfo` (weight 1): every symbol the exchange lists.
    ///
    /// # Errors
    /// [`RestError`] when it does not answer with the documented shape.
    pub async fn listed_symbols(&self) -> Result<Vec<ListedSymbol>, RestError> {
        let url = endpoint(&self.base, "exchangeInfo");
        self.pace(1).await;
        let request = self.http.get(url.clone()).timeout(Duration::from_secs(5));
        let info: ExchangeInfo = self.get_json(request, &url).await?;
        Ok(info.symbols)
    }

    /// Sends `request` (to `url`) and reads its JSON answer; an error status is a
    /// [`RestError::Status`] with the start of the body and any `Retry-After`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T, RestError> {
        let response = request.send().await.map_err(|source| RestError::Request {
            url: url.to_string(),
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
            let body = response.text().await.unwrap_or_default();
            return Err(RestError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
                retry_after,
            });
        }
        response
            .json()
            .await
            .map_err(|source| RestError::Unreadable {
                url: url.to_string(),
                source,
            })
    }

    /// One page of up to `limit` klines opened in `[start, end]` (ms since the epoch,
    /// UTC), retried with backoff until it arrives or `cancel`; a `Retry-After` from
    /// the exchange (429, 418) is honoured, and a paced client spaces every attempt
    /// by its weight.
    pub async fn fetch_with_retry(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
        limit: usize,
        backoff_max: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<Candle>, GaveUp> {
        let interval = self.interval.clone();
        let range = (start, end, limit);
        self.fetch_with_retry_at(&interval, symbol, range, backoff_max, cancel)
            .await
    }

    /// [`RestClient::fetch_with_retry`] of `interval`'s klines (any of Binance's,
    /// not only this client's): `range` is `(start, end, limit)`.
    ///
    /// # Errors
    /// [`GaveUp`]: cancelled, or the exchange refuses the request for good.
    pub async fn fetch_with_retry_at(
        &self,
        interval: &Interval,
        symbol: &str,
        (start, end, limit): (i64, i64, usize),
        backoff_max: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<Candle>, GaveUp> {
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, backoff_max);
        let weight = klines_weight(limit.min(REST_PAGE_LIMIT));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(GaveUp::Cancelled),
                _ = self.wait_for_turn(weight) => {}
            }
            // Shutdown does not wait for an answer (up to the 20 s request timeout):
            // the write queue's senders are released at once.
            let answered = tokio::select! {
                answered = self.fetch_page_at(interval, symbol, start, end, limit) => answered,
                _ = cancel.cancelled() => return Err(GaveUp::Cancelled),
            };
            let error = match answered {
                // A success does not lift a ban another request was given: it
                // ends when its Retry-After does.
                Ok(page) => return Ok(page),
                Err(error) if error.is_permanent() => return Err(GaveUp::Refused(error)),
                Err(error) => error,
            };
            let wait = match (&error, error.retry_after()) {
                (RestError::Status { status, .. }, Some(asked)) => {
                    let asked = asked.min(MAX_RETRY_AFTER);
                    self.health.rest_banned_for(*status, asked);
                    asked
                }
                _ => backoff.next_delay(),
            };
            warn!(symbol, error = %Chain(&error), retry_in = ?wait, "kline backfill request failed");
            tokio::select! {
                _ = cancel.cancelled() => return Err(GaveUp::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Waits until a request of `weight` may go: after any ban another request was
    /// given, and after its turn on the pacer; a ban given while it waited for its
    /// turn is waited out too, and the turn taken again, so no request goes out
    /// during a ban, nor all at once when it ends.
    async fn wait_for_turn(&self, weight: u32) {
        loop {
            if let Some(wait) = self.health.rest_ban_remaining() {
                tokio::time::sleep(wait).await;
            }
            self.pace(weight).await;
            if self.health.rest_ban_remaining().is_none() {
                return;
            }
        }
    }

    /// One request for up to `limit` (at most 1500) klines opened in `[start, end]`,
    /// unpaced: [`RestClient::fetch_with_retry`] takes its turn first.
    ///
    /// # Errors
    /// [`RestError`]: the request failed, Binance answered an error, or a row does
    /// not parse.
    pub async fn fetch_page(
        &self,
        symbol: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<Candle>, RestError> {
        self.fetch_page_at(&self.interval, symbol, start, end, limit)
            .await
    }

    /// [`RestClient::fetch_page`] of `interval`'s klines.
    ///
    /// # Errors
    /// As [`RestClient::fetch_page`].
    pub async fn fetch_page_at(
        &self,
        interval: &Interval,
        symbol: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<Candle>, RestError> {
        let limit = limit.min(REST_PAGE_LIMIT);
        let request = self.http.get(self.klines_url.clone()).query(&[
            ("symbol", symbol.to_owned()),
            ("interval", interval.name().to_owned()),
            ("startTime", start.to_string()),
            ("endTime", end.to_string()),
            ("limit", limit.to_string()),
        ]);
        let rows: Vec<RestKline> = self.get_json(request, &self.klines_url).await?;
        if let Some(notations) = &self.notations {
            for row in &rows {
                notations.learn(&symbol.to_uppercase(), row.notation());
            }
        }
        rows.into_iter()
            .map(|row| row.into_candle(symbol, interval.name()))
            .collect::<Result<_, _>>()
            .map_err(|source| RestError::BadRow {
                url: self.klines_url.to_string(),
                source,
            })
    }
}

/// `{base}/fapi/v1/{name}`, keeping any path the base has.
fn endpoint(base: &Url, name: &str) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("http(s) URLs have a path")
        .pop_if_empty()
        .extend(["fapi", "v1", name]);
    url
}

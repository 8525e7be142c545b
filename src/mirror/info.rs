//! `GET /fapi/v1/ping`, `/fapi/v1/time` and `/fapi/v1/exchangeInfo` (USD-M docs,
//! "Test Connectivity", "Check Server Time", "Exchange Information"): `{}`, the
//! exchange's clock as the service knows it, and the exchange's own exchangeInfo,
//! cached byte for byte and refreshed in the background.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::MirrorState;
use super::error::BinanceError;
use crate::candle::Notation;
use crate::telemetry::Chain;

/// How often exchangeInfo and the exchange's clock are read again.
pub const INFO_REFRESH: Duration = Duration::from_secs(60);

/// The exchange's exchangeInfo answer as it sent it, and its symbols.
#[derive(Debug, Default)]
pub(super) struct InfoCache {
    cached: RwLock<Option<Arc<Listing>>>,
}

#[derive(Debug)]
pub(super) struct Listing {
    body: Bytes,
    symbols: HashSet<String>,
}

impl InfoCache {
    /// Whether the exchange lists `symbol`; `None` before exchangeInfo was read.
    pub(super) fn lists(&self, symbol: &str) -> Option<bool> {
        let cached = self.cached.read().expect("info lock");
        cached.as_ref().map(|l| l.symbols.contains(symbol))
    }

    /// Whether exchangeInfo was never read.
    pub(super) fn is_empty(&self) -> bool {
        self.cached.read().expect("info lock").is_none()
    }

    fn get(&self) -> Option<Arc<Listing>> {
        self.cached.read().expect("info lock").clone()
    }
}

#[derive(serde::Deserialize)]
struct Symbols {
    symbols: Vec<Named>,
}

#[derive(serde::Deserialize)]
struct Named {
    symbol: String,
    /// Decimals of the contract's prices and quantities: how its klines pad them.
    #[serde(rename = "pricePrecision")]
    price_precision: Option<u8>,
    #[serde(rename = "quantityPrecision")]
    quantity_precision: Option<u8>,
}

impl MirrorState {
    /// Reads exchangeInfo (weight 1) into the cache.
    pub(super) async fn refresh_info(&self) -> Result<Arc<Listing>, BinanceError> {
        let inner = &self.inner;
        self.check_ban()?;
        inner.budget.try_spend(1, inner.clock.now_ms())?;
        let mut url = inner.rest_url.clone();
        url.set_path(&format!(
            "{}/fapi/v1/exchangeInfo",
            inner.rest_url.path().trim_end_matches('/')
        ));
        let read = async {
            let answer = inner.http.get(url).send().await?.error_for_status()?;
            answer.bytes().await
        };
        let body = read.await.map_err(|err| {
            debug!(error = %Chain(&err), "cannot read exchangeInfo");
            BinanceError::Unavailable
        })?;
        let parsed: Symbols =
            serde_json::from_slice(&body).map_err(|_| BinanceError::Unavailable)?;
        let notations: HashMap<String, Notation> = parsed
            .symbols
            .iter()
            .filter_map(|s| {
                let notation = Notation::from_precisions(s.price_precision?, s.quantity_precision?);
                Some((s.symbol.clone(), notation))
            })
            .collect();
        inner.reader.hub().notations().list(notations);
        let listing = Arc::new(Listing {
            body,
            symbols: parsed.symbols.into_iter().map(|s| s.symbol).collect(),
        });
        *inner.info.cached.write().expect("info lock") = Some(Arc::clone(&listing));
        Ok(listing)
    }

    /// Learns the exchange's clock from `GET /fapi/v1/time` (weight 1).
    async fn refresh_time(&self) -> Result<(), BinanceError> {
        let inner = &self.inner;
        self.check_ban()?;
        inner.budget.try_spend(1, inner.clock.now_ms())?;
        let sent = inner.clock.local_ms();
        let server = inner
            .rest
            .server_time()
            .await
            .map_err(|_| BinanceError::Unavailable)?;
        inner.clock.learn(server, sent, inner.clock.local_ms());
        Ok(())
    }

    /// Refreshes exchangeInfo and the exchange's clock every [`INFO_REFRESH`]
    /// until `cancel`.
    pub async fn refresh_until(self, cancel: CancellationToken) {
        let mut every = tokio::time::interval(INFO_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(err) = self.refresh_time().await {
                debug!(error = %err, "no server time from the exchange this round");
            }
            if let Err(err) = self.refresh_info().await {
                debug!(error = %err, "no exchangeInfo from the exchange this round");
            }
        }
    }
}

/// `GET /fapi/v1/ping`: `{}`.
pub(super) async fn ping() -> Response {
    json(Bytes::from_static(b"{}"))
}

/// `GET /fapi/v1/time`: `{"serverTime": …}` on the exchange's clock.
pub(super) async fn time(State(mirror): State<MirrorState>) -> Response {
    let now = mirror.inner.clock.now_ms();
    json(Bytes::from(format!("{{\"serverTime\":{now}}}")))
}

/// `GET /fapi/v1/exchangeInfo`: the exchange's answer as cached, read now if the
/// cache is still empty.
pub(super) async fn exchange_info(State(mirror): State<MirrorState>) -> Response {
    let listing = match mirror.inner.info.get() {
        Some(listing) => listing,
        None => match mirror.refresh_info().await {
            Ok(listing) => listing,
            Err(err) => return err.into_response(),
        },
    };
    json(listing.body.clone())
}

/// `body` as an `application/json` answer.
pub(super) fn json(body: Bytes) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

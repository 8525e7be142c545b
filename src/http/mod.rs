//! The axum router: the websocket feed and the live page on `/`, health, readiness,
//! metrics and the history API, plus the listener and the HTTP server under it.
//! Connections are cheap: small buffers, one shared snapshot, and a slow client only
//! ever owes the newest message of each coin.

mod closing;
mod cors;
mod error;
mod export;
mod feed;
mod frames;
mod handshake;
mod health;
mod history;
mod info;
mod listen;
mod live;
mod market_stream;
mod metrics;
mod page;
mod proxy;
mod query;
mod quiet;
mod request_log;
mod resume;
mod server;
mod subscription;
mod timeouts;
mod upgrade;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::candle::Interval;
use crate::health::{StoreHealth, UpstreamHealth};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::read::CandleReader;

pub use cors::CorsOrigins;
pub use error::HttpError;

pub use crate::read::MAX_CONCURRENT_READS;

pub use crate::hub::StoredCandle;
pub use feed::{CLOSE_NO_PONG, CLOSE_TOO_SLOW, MAX_CLIENT_MESSAGE};
pub use handshake::BadHandshake;
pub use history::HISTORY_API_MAX;
pub use listen::{LISTEN_BACKLOG, RESERVED_DESCRIPTORS, bind, clients_that_fit, fit_open_files};
pub use proxy::ProxyProtocol;
pub use quiet::SUMMARY_EVERY;
pub use server::{
    DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_HEADER_BYTES, MAX_HTTP_CONNECTIONS,
    ServeLimits, http_connection_cap, serve,
};

/// How websocket clients are treated, from `CLIENT_SEND_TIMEOUT_SECS`,
/// `CLIENT_PING_SECS`, `MAX_CONNECTIONS` and `LIVE_INTERVAL_MS`.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// A client whose send has not completed in this time is closed (code 1013).
    pub send_timeout: Duration,
    /// How often clients are pinged; one silent for two intervals is closed (1008).
    pub ping_every: Duration,
    /// Websocket clients served at once; more get HTTP 503.
    pub max_connections: usize,
    /// A `live=true` client gets at most one forming candle per coin this often
    /// (zero: every update).
    pub live_interval: Duration,
}

/// What readiness means for this replica.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// An ingester is ready with live exchange data; a follower with an open
    /// change stream and a healthy ingester.
    pub ingest: bool,
    /// Readiness fails when the exchange sent no kline for this long.
    pub upstream_stale_after: Duration,
}

/// Everything the router serves from.
pub struct Parts {
    pub hub: Hub,
    /// Every read of candles goes through it: hub, write queue, then store.
    pub reader: CandleReader,
    pub interval: Interval,
    pub feed: FeedOptions,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub health: Arc<UpstreamHealth>,
    /// Whether store writes succeed.
    pub store_health: Arc<StoreHealth>,
    /// Fires on shutdown; open connections close with 1001.
    pub shutdown: CancellationToken,
    /// "Now" for judging candles: the database's clock when there is one, never
    /// this machine's alone (it may be minutes off the ingesters').
    pub clock: crate::clock::Clock,
    /// Binance's own protocol (DESIGN.md §8), when served.
    pub mirror: Option<crate::mirror::MirrorState>,
}

/// What handlers share: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    parts: Arc<Parts>,
    /// Every client task, so shutdown can wait for their close frames.
    clients: TaskTracker,
    open: Arc<AtomicUsize>,
    next_connection: Arc<AtomicU64>,
    /// Binance's streams, shared by every `/market/…` connection.
    market: crate::mirror::stream::Market,
}

impl AppState {
    /// State for a router serving `parts` until their shutdown token fires.
    pub fn new(parts: Parts) -> Self {
        let market = crate::mirror::stream::Market::new(parts.reader.clone(), parts.clock.clone());
        Self {
            market,
            parts: Arc::new(parts),
            clients: TaskTracker::new(),
            open: Arc::new(AtomicUsize::new(0)),
            next_connection: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The exchange's health, as readiness reads it.
    pub fn upstream_health(&self) -> Arc<UpstreamHealth> {
        Arc::clone(&self.parts.health)
    }

    /// The tracker of client tasks: close it, then wait on it, at shutdown.
    pub fn clients(&self) -> &TaskTracker {
        &self.clients
    }

    /// Takes one of the `MAX_CONNECTIONS` slots, if any is free.
    fn claim_slot(&self) -> Option<Slot> {
        let max = self.parts.feed.max_connections;
        let claimed = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .is_ok();
        claimed.then(|| {
            self.parts.metrics.clients_connected.inc();
            Slot {
                open: Arc::clone(&self.open),
                metrics: Arc::clone(&self.parts.metrics),
            }
        })
    }
}

/// A connection slot, given back when the connection ends.
struct Slot {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.clients_connected.dec();
    }
}

/// The service's routes, without a listener, so tests can drive it either way.
/// `cors` applies to what a page on another origin would fetch (health, readiness,
/// metrics, the history API), not to `/`: websockets have no CORS.
pub fn router(state: AppState, cors: &CorsOrigins) -> Router {
    let mut api = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/candles/{symbol}", get(history::history))
        .route("/api/v1/info", get(info::info));
    if let Some(cors) = cors.layer() {
        api = api.layer(cors);
    }
    if let Some(mirror) = state.parts.mirror.clone() {
        api = api.merge(crate::mirror::router(mirror));
    }
    Router::new()
        .route("/", get(feed::feed))
        .route("/market/stream", get(market_stream::combined))
        .route("/stream", get(market_stream::combined))
        .route("/market/ws", get(market_stream::bare))
        .route("/ws", get(market_stream::bare))
        .route("/market/ws/{*streams}", get(market_stream::raw))
        .route("/ws/{*streams}", get(market_stream::raw))
        .route(
            "/assets/lightweight-charts.standalone.production.js",
            get(page::charts_js),
        )
        .merge(api)
        .layer(request_log::catch_panics())
        .layer(request_log::request_log(Arc::clone(&state.parts.metrics)))
        .with_state(state)
}

#[cfg(test)]
mod tests;

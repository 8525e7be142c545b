//! Binance USD-M's public REST market-data protocol served on candlecast's own port
//! (DESIGN.md §8), so unmodified Binance clients can point their base URL here:
//! `ping`, `time`, `exchangeInfo` and `klines` answered by the service (klines
//! through the one read path, fetching once what it does not hold), every other
//! public `/fapi/…` and `/futures/data/…` request forwarded within the service's
//! weight budget, private (keyed or signed) requests refused; and its websocket
//! streams with their control messages ([`stream`]), whose I/O lives in `http`.
//!
//! `mirror` sits beside `http`, which merges [`router`] into its own; it never
//! imports `http`.

mod budget;
mod error;
mod fetch;
mod forward;
mod info;
mod klines;
mod params;
mod poll;
mod rows;
pub mod stream;
mod weights;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use tokio::sync::watch;
use url::Url;

use crate::clock::Clock;
use crate::exchange::{RestClient, RestError};
use crate::health::UpstreamHealth;
use crate::hub::FormingSnapshot;
use crate::read::CandleReader;
use crate::store::StoreWriter;

pub use budget::WeightBudget;
pub use error::BinanceError;
pub use info::INFO_REFRESH;
pub use params::{BINANCE_INTERVALS, DEFAULT_LIMIT, KlinesQuery, MAX_LIMIT, buildable_interval};
pub use rows::klines_json;
pub use weights::{UNKNOWN_WEIGHT, weight_of};

/// The request weight per minute the mirror may spend on the exchange by default:
/// half of Binance's 2,400 per IP, the rest left to the service's own ingest.
pub const DEFAULT_WEIGHT_PER_MINUTE: u32 = 1200;

/// What the mirror is built from.
pub struct MirrorParts {
    /// Every candle is read through it (hub, write queue, store).
    pub reader: CandleReader,
    /// Where fetched candles are stored; `None` on a follower, which forwards what
    /// it does not hold instead.
    pub writer: Option<StoreWriter>,
    /// This machine's clock; the mirror learns the exchange's on top of it.
    pub clock: Clock,
    /// `BINANCE_REST_URL`.
    pub rest_url: Url,
    /// `MIRROR_WEIGHT_PER_MINUTE`.
    pub weight_per_minute: u32,
    pub health: Arc<UpstreamHealth>,
}

/// The mirror's state: cheap to clone.
#[derive(Clone)]
pub struct MirrorState {
    inner: Arc<Inner>,
}

struct Inner {
    reader: CandleReader,
    writer: Option<StoreWriter>,
    /// The exchange's clock as the service knows it.
    clock: Clock,
    rest_url: Url,
    /// Klines of the base interval, for what the service does not hold.
    rest: RestClient,
    /// Forwarding and exchangeInfo.
    http: reqwest::Client,
    budget: WeightBudget,
    /// REST bans the exchange gave (shared with the ingest's client).
    health: Arc<UpstreamHealth>,
    info: info::InfoCache,
    fetches: fetch::Fetches,
    polls: poll::PollCache,
    /// Held so the hub keeps publishing forming candles.
    forming: watch::Receiver<Arc<FormingSnapshot>>,
}

impl MirrorState {
    /// The mirror over `parts`.
    ///
    /// # Errors
    /// [`RestError::Client`] when no HTTP client can be built.
    pub fn new(parts: MirrorParts) -> Result<Self, RestError> {
        let hub = parts.reader.hub().clone();
        let base = hub.intervals()[0].clone();
        let rest = RestClient::new(&parts.rest_url, base, Arc::clone(&parts.health))?
            .with_notations(Arc::clone(hub.notations()));
        let http = reqwest::Client::builder()
            .user_agent(concat!("candlecast/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(RestError::Client)?;
        Ok(Self {
            inner: Arc::new(Inner {
                forming: hub.subscribe_forming(),
                reader: parts.reader,
                writer: parts.writer,
                clock: parts.clock.sibling(),
                rest_url: parts.rest_url,
                rest,
                http,
                budget: WeightBudget::new(parts.weight_per_minute),
                health: parts.health,
                info: info::InfoCache::default(),
                fetches: fetch::Fetches::default(),
                polls: poll::PollCache::default(),
            }),
        })
    }

    /// Now on the exchange's clock as the mirror knows it (ms since the epoch).
    pub fn exchange_now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Refuses, as Binance would, while the exchange bans this address: nothing
    /// reaches it before the ban ends (DESIGN.md §5: ignoring one earns a longer one).
    ///
    /// # Errors
    /// [`BinanceError::Banned`] while a ban is in force.
    pub fn check_ban(&self) -> Result<(), BinanceError> {
        match self.inner.health.rest_ban() {
            None => Ok(()),
            Some((status, until_ms)) => {
                let left = until_ms - chrono::Utc::now().timestamp_millis();
                Err(BinanceError::Banned {
                    status,
                    until_ms,
                    retry_after_secs: u64::try_from((left + 999) / 1000).unwrap_or(1).max(1),
                })
            }
        }
    }

    /// Notes a 429 or 418 from the exchange with its `Retry-After` (seconds).
    fn banned(&self, status: u16, retry_after_secs: Option<u64>) {
        if matches!(status, 418 | 429) {
            let wait = std::time::Duration::from_secs(retry_after_secs.unwrap_or(60));
            self.inner.health.rest_banned_for(status, wait);
        }
    }

    /// The read path the mirror reads every candle through.
    pub fn reader(&self) -> &CandleReader {
        &self.inner.reader
    }

    /// The weight budget every request to the exchange spends from.
    pub fn budget(&self) -> &WeightBudget {
        &self.inner.budget
    }
}

/// The mirror's routes, for `http::router` to merge: its own state is given here,
/// so the result fits any router's state.
pub fn router<S>(state: MirrorState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/fapi/v1/ping", get(info::ping))
        .route("/fapi/v1/time", get(info::time))
        .route("/fapi/v1/exchangeInfo", get(info::exchange_info))
        .route("/fapi/v1/klines", get(klines::klines))
        .route("/fapi/{*rest}", any(forward::forward_any))
        .route("/futures/data/{*rest}", any(forward::forward_any))
        .with_state(state)
}

//! Follows the candle collection's MongoDB change stream into the hub, so a replica
//! serves candles that any ingester wrote: the only source of a follower
//! (`INGEST=false`), and a second one for ingesters, whose clients then see other
//! ingesters' candles while their own exchange connection is down. Base candles and,
//! with `SYMBOLS=*`, the longer intervals' seeds and buckets that ingesters store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{StartError, warm};
use crate::candle::{Candle, Interval};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::health::StoreHealth;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::store::{
    CandleChanges, CandleStore, Change, MongoStore, Reachable, ResumeToken,
    STORED_FUTURE_TOLERANCE_MS, StoreError,
};
use crate::telemetry::Chain;

/// What the follower needs.
pub struct Follower {
    pub mongo: MongoStore,
    pub store: Arc<dyn CandleStore>,
    pub hub: Hub,
    /// The ingested interval, which every longer one is built from.
    pub base: Interval,
    /// `SYMBOLS=*`: the longer windows are stored whole and reloaded with the base.
    pub follow_all: bool,
    pub backoff_max: Duration,
    pub metrics: Arc<Metrics>,
    /// "Now" as the database says, never this machine's clock alone: a follower
    /// whose clock is behind would otherwise take every new candle for a future one.
    pub clock: Clock,
    /// Where readiness learns that followed candles are not being shown.
    pub store_health: Arc<StoreHealth>,
}

impl Follower {
    /// Applies every written candle to the hub until `cancel`. After an error it
    /// resumes from the last resume token with backoff; when it cannot resume (token
    /// too old, collection dropped) it opens a fresh stream and then reloads the
    /// windows from the store, so nothing written in between is missed.
    ///
    /// `opened` is a stream already opened at startup (to check that the server has
    /// change streams); it is used rather than opening a second one.
    pub async fn run(self, mut opened: Option<CandleChanges>, cancel: CancellationToken) {
        let mut token: Option<ResumeToken> = None;
        // The windows were loaded before the stream opened: load them again once it
        // is open, so a candle written in between is not missed.
        let mut reload = true;
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, self.backoff_max);
        loop {
            // A stream opened without a token starts from now: whatever was written
            // before it opened is read from the store, every time.
            if token.is_none() {
                reload = true;
            }
            let next = match opened.take() {
                Some(changes) => Ok(changes),
                None => tokio::select! {
                    _ = cancel.cancelled() => break,
                    next = self.mongo.watch(token.clone()) => next,
                },
            };
            let mut changes = match next {
                Ok(changes) => changes,
                Err(err) if token.is_some() => {
                    warn!(error = %Chain(&err), "cannot resume the change stream; opening a fresh one and reloading the windows");
                    token = None;
                    reload = true;
                    continue;
                }
                Err(err) => {
                    let delay = backoff.next_delay();
                    warn!(error = %Chain(&err), retry_in = ?delay, "cannot open the change stream");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            self.metrics.change_stream_open.set(1);
            info!(
                resumed = token.is_some(),
                "following the candle collection's change stream"
            );
            if reload {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = self.reload() => reload = false,
                }
            }
            let ended = loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => None,
                    next = changes.next() => Some(next),
                };
                match next {
                    None => break None, // shutting down
                    Some(Some(Ok(Change::Written(candle)))) => {
                        backoff.reset();
                        token = changes.resume_token();
                        self.metrics.followed_candles.inc();
                        // A candle written with an impossible future open time is
                        // not shown: it would pose as the newest for good. Judged by
                        // the database's clock: when it wrote the candle, or now.
                        let now = changes
                            .written_at_ms()
                            .map_or(self.clock.now_ms(), |at| at.max(self.clock.now_ms()));
                        if candle.open_time <= now + STORED_FUTURE_TOLERANCE_MS {
                            self.show(candle);
                            self.store_health.set_followed_refused(None);
                        } else {
                            self.store_health.set_followed_refused(Some(format!(
                                "change stream: the newest followed candle ({} {} opened at {}) \
                                 opens over 10 min after the database's clock, so it is not shown",
                                candle.symbol, candle.interval, candle.open_time
                            )));
                            warn!(
                                symbol = %candle.symbol,
                                open_time = candle.open_time,
                                database_now = now,
                                "a followed candle opens in the future by the database's clock; not shown"
                            );
                        }
                    }
                    Some(Some(Ok(Change::Reset))) => {
                        token = None;
                        reload = true;
                        break Some("the collection was dropped or renamed".to_owned());
                    }
                    Some(Some(Err(err))) => break Some(Chain(&err).to_string()),
                    Some(None) => break Some("the change stream ended".to_owned()),
                }
            };
            self.metrics.change_stream_open.set(0);
            let Some(reason) = ended else { break };
            self.metrics.change_stream_errors.inc();
            let delay = backoff.next_delay();
            warn!(reason = %reason, retry_in = ?delay, "change stream interrupted; resuming");
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Puts a candle read from the change stream into its window: a base candle as
    /// the exchange client would ([`Hub::apply`], which also builds the longer
    /// buckets it completes); one of a longer served interval (with `SYMBOLS=*`,
    /// ingesters store the exchange's seeds and the buckets they build) straight into
    /// that interval's window. Other intervals are not served here.
    fn show(&self, candle: Candle) {
        let candles = [candle];
        match self.hub.interval_index(&candles[0].interval) {
            Some(0) => {
                self.hub.apply(&candles);
            }
            // Unlike a seed ([`Hub::seed_building`], the exchange's REST row, which never
            // replaces a bucket built from final stream minutes), a stored candle
            // replaces the one held, as a stored base candle does: the last write
            // to the store wins there, and it is what every replica and every
            // restart load. A bucket this replica built from the same followed
            // minutes is the same candle, so replacing it changes nothing and
            // clients get no repeat; one that differs (an ingester seeded it from
            // the exchange, or rebuilt it after a late minute) is shown as stored,
            // so no replica keeps a candle of its own that the others do not show.
            Some(interval) => {
                self.hub.apply_stored(interval, &candles);
            }
            None => {}
        }
    }

    /// Loads every held coin's windows from the store again, as a start does
    /// ([`warm::load_windows`]): the base windows, and with `SYMBOLS=*` the longer
    /// ones.
    async fn reload(&self) {
        let symbols = self.hub.symbols();
        let coins = (&*symbols, &self.base, self.follow_all);
        // The hub keeps `window_len` candles per window, as startup loaded.
        let window_len = self.hub.history_max();
        let now = self.clock.now_ms();
        warm::load_windows(&self.store, &self.hub, coins, window_len, now).await;
    }
}

/// Opens the change stream at startup, on every replica on MongoDB: `Some(stream)`
/// to follow (`Some(None)`: not open yet, the follower retries), `None` for an
/// ingester on a server without change streams.
///
/// # Errors
/// [`StartError::Config`] for a follower on a server without change streams: it
/// would never see a candle.
pub(super) async fn open_first(
    mongo: &MongoStore,
    reachable: Reachable,
    config: &Config,
) -> Result<Option<Option<CandleChanges>>, StartError> {
    let first_open = match reachable {
        Reachable::Yes => mongo.watch(None).await,
        Reachable::No => Err(StoreError::Timeout {
            operation: "watch",
            timeout: Duration::ZERO,
        }),
    };
    Ok(match first_open {
        Ok(changes) => Some(Some(changes)),
        Err(err) if err.change_streams_unsupported() && !config.ingest => {
            let uri = config
                .store
                .mongo_uri
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(ConfigError::new(
                config.store.mongo_uri_variable,
                format!(
                    "INGEST=false needs a MongoDB replica set (change streams), but {uri} cannot open one: {}",
                    Chain(&err)
                ),
            )
            .into());
        }
        Err(err) if err.change_streams_unsupported() => {
            warn!(error = %Chain(&err), "MongoDB has no change streams (standalone?): this ingester serves only what it ingests");
            None
        }
        // Anything else may pass: the follower retries with backoff.
        Err(err) => {
            warn!(error = %Chain(&err), "cannot open the change stream yet; retrying");
            Some(None)
        }
    })
}

//! The service's lifecycle: [`App::build`] opens the store, loads the windows and
//! starts every background task; [`App::serve`] serves until the stop token fires,
//! then closes clients, stops the exchange client and flushes queued writes. Every
//! wait of start-up ends on that token too ([`signals`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

mod follow;
mod listing;
mod serve;
pub mod signals;
mod start;
mod warm;

pub(crate) use serve::configure;
pub use serve::{run, run_until, serve};
pub(crate) use start::open_store;
pub use start::{AppError, StartError};

use crate::clock::Clock;
use crate::config::Config;
use crate::exchange::{Exchange, Market, Sinks};
use crate::health::{StoreHealth, UpstreamHealth};
use crate::http::{self, AppState, Parts, Readiness};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::mirror::{MirrorParts, MirrorState};
use crate::read::CandleReader;
use crate::store::{self, Reachable, StoreWriter, Unacknowledged};
use crate::telemetry::Chain;
use follow::Follower;
use signals::until_cancelled;

/// How long shutdown waits, after the HTTP drain ([`http::DRAIN_TIMEOUT`]), for
/// websocket clients to take their close frames.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the store is pinged for readiness (which never waits on it).
const PING_EVERY: Duration = Duration::from_secs(2);
/// How often the database's clock is read again (it drifts from this machine's
/// slowly, but NTP may step either clock).
const CLOCK_EVERY: Duration = Duration::from_secs(10);
/// How long shutdown waits for queued candles to reach the store. With the drain
/// and the clients' wait, [`App::run`] returns at most 8 s after the signal; the
/// binary gives its runtime 1 s more, so it exits within 10 s.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A built service, ready to serve.
pub struct App {
    config: Config,
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    metrics: Arc<Metrics>,
    /// Every background task: exchange client, writer, follower, heartbeat.
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Completes when the first backfill is done (ingesters only).
    startup_backfill: Option<oneshot::Receiver<()>>,
}

impl App {
    /// Opens the store, loads the windows and starts the background tasks. Every
    /// wait on the way (exchange, database, history) ends when `stop` is cancelled,
    /// and the app then serves until it is.
    ///
    /// # Errors
    /// [`StartError`]: the store cannot be opened or read, or a follower's MongoDB
    /// has no change streams ([`StartError::Config`]); [`StartError::Stopped`] when
    /// `stop` fired first, which is no failure.
    pub async fn build(
        config: Config,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> Result<Self, StartError> {
        Self::build_with_clock(config, listener, stop, Clock::system()).await
    }

    /// [`App::build`] on `clock` as this machine's clock: tests pass a skewed one
    /// ([`Clock::skewed`]) to play a replica whose clock is off.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with_clock(
        config: Config,
        listener: TcpListener,
        stop: CancellationToken,
        clock: Clock,
    ) -> Result<Self, StartError> {
        let address = listener.local_addr().map_err(StartError::Listener)?;
        // Each wait below is raced against `stop`: a signal during start-up ends it
        // within the exit deadline, whatever the database or exchange is doing.
        let stopped = || StartError::Stopped;
        let symbols = until_cancelled(&stop, start::symbols_at_start(&config))
            .await
            .ok_or_else(stopped)??;
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(UpstreamHealth::default());
        let store_health = Arc::new(StoreHealth::default());
        let (backend, reachable) = until_cancelled(&stop, start::open_store(&config, &metrics))
            .await
            .ok_or_else(stopped)??;
        let store = backend.candles();
        // Judge "now" by the database's clock, which the ingesters share, before the
        // first read that depends on it.
        if let (Some(mongo), Reachable::Yes) = (backend.mongo(), reachable)
            && let Err(err) = mongo.read_clock(&clock).await
        {
            warn!(error = %Chain(&err), "cannot read the database's clock yet; using this machine's");
        }
        let window_len = config.windows.window_len();
        let hub =
            Hub::new(&symbols, &config.intervals, &config.windows).with_plain(&config.symbols);
        // A database that is away leaves the windows empty: the exchange fills them.
        if reachable == Reachable::Yes {
            let coins = (&*hub.symbols(), &config.interval, config.follow_all);
            let loading = warm::load_windows(&store, &hub, coins, window_len, clock.now_ms());
            until_cancelled(&stop, loading).await.ok_or_else(stopped)?;
        }

        // The same token stops every background task: one shutdown source.
        let cancel = stop;
        let tasks = TaskTracker::new();
        if reachable == Reachable::Yes {
            let loading = warm::load(
                &store,
                &hub,
                &config,
                window_len,
                clock.now_ms(),
                &tasks,
                &cancel,
            );
            until_cancelled(&cancel, loading)
                .await
                .ok_or_else(stopped)?;
        }

        // Every replica on MongoDB follows the change stream: a follower's only source,
        // and an ingester's view of what other ingesters write.
        if let Some(mongo) = backend.mongo() {
            tasks.spawn(store::follow_database_clock(
                mongo.clone(),
                clock.clone(),
                CLOCK_EVERY,
                cancel.clone(),
            ));
            let opened = until_cancelled(&cancel, follow::open_first(mongo, reachable, &config))
                .await
                .ok_or_else(stopped)??;
            if let Some(opened) = opened {
                let follower = Follower {
                    mongo: mongo.clone(),
                    store: Arc::clone(&store),
                    hub: hub.clone(),
                    base: config.interval.clone(),
                    follow_all: config.follow_all,
                    backoff_max: config.exchange.backoff_max,
                    metrics: Arc::clone(&metrics),
                    clock: clock.clone(),
                    store_health: Arc::clone(&store_health),
                };
                tasks.spawn(
                    follower
                        .run(opened, cancel.clone())
                        .instrument(info_span!("follow")),
                );
            }
        }

        store_health.set_reachable(reachable == Reachable::Yes);
        // What the writer holds until the store acknowledges it: read beside the
        // windows and the store, so no read misses a candle on its way.
        let unacknowledged = Unacknowledged::default();
        let mut store_recovered = None;
        let (mut mirror_writer, mut upstream) = (None, None);
        let startup_backfill = if config.ingest {
            let (writer, writer_task) = StoreWriter::spawn(
                Arc::clone(&store),
                unacknowledged.clone(),
                config.store.write_queue_batches,
                Arc::clone(&metrics),
                Arc::clone(&store_health),
                cancel.clone(),
            );
            store_recovered = Some(writer.lost_candles());
            mirror_writer = Some(writer.clone());
            tasks.spawn(async move {
                let _ = writer_task.await;
            });
            let market = Market {
                symbols: symbols.clone(),
                interval: config.interval.clone(),
                longest: config.intervals.last().unwrap_or(&config.interval).clone(),
                window_len,
                seed_windows: config.follow_all,
            };
            let sinks = Sinks {
                hub: hub.clone(),
                store: Arc::clone(&store),
                writer,
                metrics: Arc::clone(&metrics),
                health: Arc::clone(&health),
            };
            let exchange = Arc::new(
                Exchange::new(market, config.exchange.clone(), sinks)
                    .map_err(StartError::Exchange)?,
            );
            if let Some(mongo) = backend.mongo() {
                let every = (config.exchange.stale_after / 2).max(Duration::from_millis(500));
                tasks.spawn(store::heartbeat(
                    mongo.clone(),
                    Arc::clone(&health),
                    every,
                    cancel.clone(),
                ));
            }
            let (done, startup_backfill) = oneshot::channel();
            upstream = Some(Arc::clone(&exchange));
            tasks.spawn(
                exchange
                    .run(cancel.clone(), done)
                    .instrument(info_span!("upstream")),
            );
            Some(startup_backfill)
        } else {
            info!("INGEST=false: following the candle collection; not connecting to the exchange");
            if let Some(mongo) = backend.mongo() {
                store_health.set_ingesters_reason(Some("ingesters: not checked yet".to_owned()));
                tasks.spawn(store::watch_ingesters(
                    mongo.clone(),
                    Arc::clone(&store_health),
                    config.exchange.stale_after,
                    PING_EVERY,
                    cancel.clone(),
                ));
            }
            None
        };

        tasks.spawn(store::watch_reachability(
            Arc::clone(&store),
            Arc::clone(&store_health),
            PING_EVERY,
            store_recovered,
            cancel.clone(),
        ));

        let reader = CandleReader::new(hub.clone(), unacknowledged, Arc::clone(&store));
        let mirror = MirrorState::new(MirrorParts {
            reader: reader.clone(),
            writer: mirror_writer,
            clock: clock.clone(),
            rest_url: config.exchange.rest_url.clone(),
            weight_per_minute: config.mirror_weight_per_minute,
            health: Arc::clone(&health),
        })
        .map_err(StartError::Exchange)?;
        tasks.spawn(mirror.clone().refresh_until(cancel.clone()));
        let listing = listing::Listing::new(&config, &hub, &store, &clock, &health, &metrics);
        listing.start(config.follow_all, upstream, &tasks, &cancel);
        let state = AppState::new(Parts {
            mirror: Some(mirror),
            reader,
            hub,
            interval: config.interval.clone(),
            feed: config.feed.clone(),
            readiness: Readiness {
                ingest: config.ingest,
                upstream_stale_after: config.exchange.stale_after,
            },
            metrics: Arc::clone(&metrics),
            health,
            store_health,
            shutdown: cancel.clone(),
            clock,
        });
        Ok(Self {
            config,
            listener,
            address,
            state,
            metrics,
            tasks,
            cancel,
            startup_backfill,
        })
    }

    /// The metrics this app counts into, readable while it runs.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The address the app listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes (or the token given to [`App::build`] is
    /// cancelled), then stops as [`App::serve`] does.
    ///
    /// # Errors
    /// None once built: the HTTP server handles its own accept errors.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let signal = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = shutdown => info!("shutdown requested"),
                _ = signal.cancelled() => {}
            }
            signal.cancel();
        });
        self.serve().await
    }

    /// Serves until the token given to [`App::build`] is cancelled, then stops
    /// everything within 8 s: requests in flight get [`http::DRAIN_TIMEOUT`],
    /// clients get their 1001 close frames, the exchange connection closes, then
    /// queued candles are flushed to the store.
    ///
    /// # Errors
    /// None once built: the HTTP server handles its own accept errors.
    pub async fn serve(self) -> Result<(), AppError> {
        let Self {
            config,
            listener,
            address,
            state,
            metrics,
            tasks,
            cancel,
            startup_backfill,
        } = self;
        if let Some(startup_backfill) = startup_backfill {
            let timeout = config.exchange.startup_backfill_timeout;
            let health = state.upstream_health();
            start::wait_for_backfill(startup_backfill, timeout, &health, &cancel).await;
        }

        // Stopped before serving: no listening line; the server returns at once.
        if !cancel.is_cancelled() {
            info!(%address, symbols = ?config.symbols, follow_all = config.follow_all, interval = %config.interval, "serving websocket clients on /");
        }
        let clients = state.clients().clone();
        let limits = http::ServeLimits {
            proxy_protocol: config.proxy_protocol,
            ..http::ServeLimits::for_clients(config.feed.max_connections)
        };
        let router = http::router(state, &config.cors);
        // Returns at most DRAIN_TIMEOUT after the signal, whatever clients are doing.
        http::serve(
            listener,
            router,
            limits,
            Arc::clone(&metrics),
            cancel.clone(),
        )
        .await;
        cancel.cancel();

        // Websocket clients have been closing since the signal, beside the drain.
        clients.close();
        if tokio::time::timeout(CLIENTS_TIMEOUT, clients.wait())
            .await
            .is_err()
        {
            warn!(
                clients = clients.len(),
                "some clients did not close in time"
            );
        }
        // The exchange client holds the write queue's senders: once it has stopped,
        // the writer drains the queue and ends.
        tasks.close();
        if tokio::time::timeout(FLUSH_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                pending = metrics.pending_writes.get(),
                "store writes still pending at exit"
            );
        }
        info!("stopped");
        Ok(())
    }
}

//! `SYMBOLS=*`: the exchange's list read again every `SYMBOLS_REFRESH_SECS`. A
//! contract newly `TRADING` is followed (its stored window loaded, then the
//! exchange client fetches its recent history and subscribes, watching the hub's
//! followed set); one that left `TRADING` is let go: no longer followed upstream
//! nor listed by `/api/v1/info`, its windows and stored history still served.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::warm;
use crate::candle::Interval;
use crate::clock::Clock;
use crate::config::Config;
use crate::exchange::{Exchange, ExchangeOptions, trading_symbols};
use crate::health::UpstreamHealth;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::CandleStore;
use crate::telemetry::Chain;

/// What the listing task reads and changes.
pub(super) struct Listing {
    hub: Hub,
    store: Arc<dyn CandleStore>,
    exchange: ExchangeOptions,
    interval: Interval,
    window_len: usize,
    every: Duration,
    clock: Clock,
    health: Arc<UpstreamHealth>,
    metrics: Arc<Metrics>,
    /// The exchange client, on an ingester: subscribes and fetches what is listed.
    upstream: Option<Arc<Exchange>>,
}

impl Listing {
    /// The task for `config`'s `SYMBOLS=*`, changing `hub`.
    pub(super) fn new(
        config: &Config,
        hub: &Hub,
        store: &Arc<dyn CandleStore>,
        clock: &Clock,
        health: &Arc<UpstreamHealth>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            hub: hub.clone(),
            store: Arc::clone(store),
            exchange: config.exchange.clone(),
            interval: config.interval.clone(),
            window_len: config.windows.window_len(),
            every: config.symbols_refresh,
            clock: clock.clone(),
            health: Arc::clone(health),
            metrics: Arc::clone(metrics),
            upstream: None,
        }
    }

    /// Counts the coins followed now and, with `SYMBOLS=*` (`follow_all`), keeps
    /// following the exchange's list in the background until `cancel`.
    /// `upstream` is the exchange client (an ingester's), told what to follow.
    pub(super) fn start(
        mut self,
        follow_all: bool,
        upstream: Option<Arc<Exchange>>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        self.upstream = upstream;
        let followed = self.hub.followed().len();
        self.metrics
            .symbols_followed
            .set(i64::try_from(followed).unwrap_or(i64::MAX));
        if follow_all {
            tasks.spawn(self.run(cancel.clone()).instrument(info_span!("listing")));
        }
    }

    /// Reads the list every `every` until `cancel`; a failed read is logged once
    /// until one succeeds again, and changes nothing.
    async fn run(self, cancel: CancellationToken) {
        let mut failing = false;
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: start-up may have gone on without the list.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            let read = trading_symbols(&self.exchange, &self.interval, Arc::clone(&self.health));
            let trading = tokio::select! {
                _ = cancel.cancelled() => return,
                read = read => read,
            };
            match trading {
                Ok(trading) => {
                    if failing {
                        info!("the exchange's list is readable again");
                    }
                    failing = false;
                    self.apply(&trading).await;
                }
                Err(err) if !failing => {
                    failing = true;
                    warn!(error = %Chain(&err), every = ?self.every, "cannot read the exchange's list of contracts; following the same ones until it answers");
                }
                Err(err) => debug!(error = %Chain(&err), "the exchange's list is still unreadable"),
            }
        }
    }

    /// Follows what `trading` lists and the hub does not follow; lets go of what it
    /// follows and `trading` no longer lists.
    pub(super) async fn apply(&self, trading: &[String]) {
        let followed = self.hub.followed();
        let listed: Vec<String> = trading
            .iter()
            .filter(|s| !followed.contains(s))
            .cloned()
            .collect();
        let gone: Vec<String> = followed
            .iter()
            .filter(|s| !trading.contains(s))
            .cloned()
            .collect();
        if !listed.is_empty() {
            let new = self.hub.add_symbols(&listed);
            // Coins new to this process start from what the store holds of them, so
            // the exchange client fetches only the gap.
            let coins = (new.as_slice(), &self.interval, true);
            let now = self.clock.now_ms();
            warm::load_windows(&self.store, &self.hub, coins, self.window_len, now).await;
            if let Some(upstream) = &self.upstream {
                upstream.follow(&listed);
            }
            info!(symbols = ?listed, "newly trading on the exchange: following");
        }
        for symbol in &gone {
            self.hub.let_go(symbol);
        }
        if let Some(upstream) = self.upstream.as_ref().filter(|_| !gone.is_empty()) {
            upstream.let_go(&gone);
        }
        if !gone.is_empty() {
            info!(symbols = ?gone, "no longer trading on the exchange: let go; their stored history is still served");
        }
        self.metrics
            .symbols_followed
            .set(i64::try_from(self.hub.followed().len()).unwrap_or(i64::MAX));
    }
}

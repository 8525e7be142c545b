//! The task behind one served stream: it watches the hub's closed windows and
//! forming candles, builds the stream's candle (a longer interval's bucket from the
//! base candles when the hub does not serve that interval), and publishes Binance's
//! events: every close once, the moment its last base candle closes, with
//! `"x":true`; forming updates at most once per [`FORMING_EVERY`], always the newest
//! state (a trailing edge), never one for a candle already closed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::event::Event;
use super::feed::Feed;
use crate::candle::{BucketBuilder, Candle, Interval};
use crate::clock::Clock;
use crate::hub::{FormingSnapshot, Hub, Snapshot};

/// Binance's update speed for kline streams ("Update Speed: 250ms").
pub const FORMING_EVERY: Duration = Duration::from_millis(250);

/// Where a stream's candles come from.
enum Source {
    /// A served interval: the hub's window at this index holds its closed candles,
    /// and its forming slot the bucket so far.
    Served(usize),
    /// An interval the hub does not serve: built here from the base candles.
    Built(Box<BucketBuilder>),
}

/// A stream's task, subscribed to the hub from the moment it is made, so no close
/// that follows the subscription is missed while the task waits to be scheduled.
pub(super) struct Follow {
    hub: Hub,
    clock: Clock,
    position: usize,
    closes: watch::Receiver<Arc<Snapshot>>,
    forming: watch::Receiver<Arc<FormingSnapshot>>,
    source: Source,
    base_version: u64,
    /// The newest base candle seen closed (open time, ms since the epoch, UTC).
    base_through: Option<i64>,
    /// The newest candle of this stream published closed, or closed before it began.
    closed_through: Option<i64>,
    /// The forming slot of the hub this stream reads.
    forming_slot: usize,
}

impl Follow {
    /// The stream of the coin at `position` at `interval` (a whole multiple of the
    /// hub's base interval), event times on `clock`.
    pub(super) fn new(hub: Hub, clock: Clock, position: usize, interval: &Interval) -> Self {
        let symbols = hub.symbols().len();
        let mut closes = hub.subscribe();
        let forming = hub.subscribe_forming();
        let snapshot = Arc::clone(&closes.borrow_and_update());
        let base_frame = snapshot.frame(0, position);
        let base_version = base_frame.version;
        let base_through = base_frame.newest_open_time;
        let source = match hub.interval_index(interval.name()) {
            Some(k) => Source::Served(k),
            None => Source::Built(Box::new(seeded(&hub, &snapshot, position, interval))),
        };
        let base = hub.intervals()[0].millis();
        let from_base = base_through.map(|t| last_closed_bucket(t, base, interval));
        let (closed_through, forming_slot) = match &source {
            // The served window may still be empty while its deep history loads.
            Source::Served(k) => (
                snapshot.frame(*k, position).newest_open_time.max(from_base),
                k * symbols + position,
            ),
            Source::Built(_) => (from_base, position),
        };
        Self {
            hub,
            clock,
            position,
            closes,
            forming,
            source,
            base_version,
            base_through,
            closed_through,
            forming_slot,
        }
    }

    /// Runs until the feed has no subscriber left (or the hub is gone).
    pub(super) async fn run(self, feed: Weak<Feed>) {
        let Follow {
            hub,
            clock,
            position,
            mut closes,
            mut forming,
            mut source,
            mut base_version,
            mut base_through,
            mut closed_through,
            forming_slot,
        } = self;
        let mut forming_version = 0;
        let mut pending: Option<Candle> = None;
        let mut last_forming: Option<Instant> = None;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                changed = closes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(feed) = feed.upgrade() else { return };
                    let snapshot = Arc::clone(&closes.borrow_and_update());
                    let base_frame = snapshot.frame(0, position);
                    if base_frame.version == base_version {
                        continue;
                    }
                    base_version = base_frame.version;
                    let window = hub.window_candles(&snapshot, 0, position);
                    let through = base_through;
                    base_through = window.last().map(|c| c.open_time).max(base_through);
                    let closed: Vec<Candle> = match &mut source {
                        Source::Served(0) => window
                            .into_iter()
                            .filter(|c| through.is_none_or(|t| c.open_time > t))
                            .collect(),
                        Source::Served(k) => hub.window_candles(&snapshot, *k, position),
                        // Every base candle of a bucket not yet closed, a late or
                        // repaired one too: the builder keeps each once.
                        Source::Built(builder) => {
                            let length = builder.interval().millis();
                            let from = closed_through.map_or(i64::MIN, |t| t + length);
                            window
                                .iter()
                                .filter(|c| c.open_time >= from)
                                .filter_map(|c| builder.add(c))
                                .collect()
                        }
                    };
                    // Nothing was held when the stream began (a replica still
                    // warming up): what arrives first is history, and only its
                    // newest close is news.
                    let history = if closed_through.is_none() { closed.len().saturating_sub(1) } else { 0 };
                    for candle in closed.into_iter().skip(history) {
                        if closed_through.is_some_and(|t| candle.open_time <= t) {
                            continue;
                        }
                        closed_through = Some(candle.open_time);
                        if pending.as_ref().is_some_and(|p| p.open_time <= candle.open_time) {
                            pending = None;
                        }
                        let event_time = clock.now_ms().max(candle.close_time + 1);
                        feed.publish(Event::new(Arc::clone(&feed.name), &candle, true, event_time));
                    }
                }
                changed = forming.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snapshot = Arc::clone(&forming.borrow_and_update());
                    let Some(frame) = &snapshot.coins[forming_slot] else { continue };
                    if frame.version == forming_version {
                        continue;
                    }
                    forming_version = frame.version;
                    let candle = match &source {
                        Source::Served(_) => frame.candle().clone(),
                        Source::Built(builder) => builder.forming(frame.candle()),
                    };
                    if closed_through.is_some_and(|t| candle.open_time <= t) {
                        continue;
                    }
                    pending = Some(candle);
                    let due = last_forming.map_or(Instant::now(), |at| at + FORMING_EVERY);
                    timer.as_mut().reset(due);
                }
                () = &mut timer, if pending.is_some() => {
                    let Some(feed) = feed.upgrade() else { return };
                    let Some(candle) = pending.take() else { continue };
                    last_forming = Some(Instant::now());
                    let event_time = clock.now_ms().max(candle.open_time);
                    feed.publish(Event::new(Arc::clone(&feed.name), &candle, false, event_time));
                }
            }
        }
    }
}

/// The open time of the newest `interval` bucket that is closed when the newest
/// closed base candle (of `base` ms) opened at `base_through`: its own bucket if it
/// was that bucket's last candle, else the one before.
fn last_closed_bucket(base_through: i64, base: i64, interval: &Interval) -> i64 {
    let bucket = interval.open_time_containing(base_through);
    if base_through + base == bucket + interval.millis() {
        bucket
    } else {
        bucket - interval.millis()
    }
}

/// A builder of `interval` holding the base candles of its current and previous
/// buckets that the hub's base window holds, so the first bucket this stream closes
/// is whole when the window reaches back to its start.
fn seeded(hub: &Hub, snapshot: &Snapshot, position: usize, interval: &Interval) -> BucketBuilder {
    let mut builder = BucketBuilder::new(interval.clone(), &hub.intervals()[0]);
    let base = hub.window_candles(snapshot, 0, position);
    if let Some(newest) = base.last() {
        let from = interval.open_time_containing(newest.open_time) - interval.millis();
        for candle in base.iter().filter(|c| c.open_time >= from) {
            builder.add(candle);
        }
    }
    builder
}

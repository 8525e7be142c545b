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
use crate::hub::{FormingSnapshot, Hub, Snapshot, slot};
use crate::read::{Admission, CandleReader};
use tracing::warn;

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
    closes: watch::Receiver<Arc<Snapshot>>,
    forming: watch::Receiver<Arc<FormingSnapshot>>,
    stream: StreamState,
}

/// What a stream has seen and sent.
struct StreamState {
    hub: Hub,
    position: usize,
    source: Source,
    base_version: u64,
    /// The newest base candle seen closed (open time, ms since the epoch, UTC).
    base_through: Option<i64>,
    /// The newest candle of this stream published closed, or closed before it began.
    closed_through: Option<i64>,
    /// The forming slot of the hub this stream reads, and its version last read.
    forming_slot: usize,
    forming_version: u64,
    /// The newest forming state not yet sent, and when one was last sent.
    pending: Option<Candle>,
    last_forming: Option<Instant>,
}

impl Follow {
    /// The stream of the coin at `position` at `interval` (a whole multiple of the
    /// hub's base interval).
    pub(super) fn new(hub: Hub, position: usize, interval: &Interval) -> Self {
        let intervals = hub.intervals().len();
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
                slot(intervals, *k, position),
            ),
            Source::Built(_) => (from_base, slot(intervals, 0, position)),
        };
        Self {
            closes,
            forming,
            stream: StreamState {
                hub,
                position,
                source,
                base_version,
                base_through,
                closed_through,
                forming_slot,
                forming_version: 0,
                pending: None,
                last_forming: None,
            },
        }
    }

    /// Publishes the stream's events, stamped on `clock`, until the feed has no
    /// subscriber left (or the hub is gone).
    pub(super) async fn run(self, feed: Weak<Feed>, clock: Clock, reader: CandleReader) {
        let Follow {
            mut closes,
            mut forming,
            mut stream,
        } = self;
        // Closes meanwhile wait in `closes`, already subscribed.
        stream.seed_open_bucket(&reader).await;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                changed = closes.changed() => {
                    let Some(feed) = feed.upgrade().filter(|_| changed.is_ok()) else {
                        return;
                    };
                    let snapshot = Arc::clone(&closes.borrow_and_update());
                    for candle in stream.closed(&snapshot) {
                        let event_time = clock.now_ms().max(candle.close_time + 1);
                        let name = Arc::clone(&feed.name);
                        let notation = stream.hub.notations().of(&candle.symbol);
                        feed.publish(Event::new(name, &candle, notation, true, event_time));
                    }
                }
                changed = forming.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snapshot = Arc::clone(&forming.borrow_and_update());
                    if let Some(due) = stream.forming(&snapshot) {
                        timer.as_mut().reset(due);
                    }
                }
                () = &mut timer, if stream.pending.is_some() => {
                    let Some(feed) = feed.upgrade() else { return };
                    let Some(candle) = stream.take_forming() else { continue };
                    let event_time = clock.now_ms().max(candle.open_time);
                    let name = Arc::clone(&feed.name);
                    let notation = stream.hub.notations().of(&candle.symbol);
                    feed.publish(Event::new(name, &candle, notation, false, event_time));
                }
            }
        }
    }
}

impl StreamState {
    /// For an interval built here, reads the base candles of the bucket still open
    /// that the hub's window does not reach (a `1h` bucket needs up to 59 minutes,
    /// `HISTORY_MAX` may hold fewer) through the read path (write queue, store), so
    /// its first close is whole. Without them (the store cannot be read) that
    /// bucket never completes and is not sent.
    async fn seed_open_bucket(&mut self, reader: &CandleReader) {
        let Source::Built(builder) = &mut self.source else {
            return;
        };
        let Some(through) = self.base_through else {
            return;
        };
        let base = self.hub.intervals()[0].millis();
        let open = builder.interval().open_time_containing(through + base);
        let snapshot = self.hub.snapshot();
        let window = self.hub.window_candles(&snapshot, 0, self.position);
        if open > through || window.first().is_some_and(|c| c.open_time <= open) {
            return;
        }
        let count = usize::try_from((through - open) / base + 1).unwrap_or(0);
        let read = reader
            .latest(
                &snapshot,
                self.position,
                0,
                count,
                Some(through + base),
                Admission::Wait,
            )
            .await;
        match read {
            // Only candles the stream has already seen close: a newer one completes
            // its bucket in `closed`, where the bucket is sent.
            Ok(read) => read
                .candles
                .iter()
                .filter(|c| c.open_time >= open && c.open_time <= through)
                .for_each(|c| {
                    builder.add(c);
                }),
            Err(err) => warn!(
                error = %crate::telemetry::Chain(&err),
                interval = %builder.interval(),
                "cannot read the open bucket's base candles; its close will not be sent"
            ),
        }
    }

    /// The candles of this stream that `snapshot` closes, oldest first, each once.
    fn closed(&mut self, snapshot: &Snapshot) -> Vec<Candle> {
        let base_frame = snapshot.frame(0, self.position);
        if base_frame.version == self.base_version {
            return Vec::new();
        }
        self.base_version = base_frame.version;
        let window = self.hub.window_candles(snapshot, 0, self.position);
        let through = self.base_through;
        self.base_through = window.last().map(|c| c.open_time).max(through);
        let closed: Vec<Candle> = match &mut self.source {
            Source::Served(0) => window
                .into_iter()
                .filter(|c| through.is_none_or(|t| c.open_time > t))
                .collect(),
            Source::Served(k) => self.hub.window_candles(snapshot, *k, self.position),
            // Every base candle of a bucket not yet closed, a late or repaired one
            // too: the builder keeps each once.
            Source::Built(builder) => {
                let length = builder.interval().millis();
                let from = self.closed_through.map_or(i64::MIN, |t| t + length);
                window
                    .iter()
                    .filter(|c| c.open_time >= from)
                    .filter_map(|c| builder.add(c))
                    .collect()
            }
        };
        // Nothing was held when the stream began (a replica still warming up): what
        // arrives first is history, and only its newest close is news.
        let history = match self.closed_through {
            None => closed.len().saturating_sub(1),
            Some(_) => 0,
        };
        let mut news = Vec::new();
        for candle in closed.into_iter().skip(history) {
            if self.closed_through.is_some_and(|t| candle.open_time <= t) {
                continue;
            }
            self.closed_through = Some(candle.open_time);
            if self
                .pending
                .as_ref()
                .is_some_and(|p| p.open_time <= candle.open_time)
            {
                self.pending = None;
            }
            news.push(candle);
        }
        news
    }

    /// Takes the newest forming state from `snapshot`; returns when it is due: at
    /// once, or [`FORMING_EVERY`] after the last one sent.
    fn forming(&mut self, snapshot: &FormingSnapshot) -> Option<Instant> {
        let frame = snapshot.coins[self.forming_slot].as_ref()?;
        if frame.version == self.forming_version {
            return None;
        }
        self.forming_version = frame.version;
        let candle = match &self.source {
            Source::Served(_) => frame.candle().clone(),
            Source::Built(builder) => builder.forming(frame.candle()),
        };
        if self.closed_through.is_some_and(|t| candle.open_time <= t) {
            return None;
        }
        self.pending = Some(candle);
        Some(
            self.last_forming
                .map_or_else(Instant::now, |at| at + FORMING_EVERY),
        )
    }

    /// The forming state to send now, if any.
    fn take_forming(&mut self) -> Option<Candle> {
        let candle = self.pending.take()?;
        self.last_forming = Some(Instant::now());
        Some(candle)
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

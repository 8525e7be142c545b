//! Every stream being served now, shared by all connections: one [`Feed`] (one
//! task, one encoding of each event) per stream name however many connections
//! subscribe, started by the first subscriber and ended after the last leaves, so
//! memory follows the streams in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::feed::{Feed, FeedHandle, Sink};
use super::follow::Follow;
use super::name::{StreamKind, StreamName};
use crate::clock::Clock;
use crate::hub::Hub;
use crate::mirror::buildable_interval;
use crate::read::CandleReader;

/// Cheap to clone; clones share the feeds.
#[derive(Clone)]
pub struct Market {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    reader: CandleReader,
    clock: Clock,
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Market {
    /// Streams of the candles `reader` reads (the hub's, and base candles older
    /// than its windows), their event times on `clock` (the exchange's, as the
    /// service knows it).
    pub fn new(reader: CandleReader, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                hub: reader.hub().clone(),
                reader,
                clock,
                feeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Subscribes `sink` to `name`'s events. `None` when candlecast has nothing to
    /// send for that stream (a symbol `SYMBOLS` does not follow, a quarterly
    /// contract, `3d`, `1M`, an interval that is not a whole multiple of
    /// `INTERVAL`):
    /// Binance too accepts a subscription it will never send anything on.
    pub fn join(&self, name: &StreamName, sink: &Sink) -> Option<FeedHandle> {
        let hub = &self.inner.hub;
        let position = hub.position(&name.symbol)?;
        if name.kind == StreamKind::ContinuousQuarter {
            return None;
        }
        // The intervals the REST klines build, by the same rule (`3d` and `1M` are
        // Binance's own buckets, forwarded there, silent here).
        let interval = buildable_interval(&name.interval, &hub.intervals()[0])?;
        let mut feeds = self.inner.feeds.lock().expect("market lock poisoned");
        if let Some(feed) = feeds.get(name.as_str()).and_then(Weak::upgrade) {
            return Some(feed.join(sink));
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let feed = Arc::new(Feed::new(Arc::new(name.clone())));
        feeds.insert(name.as_str().to_owned(), Arc::downgrade(&feed));
        let follow = Follow::new(hub.clone(), position, &interval);
        let clock = self.inner.clock.clone();
        let reader = self.inner.reader.clone();
        tokio::spawn(follow.run(Arc::downgrade(&feed), clock, reader));
        Some(feed.join(sink))
    }

    /// Streams with a feed running now.
    pub fn feeds(&self) -> usize {
        let feeds = self.inner.feeds.lock().expect("market lock poisoned");
        feeds
            .values()
            .filter(|feed| feed.strong_count() > 0)
            .count()
    }
}

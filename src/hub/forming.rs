//! The candles still forming, per (coin, interval), for `live=true` clients: each
//! update is built once (a longer interval's bucket so far) and encoded at most once,
//! by the first client that sends it.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;

use super::message::{FormingMessage, StoredCandle};
use super::{Hub, Ledger, slot};
use crate::candle::Candle;

/// The newest forming candle of every (coin, interval), laid out like
/// [`super::Snapshot::coins`]; `None` until the exchange sent one.
#[derive(Debug, Clone)]
pub struct FormingSnapshot {
    pub coins: Vec<Option<Arc<FormingFrame>>>,
}

impl FormingSnapshot {
    pub(super) fn empty(slots: usize) -> Self {
        Self {
            coins: vec![None; slots],
        }
    }
}

/// One forming candle as of one update.
#[derive(Debug)]
pub struct FormingFrame {
    /// Bumped with each update of this (coin, interval).
    pub version: u64,
    /// The forming candle's open time (ms since the epoch, UTC).
    pub open_time: i64,
    candle: Candle,
    text: OnceLock<Utf8Bytes>,
}

impl FormingFrame {
    /// The forming candle itself (a longer interval's bucket so far), for
    /// protocols that encode it their own way.
    pub fn candle(&self) -> &Candle {
        &self.candle
    }

    /// `{"coin":…,"interval":…,"forming":{…}}`, encoded once and shared.
    pub fn text(&self) -> Utf8Bytes {
        self.text
            .get_or_init(|| {
                let message = FormingMessage {
                    coin: &self.candle.symbol,
                    interval: &self.candle.interval,
                    forming: StoredCandle::from(&self.candle),
                };
                Utf8Bytes::from(message.to_json())
            })
            .clone()
    }
}

impl Hub {
    /// Publishes forming (not yet closed) base candles, and the bucket so far of every
    /// longer interval they fall in. Only the newest update per symbol counts; one
    /// for a candle the window already holds closed is stale and dropped. Costs
    /// nothing while no `live=true` client listens.
    pub fn forming(&self, candles: &[Candle]) {
        if self.inner.forming.receiver_count() == 0 {
            return;
        }
        let intervals = self.inner.intervals.len();
        let base = self.inner.intervals[0].name();
        let ledger = self.inner.ledger.lock().expect("hub lock poisoned");
        let Ledger { windows, builders } = &*ledger;
        let mut updates: Vec<(usize, Candle)> = Vec::new();
        for candle in candles.iter().filter(|c| c.interval == base) {
            let Some(position) = self.position(&candle.symbol) else {
                continue;
            };
            let at = slot(intervals, 0, position);
            if windows[at]
                .newest_open_time()
                .is_some_and(|closed| candle.open_time <= closed)
            {
                continue;
            }
            updates.retain(|(index, _)| index / intervals != position);
            updates.push((at, candle.clone()));
            // Each bucket so far is its source's bucket so far plus the source's
            // closed candles before it (`1d` = the day's closed `4h` + the `4h` so far).
            let mut so_far = Vec::with_capacity(intervals);
            so_far.push(candle.clone());
            for (k, builder) in builders[position].iter().enumerate() {
                let bucket = builder.forming(&so_far[self.inner.sources[k + 1]]);
                updates.push((slot(intervals, k + 1, position), bucket.clone()));
                so_far.push(bucket);
            }
        }
        drop(ledger);
        if updates.is_empty() {
            return;
        }
        self.inner.forming.send_modify(|snapshot| {
            let snapshot = Arc::make_mut(snapshot);
            for (index, candle) in updates {
                let slot = &mut snapshot.coins[index];
                let version = slot.as_ref().map_or(0, |f| f.version) + 1;
                *slot = Some(Arc::new(FormingFrame {
                    version,
                    open_time: candle.open_time,
                    candle,
                    text: OnceLock::new(),
                }));
            }
        });
    }

    /// The current forming candles and a receiver that wakes when they change.
    pub fn subscribe_forming(&self) -> tokio::sync::watch::Receiver<Arc<FormingSnapshot>> {
        self.inner.forming.subscribe()
    }
}

//! The forming candle for one `live=true` client: at most one message per coin every
//! `LIVE_INTERVAL_MS`, always the newest state, never a backlog, and never stale
//! (an update held back is sent when its coin's interval is up: a trailing edge).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::hub::FormingSnapshot;

/// One client's forming-candle delivery state.
pub(super) struct LiveFeed {
    every: Duration,
    pub(super) updates: watch::Receiver<Arc<FormingSnapshot>>,
    coins: Vec<LiveCoin>,
    /// When the next held-back update is due, if any.
    pub(super) next_due: Option<Instant>,
}

struct LiveCoin {
    /// Index into [`FormingSnapshot::coins`].
    index: usize,
    /// The version of the forming frame last sent (or skipped as stale).
    sent_version: u64,
    last_sent: Option<Instant>,
    /// The newest closed candle this client holds: no forming message for it or an
    /// older one may follow.
    closed_through: Option<i64>,
}

impl LiveFeed {
    /// Delivery for the (interval, coin) slots `indices`, at most one message per
    /// slot every `every`.
    pub(super) fn new(
        updates: watch::Receiver<Arc<FormingSnapshot>>,
        indices: impl Iterator<Item = usize>,
        every: Duration,
    ) -> Self {
        Self {
            every,
            updates,
            coins: indices
                .map(|index| LiveCoin {
                    index,
                    sent_version: 0,
                    last_sent: None,
                    closed_through: None,
                })
                .collect(),
            next_due: None,
        }
    }

    /// Notes that the client now holds closed candles of the `coin`-th subscribed
    /// slot up to the one opened at `open_time` (ms since the epoch, UTC).
    pub(super) fn closed(&mut self, coin: usize, open_time: Option<i64>) {
        if let Some(open_time) = open_time {
            let through = &mut self.coins[coin].closed_through;
            *through = Some(through.map_or(open_time, |t| t.max(open_time)));
        }
    }

    /// The forming messages due now, in subscription order; sets [`Self::next_due`]
    /// for those held back.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Utf8Bytes> {
        let snapshot = Arc::clone(&self.updates.borrow_and_update());
        let mut messages = Vec::new();
        self.next_due = None;
        for coin in &mut self.coins {
            let Some(frame) = &snapshot.coins[coin.index] else {
                continue;
            };
            if frame.version == coin.sent_version {
                continue;
            }
            if coin.closed_through.is_some_and(|t| frame.open_time <= t) {
                coin.sent_version = frame.version;
                continue;
            }
            match coin.last_sent.map(|at| at + self.every) {
                Some(due) if due > now => {
                    self.next_due = Some(self.next_due.map_or(due, |next| next.min(due)));
                }
                _ => {
                    messages.push(frame.text());
                    coin.sent_version = frame.version;
                    coin.last_sent = Some(now);
                }
            }
        }
        messages
    }
}

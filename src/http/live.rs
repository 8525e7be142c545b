//! The forming candle for one `live=true` client: at most one message per coin every
//! `LIVE_INTERVAL_MS`, always the newest state, never a backlog, and never stale
//! (an update held back is sent when the interval is up: a trailing edge).
//!
//! The throttle is the client's, not each coin's: the updates of every coin that
//! arrive within one interval leave together, in one write, when it is up. Binance
//! sends each coin's update as its own frame at its own moment, so a throttle per
//! coin would write to every live client once per coin per interval; one per client
//! writes once per interval (five times fewer writes for five coins, measured in the
//! README's Performance section) and still holds every update within the interval.
//! While an update is held back the client is not woken by newer ones: the newest is
//! read when the interval is up.
//!
//! Closed candles come first. After a client is sent closed candles, its forming
//! updates wait half an interval (still never longer than an interval after they
//! arrived): a close reaches every client at once, and the forming writes that would
//! otherwise land in that fan-out delay it for the clients still waiting (measured in
//! the README's Performance section); the forming candles of coins that just closed
//! are superseded anyway.

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
    /// When forming messages were last sent to this client.
    last_sent: Option<Instant>,
    /// Since when an update not yet sent has been waiting (as first seen).
    held_since: Option<Instant>,
    /// No forming message before this: closed candles were sent just now.
    quiet_until: Option<Instant>,
    /// When the held-back updates are due, if any are held back.
    pub(super) next_due: Option<Instant>,
}

struct LiveCoin {
    /// Index into [`FormingSnapshot::coins`].
    index: usize,
    /// The version of the forming frame last sent (or skipped as stale).
    sent_version: u64,
    /// The newest closed candle this client holds: no forming message for it or an
    /// older one may follow.
    closed_through: Option<i64>,
}

impl LiveFeed {
    /// Delivery for the (interval, coin) slots `indices`, at most one batch (one
    /// message per slot) every `every`.
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
                    closed_through: None,
                })
                .collect(),
            last_sent: None,
            held_since: None,
            quiet_until: None,
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

    /// Notes that the client was just sent closed candles: forming messages wait
    /// half an interval, out of the way of the close's fan-out to other clients.
    pub(super) fn sent_closes(&mut self, now: Instant) {
        if !self.every.is_zero() {
            self.quiet_until = Some(now + self.every / 2);
        }
    }

    /// Whether a coin this client follows has a forming state it has not been sent
    /// (and does not hold closed).
    fn has_news(&self) -> bool {
        let snapshot = self.updates.borrow();
        self.coins.iter().any(|coin| {
            snapshot.coins[coin.index].as_ref().is_some_and(|frame| {
                frame.version != coin.sent_version
                    && coin.closed_through.is_none_or(|t| frame.open_time > t)
            })
        })
    }

    /// Whether updates are held back until [`Self::next_due`]: the caller then
    /// waits for that instant rather than for newer updates.
    pub(super) fn holding(&self) -> bool {
        self.next_due.is_some()
    }

    /// The forming messages due now, in subscription order: the newest state of every
    /// coin that changed since it was last sent; or none, with [`Self::next_due`] set
    /// to when they are due. Due: an interval after the last send, and not while
    /// quiet after a close, but never later than an interval after the update.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Utf8Bytes> {
        if !self.has_news() {
            // Nothing to send, or only candles the closes superseded.
            self.next_due = None;
            self.held_since = None;
            return Vec::new();
        }
        let held_since = *self.held_since.get_or_insert(now);
        let spaced = self.last_sent.map_or(now, |at| at + self.every);
        let quiet = self.quiet_until.map_or(spaced, |until| until.max(spaced));
        // Never before `spaced`: the update was seen after the last send.
        let due = quiet.min(held_since + self.every);
        if due > now {
            self.next_due = Some(due);
            return Vec::new();
        }
        self.newest(now)
    }

    /// The newest forming message of every coin that changed since it was last sent,
    /// now: also for the connection's first write, beside the snapshot.
    pub(super) fn newest(&mut self, now: Instant) -> Vec<Utf8Bytes> {
        self.next_due = None;
        self.held_since = None;
        let snapshot = Arc::clone(&self.updates.borrow_and_update());
        let mut messages = Vec::new();
        for coin in &mut self.coins {
            let Some(frame) = &snapshot.coins[coin.index] else {
                continue;
            };
            if frame.version == coin.sent_version {
                continue;
            }
            coin.sent_version = frame.version;
            if coin.closed_through.is_some_and(|t| frame.open_time <= t) {
                continue;
            }
            messages.push(frame.text());
        }
        if !messages.is_empty() {
            self.last_sent = Some(now);
        }
        messages
    }
}

//! What readiness judges the service by, kept up to date where things happen: the
//! exchange's health (last kline, REST bans, refused symbols) and the store's
//! (reachability from a background ping, failing writes). Handlers read these
//! instead of asking the exchange or the database while a client waits.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What readiness and the ingester heartbeat judge the exchange by: when it last
/// sent a kline, whether its REST API has banned us and until when, and which
/// symbols it refused. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    last_data_ms: AtomicI64,
    /// ms since the epoch (UTC) until which REST asked us to wait; 0 for none.
    rest_ban_until_ms: AtomicI64,
    /// The HTTP status of that answer (429 or 418).
    rest_ban_status: AtomicU64,
    /// Symbols the exchange does not know, with its answer.
    refused: Mutex<BTreeMap<String, String>>,
}

impl UpstreamHealth {
    /// Notes that a kline arrived from the exchange now.
    pub fn data_now(&self) {
        self.last_data_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// When the last kline arrived, in ms since the epoch (UTC); `None` before any.
    pub fn last_data_ms(&self) -> Option<i64> {
        Some(self.last_data_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Notes that REST answered `status` (429 or 418) with `Retry-After: wait`.
    pub fn rest_banned_for(&self, status: u16, wait: Duration) {
        let until = chrono::Utc::now().timestamp_millis() + wait.as_millis() as i64;
        self.rest_ban_until_ms.fetch_max(until, Ordering::Relaxed);
        self.rest_ban_status
            .store(u64::from(status), Ordering::Relaxed);
    }

    /// The status of the REST ban in force, if any, and when it ends (ms since the
    /// epoch, UTC).
    pub fn rest_ban(&self) -> Option<(u16, i64)> {
        let until = self.rest_banned_until_ms()?;
        Some((self.rest_ban_status.load(Ordering::Relaxed) as u16, until))
    }

    /// When the REST ban ends, ms since the epoch (UTC), while one is in force.
    pub fn rest_banned_until_ms(&self) -> Option<i64> {
        let until = self.rest_ban_until_ms.load(Ordering::Relaxed);
        (until > chrono::Utc::now().timestamp_millis()).then_some(until)
    }

    /// How long REST still asks us to wait, if at all.
    pub fn rest_ban_remaining(&self) -> Option<Duration> {
        let until = self.rest_banned_until_ms()?;
        let left = until - chrono::Utc::now().timestamp_millis();
        Some(Duration::from_millis(left.max(0) as u64))
    }

    /// Notes that the exchange refused `symbol`, answering `why`.
    pub fn refuse_symbol(&self, symbol: &str, why: String) {
        self.refused
            .lock()
            .expect("refused lock")
            .insert(symbol.to_owned(), why);
    }

    /// Symbols the exchange refused, with its answers, by name.
    pub fn refused_symbols(&self) -> BTreeMap<String, String> {
        self.refused.lock().expect("refused lock").clone()
    }

    /// Whether the exchange refused `symbol`.
    pub fn is_refused(&self, symbol: &str) -> bool {
        self.refused
            .lock()
            .expect("refused lock")
            .contains_key(symbol)
    }
}

/// Whether the store takes writes: readiness fails when every write has failed for
/// a while. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// ms since the epoch (UTC) of the first failure of the current run of failed
    /// writes; 0 while writes succeed.
    failing_since_ms: AtomicI64,
    /// Whether the last ping failed (checked in the background).
    unreachable: AtomicBool,
    /// For a follower: why no ingester brings candles, if so (judged in the
    /// background from their heartbeats).
    ingesters: Mutex<Option<String>>,
    /// For a follower: why the newest followed candle was not shown, until one is.
    followed_refused: Mutex<Option<String>>,
}

impl StoreHealth {
    /// Notes the answer to a ping; returns true when that is a change.
    pub fn set_reachable(&self, reachable: bool) -> bool {
        self.unreachable.swap(!reachable, Ordering::Relaxed) == reachable
    }

    /// Notes the ingesters' state for readiness (`None`: one is healthy).
    pub fn set_ingesters_reason(&self, reason: Option<String>) {
        *self.ingesters.lock().expect("ingesters lock") = reason;
    }

    /// Why no ingester brings candles, for a follower's readiness.
    pub fn ingesters_reason(&self) -> Option<String> {
        self.ingesters.lock().expect("ingesters lock").clone()
    }

    /// Notes whether the newest followed candle was shown (`None`) or why not.
    pub fn set_followed_refused(&self, reason: Option<String>) {
        *self.followed_refused.lock().expect("followed lock") = reason;
    }

    /// Why the newest followed candle was not shown, for a follower's readiness.
    pub fn followed_refused(&self) -> Option<String> {
        self.followed_refused.lock().expect("followed lock").clone()
    }

    /// Whether the store answered its last ping.
    pub fn reachable(&self) -> bool {
        !self.unreachable.load(Ordering::Relaxed)
    }

    /// Notes a failed write (the first of a run starts the clock).
    pub fn write_failed(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let _ =
            self.failing_since_ms
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Notes a successful write.
    pub fn write_succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long writes have been failing, if they are.
    pub fn failing_for(&self) -> Option<Duration> {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        (since > 0).then(|| {
            Duration::from_millis((chrono::Utc::now().timestamp_millis() - since).max(0) as u64)
        })
    }
}

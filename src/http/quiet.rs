//! Log lines for events that can come in floods (refused connections, 503s, slow
//! clients, accept errors): the first of a kind is logged with its details, the rest
//! are counted and summed up in one line per kind at most every [`SUMMARY_EVERY`].
//! Their metrics count every one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The longest a counted event waits to appear in a summary line, and the shortest
/// gap between two lines of one kind.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// An event that may repeat many times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noisy {
    /// A websocket upgrade answered 503 at `MAX_CONNECTIONS`.
    ConnectionLimit,
    /// A connection answered 503 because too many HTTP connections are open.
    HttpConnectionLimit,
    /// `accept` failed (for example with too many open files).
    AcceptFailed,
    /// A client closed with 1013 for not taking its messages in time.
    SlowClient,
    /// A history request answered 503 because the store failed.
    StoreUnavailable,
    /// A history request answered 503 because too many were reading already.
    TooManyReads,
    /// A connection closed for its PROXY protocol header: missing, unreadable or
    /// of a version `PROXY_PROTOCOL` does not accept.
    ProxyHeaderRefused,
}

const KINDS: [Noisy; 7] = [
    Noisy::ConnectionLimit,
    Noisy::HttpConnectionLimit,
    Noisy::AcceptFailed,
    Noisy::SlowClient,
    Noisy::StoreUnavailable,
    Noisy::TooManyReads,
    Noisy::ProxyHeaderRefused,
];

impl Noisy {
    fn what(self) -> &'static str {
        match self {
            Noisy::ConnectionLimit => "websocket upgrades refused at MAX_CONNECTIONS (503)",
            Noisy::HttpConnectionLimit => {
                "connections refused: too many open HTTP connections (503)"
            }
            Noisy::AcceptFailed => "connections could not be accepted",
            Noisy::SlowClient => "clients closed for not taking their messages in time (1013)",
            Noisy::StoreUnavailable => "history requests failed: the store is unavailable (503)",
            Noisy::TooManyReads => {
                "history requests refused: too many reads under way (503, Retry-After: 1)"
            }
            Noisy::ProxyHeaderRefused => {
                "connections closed for their PROXY protocol header (PROXY_PROTOCOL)"
            }
        }
    }

    fn tally(self) -> &'static Tally {
        &TALLIES[self as usize]
    }

    /// Notes one event: logged now with `detail` if none of this kind was logged
    /// within [`SUMMARY_EVERY`], otherwise counted for the next summary line.
    pub fn note(self, detail: &dyn std::fmt::Display) {
        let tally = self.tally();
        let now = now_ms();
        let last = tally.last_logged_ms.load(Ordering::Relaxed);
        let quiet = now.saturating_sub(last) >= SUMMARY_EVERY.as_millis() as u64;
        if quiet
            && tally
                .last_logged_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            warn!(detail = %detail, "{} (more are summed up every {} s)", self.what(), SUMMARY_EVERY.as_secs());
        } else {
            tally.pending.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Tally {
    pending: AtomicU64,
    last_logged_ms: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // each array element is its own tally
const TALLY: Tally = Tally {
    pending: AtomicU64::new(0),
    last_logged_ms: AtomicU64::new(0),
};
static TALLIES: [Tally; KINDS.len()] = [TALLY; KINDS.len()];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes the summary lines every [`SUMMARY_EVERY`] until `shutdown`, then once more.
pub async fn summarize(shutdown: CancellationToken) {
    let mut ticks = crate::retry::Every::new(SUMMARY_EVERY, shutdown);
    loop {
        let stopping = !ticks.next().await;
        for kind in KINDS {
            let tally = kind.tally();
            let count = tally.pending.swap(0, Ordering::Relaxed);
            if count > 0 {
                tally.last_logged_ms.store(now_ms(), Ordering::Relaxed);
                warn!(
                    count,
                    "{}: {count} more in the last {} s",
                    kind.what(),
                    SUMMARY_EVERY.as_secs()
                );
            }
        }
        if stopping {
            return;
        }
    }
}

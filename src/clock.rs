//! The time a replica judges candles by: this machine's clock corrected by a trusted
//! clock's offset (the database's, which every replica shares with the ingesters),
//! so a replica whose own clock is minutes off judges "now" as the ingesters do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A shared, cheap-to-clone clock. Until a trusted clock has been read it is this
/// machine's clock alone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Added to the system clock (ms): zero but in tests, where it plays a machine
    /// whose clock is off ([`Clock::skewed`]).
    local_skew_ms: i64,
    /// The trusted clock minus this machine's clock (ms), once one was read.
    offset_ms: AtomicI64,
    learned: AtomicBool,
}

impl Clock {
    /// This machine's clock, to be corrected once a trusted clock is read.
    pub fn system() -> Self {
        Self::default()
    }

    /// For tests: a machine whose clock reads `skew_ms` off the true time (negative:
    /// behind). Everything the service does by its local clock sees the skew.
    pub fn skewed(skew_ms: i64) -> Self {
        Self {
            inner: Arc::new(Inner {
                local_skew_ms: skew_ms,
                ..Inner::default()
            }),
        }
    }

    /// Another clock on this machine (sharing any test skew) that learns a trusted
    /// clock of its own: the exchange's, beside the database's.
    pub fn sibling(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                local_skew_ms: self.inner.local_skew_ms,
                ..Inner::default()
            }),
        }
    }

    /// This machine's clock, ms since the epoch (UTC).
    pub fn local_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.inner.local_skew_ms
    }

    /// Now on the trusted clock, ms since the epoch (UTC): this machine's clock plus
    /// the last offset learned, or this machine's clock while none was.
    pub fn now_ms(&self) -> i64 {
        self.local_ms() + self.inner.offset_ms.load(Ordering::Relaxed)
    }

    /// Learns the trusted clock: it read `trusted_ms` at some moment between
    /// `sent_ms` and `received_ms` on [`Clock::local_ms`] (a request's round trip),
    /// taken as the middle. Returns the offset (ms, trusted minus local).
    pub fn learn(&self, trusted_ms: i64, sent_ms: i64, received_ms: i64) -> i64 {
        let offset = trusted_ms - (sent_ms + (received_ms - sent_ms) / 2);
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
        self.inner.learned.store(true, Ordering::Relaxed);
        offset
    }

    /// The trusted clock minus this machine's (ms); `None` until one was read.
    pub fn offset_ms(&self) -> Option<i64> {
        self.inner
            .learned
            .load(Ordering::Relaxed)
            .then(|| self.inner.offset_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTEEN_MINUTES: i64 = 15 * 60_000;

    #[test]
    fn a_skewed_clock_reads_true_time_once_it_learned_a_trusted_one() {
        let clock = Clock::skewed(-FIFTEEN_MINUTES);
        let truth = chrono::Utc::now().timestamp_millis();
        assert!((truth - FIFTEEN_MINUTES - clock.now_ms()).abs() < 1_000);
        assert_eq!(clock.offset_ms(), None);
        let sent = clock.local_ms();
        let offset = clock.learn(chrono::Utc::now().timestamp_millis(), sent, sent + 10);
        assert!((offset - FIFTEEN_MINUTES).abs() < 1_000, "{offset}");
        assert!((chrono::Utc::now().timestamp_millis() - clock.now_ms()).abs() < 1_000);
        // Clones share what was learned.
        assert_eq!(clock.clone().offset_ms(), Some(offset));
    }
}

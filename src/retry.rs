//! Retrying with capped exponential backoff and jitter, shared by the exchange
//! client, the store writer and the change-stream follower; and repeating on a
//! fixed period until shutdown, for the background checks.

use std::time::Duration;

/// The first retry delay of every retry loop.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Capped exponential backoff with "equal jitter": each delay is drawn from
/// `[d/2, d]` where `d` doubles from the first delay up to the cap, so clients that
/// failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, never exceeds `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.min(cap);
        Self {
            first,
            cap,
            next: first,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.cap);
        ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// A fixed period that ends at shutdown: `while ticks.next().await { … }` runs the
/// body at once, then every period (a late tick delays the next, never bunches).
pub struct Every {
    tick: tokio::time::Interval,
    cancel: tokio_util::sync::CancellationToken,
}

impl Every {
    /// Ticks every `period` until `cancel` fires.
    pub fn new(period: Duration, cancel: tokio_util::sync::CancellationToken) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick, cancel }
    }

    /// Waits for the next tick; false once shutdown began.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = self.tick.tick() => true,
        }
    }

    /// A tick's `work`, or `None` once shutdown begins: periodic work is never
    /// finished after a stop, so a database that does not answer cannot hold the
    /// exit for its driver's timeouts.
    pub async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        self.cancel.run_until_cancelled(work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for _ in 0..50 {
            let mut run = backoff.clone();
            for ceiling in ceilings {
                let delay = run.next_delay().as_millis() as u64;
                assert!(
                    (ceiling / 2..=ceiling).contains(&delay),
                    "{delay} ms outside [{}, {ceiling}]",
                    ceiling / 2
                );
            }
        }
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn a_cap_below_the_first_delay_wins() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_millis(200));
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}

//! The mirror's request-weight budget, counted as Binance counts it (USD-M docs,
//! "General Info", limits: request weight per IP per clock minute): every request
//! the mirror sends the exchange spends from it, and one that would go over is
//! refused with Binance's own 429 instead of reaching the exchange.

use std::sync::Mutex;
use std::time::Duration;

use super::error::BinanceError;

const MINUTE_MS: i64 = 60_000;

/// Weight spent in the current clock minute, out of `limit`.
#[derive(Debug)]
pub struct WeightBudget {
    limit: u32,
    /// (the minute counted, ms since the epoch; weight spent in it).
    spent: Mutex<(i64, u32)>,
}

impl WeightBudget {
    /// A budget of `limit` weight per minute (at least 1).
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            spent: Mutex::new((0, 0)),
        }
    }

    /// The weight allowed per minute.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Spends `weight` at `now_ms` (the exchange's clock) if it fits in this
    /// minute's budget.
    ///
    /// # Errors
    /// [`BinanceError::TooMuchWeight`] with the seconds until the next minute.
    pub fn try_spend(&self, weight: u32, now_ms: i64) -> Result<(), BinanceError> {
        let minute = now_ms.div_euclid(MINUTE_MS);
        let mut spent = self.spent.lock().expect("budget lock");
        if spent.0 != minute {
            *spent = (minute, 0);
        }
        if spent.1.saturating_add(weight) > self.limit {
            let left_ms = (minute + 1) * MINUTE_MS - now_ms;
            let retry_after_secs = u64::try_from((left_ms + 999) / 1000).unwrap_or(1).max(1);
            return Err(BinanceError::TooMuchWeight {
                limit: self.limit,
                retry_after_secs,
            });
        }
        spent.1 += weight;
        Ok(())
    }

    /// Spends `weight`, waiting for the next minute when this one's budget is spent,
    /// if that is at most `patience` away.
    ///
    /// # Errors
    /// [`BinanceError::TooMuchWeight`] when the wait would be longer.
    pub async fn spend(
        &self,
        weight: u32,
        now_ms: impl Fn() -> i64,
        patience: Duration,
    ) -> Result<(), BinanceError> {
        match self.try_spend(weight, now_ms()) {
            Err(BinanceError::TooMuchWeight {
                retry_after_secs, ..
            }) if Duration::from_secs(retry_after_secs) <= patience => {
                let left = MINUTE_MS - now_ms().rem_euclid(MINUTE_MS);
                tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap_or(0))).await;
                self.try_spend(weight, now_ms())
            }
            other => other,
        }
    }

    /// Takes in the exchange's own count for this minute (`X-MBX-USED-WEIGHT-1M`),
    /// which includes what other users of the same address spent.
    pub fn observe_used(&self, used: u32, now_ms: i64) {
        let minute = now_ms.div_euclid(MINUTE_MS);
        let mut spent = self.spent.lock().expect("budget lock");
        if spent.0 != minute {
            *spent = (minute, 0);
        }
        spent.1 = spent.1.max(used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_s_budget_refuses_what_does_not_fit_until_the_next_minute() {
        let budget = WeightBudget::new(10);
        let t = 1_763_791_380_000; // a whole minute
        budget.try_spend(6, t).unwrap();
        budget.try_spend(4, t + 1_000).unwrap();
        let refused = budget.try_spend(1, t + 30_500).unwrap_err();
        assert_eq!(
            refused,
            BinanceError::TooMuchWeight {
                limit: 10,
                retry_after_secs: 30
            }
        );
        budget.try_spend(10, t + MINUTE_MS).unwrap();
        budget.observe_used(10, t + 2 * MINUTE_MS);
        assert!(budget.try_spend(1, t + 2 * MINUTE_MS).is_err());
    }
}

//! Pacing REST requests by Binance's request weight: each request waits for its turn,
//! so the weight sent in any minute stays under a budget, whatever the answers were
//! (retries, refusals and bans are requests too).

use std::time::Duration;

use tokio::time::Instant;

/// The request weight per minute the exchange client spends, start-up, repairs,
/// deep history and window seeds together: half of Binance's 2,400 per IP (USD-M
/// docs, "General Info": `REQUEST_WEIGHT` 2400 a minute), so a `candlecast
/// backfill` or a bot can run beside it from the same address.
pub const INGEST_WEIGHT_PER_MINUTE: u32 = 1200;

/// Binance's weight of `GET /fapi/v1/klines` asking for `limit` rows (USD-M docs,
/// "Kline/Candlestick Data"): 1 below 100 rows, 2 below 500, 5 up to 1,000, 10 above.
pub fn klines_weight(limit: usize) -> u32 {
    match limit {
        0..100 => 1,
        100..500 => 2,
        500..=1000 => 5,
        _ => 10,
    }
}

/// The heaviest single request (a klines page of more than 1,000 rows).
const MAX_REQUEST_WEIGHT: u32 = 10;

/// Spaces requests so that at most `weight_per_minute` is sent in any 60 s, however
/// the minute is cut: a request of weight `w` holds the next one back by `w` units
/// of time, a unit being a minute over `weight_per_minute − 9` (the heaviest request
/// less one), so a window that catches one more request still stays within. No
/// bursts: a run's first minute is paced like its last, so a budget of half
/// Binance's 2,400 leaves the other half to a service on the same address. Requests
/// go one at a time, each booked from when it really goes: a stalled machine delays
/// the ones behind it, never sends them together.
#[derive(Debug)]
pub struct Pacer {
    /// A minute's worth of weight, as time per unit of weight.
    per_weight: Duration,
    /// When the next request may be sent; held by the request waiting for it.
    next: tokio::sync::Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `weight_per_minute` (at least 1).
    pub fn new(weight_per_minute: u32) -> Self {
        let rate = weight_per_minute
            .saturating_sub(MAX_REQUEST_WEIGHT - 1)
            .max(1);
        Self {
            per_weight: Duration::from_secs(60) / rate,
            next: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits until a request of `weight` may be sent (its turn among the waiting,
    /// first come first served), and books its share of the minute from now.
    pub async fn wait(&self, weight: u32) {
        let mut next = self.next.lock().await;
        if let Some(turn) = *next {
            tokio::time::sleep_until(turn).await;
        }
        *next = Some(Instant::now() + self.per_weight * weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_binance_s_table() {
        assert_eq!(klines_weight(1), 1);
        assert_eq!(klines_weight(99), 1);
        assert_eq!(klines_weight(100), 2);
        assert_eq!(klines_weight(499), 2);
        assert_eq!(klines_weight(500), 5);
        assert_eq!(klines_weight(1000), 5);
        assert_eq!(klines_weight(1001), 10);
        assert_eq!(klines_weight(1500), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_their_weight() {
        let pacer = Pacer::new(1200);
        let start = Instant::now();
        let mut sent = Vec::new();
        for weight in [5, 5, 1, 2, 5] {
            pacer.wait(weight).await;
            sent.push(start.elapsed().as_millis());
        }
        // 1,200 a minute paces 1,191 units (60 s / 1,191 ≈ 50.4 ms each); each
        // request waits for the weight of the one before it.
        assert_eq!(sent, [0, 252, 504, 555, 656]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_60_s_window_holds_more_than_the_budget() {
        let pacer = Pacer::new(1200);
        let start = Instant::now();
        let mut sent = Vec::new();
        for i in 0..600u32 {
            let weight = [1, 2, 5, 10][(i % 4) as usize];
            pacer.wait(weight).await;
            sent.push((start.elapsed(), weight));
        }
        let busiest = sent
            .iter()
            .map(|(from, _)| {
                sent.iter()
                    .filter(|(at, _)| *at >= *from && *at - *from < Duration::from_secs(60))
                    .map(|(_, w)| w)
                    .sum::<u32>()
            })
            .max()
            .unwrap();
        assert!((1150..=1200).contains(&busiest), "{busiest}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_lets_the_next_request_go_at_once() {
        let pacer = Pacer::new(1200);
        pacer.wait(5).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Instant::now();
        pacer.wait(5).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}

//! A fake with days of history that then stays put, for clients that ask for hours
//! of candles: like [`FakeExchange::start_lagging`], with as many minutes as asked.

use super::FakeExchange;

impl FakeExchange {
    /// A fake whose `minutes` of history stop `lag_minutes` before now and then stay
    /// put (see [`FakeExchange::start_lagging`]; a service on it needs a seeded store).
    pub async fn start_lagging_sized(symbols: &[&str], lag_minutes: i64, minutes: i64) -> Self {
        Self::start_with(symbols, ([127, 0, 0, 1], 0).into(), lag_minutes, minutes).await
    }
}

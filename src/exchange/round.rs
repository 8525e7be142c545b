//! Closes of one minute, held together for a moment so they reach the hub as one
//! change: Binance sends each symbol's close as its own frame, microseconds to
//! milliseconds apart, and every change the hub publishes wakes every client. Held
//! until every symbol closed that minute, or [`ROUND_WINDOW`] after the first close,
//! whichever comes first (a quiet symbol costs the others that much, once).

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::candle::Candle;

/// The longest a close waits for the other symbols' closes of its minute.
pub const ROUND_WINDOW: Duration = Duration::from_millis(20);

/// Closed candles from the stream not yet handed on.
#[derive(Debug)]
pub(super) struct Round {
    symbols: usize,
    pending: Vec<Candle>,
    /// When the first pending close arrived.
    since: Option<Instant>,
}

impl Round {
    /// A round for `symbols` symbols.
    pub(super) fn new(symbols: usize) -> Self {
        Self {
            symbols,
            pending: Vec::new(),
            since: None,
        }
    }

    /// Adds stream closes; returns every pending close once each symbol has closed
    /// the newest minute pending.
    pub(super) fn add(&mut self, closed: Vec<Candle>) -> Option<Vec<Candle>> {
        if closed.is_empty() {
            return None;
        }
        self.since.get_or_insert_with(Instant::now);
        self.pending.extend(closed);
        let newest = self.pending.iter().map(|c| c.open_time).max()?;
        let closed_newest: HashSet<&str> = self
            .pending
            .iter()
            .filter(|c| c.open_time == newest)
            .map(|c| c.symbol.as_str())
            .collect();
        (closed_newest.len() >= self.symbols).then(|| self.take())
    }

    /// When the pending closes must go even if the round is incomplete.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|since| since + ROUND_WINDOW)
    }

    /// Every pending close, oldest first as received.
    pub(super) fn take(&mut self) -> Vec<Candle> {
        self.since = None;
        std::mem::take(&mut self.pending)
    }

    /// Whether the close of `symbol` opened at `open_time` is pending.
    pub(super) fn holds(&self, symbol: &str, open_time: i64) -> bool {
        self.pending
            .iter()
            .any(|c| c.open_time == open_time && c.symbol == symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(symbol: &str, open_time: i64) -> Candle {
        Candle {
            symbol: symbol.into(),
            interval: "1m".into(),
            open_time,
            close_time: open_time + 59_999,
            open: 1.0,
            high: 1.0,
            low: 1.0,
            close: 1.0,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 0.0,
            taker_buy_quote_volume: 0.0,
            trades: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_goes_when_every_symbol_closed_or_when_its_window_ends() {
        let mut round = Round::new(3);
        assert!(round.add(Vec::new()).is_none());
        assert!(round.due().is_none());
        assert!(round.add(vec![close("A", 0)]).is_none());
        let due = round.due().expect("a deadline once a close waits");
        assert_eq!(due - Instant::now(), ROUND_WINDOW);
        assert!(round.holds("A", 0) && !round.holds("B", 0));
        assert!(round.add(vec![close("B", 0)]).is_none());
        let all = round.add(vec![close("C", 0)]).expect("every symbol closed");
        assert_eq!(all.len(), 3);
        assert!(round.due().is_none());
        // An incomplete round is taken at its deadline by the reader.
        round.add(vec![close("A", 60_000)]);
        assert_eq!(round.take().len(), 1);
        assert!(round.due().is_none());
    }
}

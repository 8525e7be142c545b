//! The fake exchange on a runtime and thread of its own, so what it sends is not
//! queued behind the clients' tasks, and what the bench makes it send: a round of
//! closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candlecast::candle::Candle;
use tokio::sync::oneshot;

use crate::SYMBOLS;
use crate::analysis::Handed;
use crate::clients::stamp;
use crate::fake_exchange::{FakeExchange, MINUTE};

/// A fake exchange running on its own thread; stops when dropped.
pub struct Exchange {
    pub fake: Arc<FakeExchange>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exchange {
    /// Starts the fake, not in the last seconds of a wall-clock minute: its history
    /// gains the closed minute by itself at each minute boundary until the bench's
    /// first close puts it ahead of the clock, and a candle appearing that way shows
    /// the server a gap whose repair republishes every window.
    pub async fn start() -> anyhow::Result<Self> {
        let second = chrono::Utc::now().timestamp_millis().rem_euclid(MINUTE);
        if second > MINUTE - 10_000 {
            tokio::time::sleep(Duration::from_millis((MINUTE - second + 500) as u64)).await;
        }
        Self::spawn()
    }

    fn spawn() -> anyhow::Result<Self> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-exchange".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake exchange's runtime");
                runtime.block_on(async {
                    let fake = FakeExchange::start(&SYMBOLS).await;
                    let _ = started_tx.send(Arc::new(fake));
                    let _ = stopped.await;
                });
            })?;
        let fake = started_rx.recv()?;
        Ok(Self {
            fake,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Closes every coin's next candle, one close frame each, `spacing` apart; returns
/// the closed candles and when the first and the last frame were handed to the fake.
pub fn close_round(fake: &FakeExchange, spacing: Duration) -> (Vec<Candle>, Handed) {
    let mut closed = Vec::with_capacity(SYMBOLS.len());
    let first = stamp(Instant::now());
    for (i, symbol) in SYMBOLS.iter().enumerate() {
        if i > 0 && !spacing.is_zero() {
            // Microseconds: a sleep would overshoot.
            let until = Instant::now() + spacing;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let candle = fake.close_next_silently(symbol);
        fake.send_update(&candle, true);
        closed.push(candle);
    }
    let last = stamp(Instant::now());
    (closed, Handed { first, last })
}

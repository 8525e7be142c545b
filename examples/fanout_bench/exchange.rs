//! The fake exchange on a runtime and thread of its own, so what it sends is not
//! queued behind the clients' tasks, and what the bench makes it send: numbered
//! rounds of closes, and the forming-candle load of the live scenario.

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
    runtime: tokio::runtime::Handle,
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
                    let _ = started_tx.send((Arc::new(fake), tokio::runtime::Handle::current()));
                    let _ = stopped.await;
                });
            })?;
        let (fake, runtime) = started_rx.recv()?;
        Ok(Self {
            fake,
            runtime,
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

/// Price steps of a closed candle's close: round `n` closes every coin at its base
/// price plus `n` steps, so a window message's newest close says which round it shows.
const CLOSE_STEP: f64 = 0.01;

/// Which step of `step` above `base` a price is: the number it encodes.
fn number_of(price: f64, base: f64, step: f64) -> u64 {
    // NaN (an unreadable price) becomes 0, which no round or update has.
    ((price - base) / step).round().max(0.0) as u64
}

/// Numbers the rounds of closes from 1 and writes each round's number into its closes.
#[derive(Debug, Clone)]
pub struct Closer {
    /// Each coin's base price for [`CLOSE_STEP`]s.
    pub bases: Vec<f64>,
    next: u64,
}

impl Closer {
    /// Numbers from the newest closes of `fake`'s history.
    pub fn new(fake: &FakeExchange) -> Self {
        let bases = SYMBOLS
            .iter()
            .map(|symbol| {
                fake.history(symbol)
                    .last()
                    .map_or(100.0, |c| c.close.floor())
            })
            .collect();
        Self { bases, next: 1 }
    }

    /// Closes every coin's next candle, one close frame each, `spacing` apart;
    /// returns the closed candles and the round's number and hand-off instants.
    pub fn close_round(&mut self, fake: &FakeExchange, spacing: Duration) -> (Vec<Candle>, Handed) {
        let number = self.next;
        self.next += 1;
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
            let mut candle = fake.close_next_silently(symbol);
            candle.close = self.bases[i] + number as f64 * CLOSE_STEP;
            candle.high = candle.open.max(candle.close);
            candle.low = candle.open.min(candle.close);
            fake.send_update(&candle, true);
            closed.push(candle);
        }
        let last = stamp(Instant::now());
        // The fake's history (what REST serves, and the next candle's open) follows
        // what was streamed; rewritten after the frames so they leave back to back.
        for candle in &closed {
            let mut history = fake.history(&candle.symbol);
            if let Some(newest) = history.last_mut() {
                *newest = candle.clone();
            }
            fake.set_history(&candle.symbol, history);
        }
        let handed = Handed {
            number,
            first,
            last,
        };
        (closed, handed)
    }

    /// A closer that has not closed anything, for tests of the analysis.
    #[cfg(test)]
    pub fn with_bases(bases: Vec<f64>) -> Self {
        Self { bases, next: 1 }
    }

    /// Which round a window message whose newest close is `close` shows.
    pub fn round_of(&self, coin: usize, close: f64) -> u64 {
        number_of(close, self.bases[coin], CLOSE_STEP)
    }
}

/// Price steps of the forming close: update `seq` of a coin closes at its base price
/// plus `seq` steps, so the close in a message says which update it is.
const STEP: f64 = 0.0001;

/// Which update of its coin a forming close price is.
pub fn update_of(close: f64, base: f64) -> u64 {
    number_of(close, base, STEP)
}

/// The live scenario's schedule.
pub struct LoadPlan {
    pub forming_every: Duration,
    pub together: bool,
    pub round_every: Duration,
    pub rounds: usize,
    pub spacing: Duration,
    /// When the load starts (forming only, to settle).
    pub start: Instant,
    /// When the measured window starts; its close rounds fall mid-interval.
    pub measure_from: Instant,
}

impl LoadPlan {
    /// When the measured window ends, and the load with it.
    pub fn measure_to(&self) -> Instant {
        self.measure_from + self.round_every * self.rounds as u32
    }
}

/// What the fake sent during the load, on the [`stamp`] clock.
pub struct LoadLog {
    /// Per coin, each forming update's number (from 1, consecutive) and hand-off.
    pub updates: Vec<Vec<(u64, u32)>>,
    /// Each close round's hand-off (the scenario puts its warm-up round first).
    pub rounds: Vec<Handed>,
    /// The base price of each coin's forming closes ([`update_of`]).
    pub forming_bases: Vec<f64>,
    /// What numbered the rounds, handed back for the next ones and the analysis.
    pub closer: Closer,
}

/// Runs the live load on the fake's runtime: a forming update of every coin every
/// `forming_every` (spread evenly, or back to back) and a round of closes every
/// `round_every`, in one task so no update falls inside a round.
pub async fn run_load(
    exchange: &Exchange,
    plan: LoadPlan,
    closer: Closer,
    newest: Vec<Candle>,
) -> anyhow::Result<LoadLog> {
    let fake = Arc::clone(&exchange.fake);
    Ok(exchange
        .runtime
        .spawn(async move { drive(&fake, plan, closer, newest).await })
        .await?)
}

async fn drive(
    fake: &FakeExchange,
    plan: LoadPlan,
    closer: Closer,
    mut newest: Vec<Candle>,
) -> LoadLog {
    let coins = SYMBOLS.len();
    let forming_bases: Vec<f64> = newest.iter().map(|c| c.close.floor()).collect();
    let mut log = LoadLog {
        updates: vec![Vec::new(); coins],
        rounds: Vec::new(),
        forming_bases,
        closer,
    };
    let step = if plan.together {
        plan.forming_every
    } else {
        plan.forming_every / coins as u32
    };
    let end = plan.measure_to();
    let mut next_forming = plan.start;
    let mut next_close = plan.measure_from + plan.round_every / 2;
    let mut tick = 0usize;
    loop {
        let next = next_forming.min(next_close);
        if next >= end {
            return log;
        }
        tokio::time::sleep_until(next.into()).await;
        if next_close <= next_forming {
            let (closed, handed) = log.closer.close_round(fake, plan.spacing);
            newest = closed;
            log.rounds.push(handed);
            next_close += plan.round_every;
            continue;
        }
        let due: Vec<usize> = if plan.together {
            (0..coins).collect()
        } else {
            vec![tick % coins]
        };
        for coin in due {
            let seq = log.updates[coin].len() as u64 + 1;
            let close = log.forming_bases[coin] + seq as f64 * STEP;
            fake.send_update(&forming_after(&newest[coin], close, seq), false);
            log.updates[coin].push((seq, stamp(Instant::now())));
        }
        tick += 1;
        next_forming += step;
    }
}

/// The candle forming after `closed`, as update `seq` with close `close`; its
/// numbers are kept short so the close falls within the head the clients keep.
fn forming_after(closed: &Candle, close: f64, seq: u64) -> Candle {
    let open_time = closed.open_time + MINUTE;
    Candle {
        symbol: closed.symbol.clone(),
        interval: closed.interval.clone(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open: closed.close,
        high: closed.close.max(close),
        low: closed.close.min(close),
        close,
        volume: seq as f64,
        quote_volume: seq as f64 * close,
        taker_buy_volume: 0.0,
        taker_buy_quote_volume: 0.0,
        trades: seq as i64,
    }
}

//! The market of `every_symbol_bench`: the fake exchange on a thread and runtime of
//! its own, with a history shaped so that every window of every served interval
//! can be seeded, and a driver that speaks like Binance's combined stream: each
//! contract's forming (`x:false`) candle once per period, the contracts spread
//! over it, and every contract's final (`x:true`) frame as soon as a minute ends.
//!
//! The fake's history is frozen: only the driver's closes add to it, so what the
//! stream says and what REST serves never disagree. Its clock may run behind the
//! wall clock by whole minutes (the fake's `serverTime` and event times, which the
//! service goes by), to start the service at a chosen time of the UTC day.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candlecast::candle::Candle;
use tokio::sync::oneshot;

use crate::fake_exchange::{FakeExchange, MINUTE, precisions};

/// What plain `/` sends with `SYMBOLS=*`; the generated contracts follow them.
pub const MAJORS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// The five majors, then `C000USDT`, `C001USDT`, … up to `total` contracts.
pub fn contracts(total: usize) -> Vec<String> {
    let generated = (0..total.saturating_sub(MAJORS.len())).map(|n| format!("C{n:03}USDT"));
    MAJORS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(generated)
        .collect()
}

/// How often the driver looks at the clock: a minute's closes go out at most this
/// long after it ends, and forming updates are sent in slices this far apart.
const SLICE: Duration = Duration::from_millis(5);

/// One minute's closes, as handed to the fake.
#[derive(Debug, Clone, Copy)]
pub struct CloseRound {
    /// The open time of the minute closed.
    pub open_time: i64,
    /// When the last of its final frames was handed to the fake.
    pub handed: Instant,
    /// How many final frames were sent.
    pub closes: usize,
}

/// What the driver sends; the bench changes the forming period between phases.
#[derive(Debug)]
pub struct Driver {
    /// Each contract's forming candle is sent once per this many milliseconds.
    period_ms: AtomicU64,
    /// Forming frames sent so far.
    forming_sent: AtomicU64,
    rounds: Mutex<Vec<CloseRound>>,
}

impl Driver {
    /// From now on every contract sends its forming candle once per `period`.
    pub fn set_period(&self, period: Duration) {
        self.period_ms
            .store(period.as_millis().max(1) as u64, Ordering::SeqCst);
    }

    /// Forming frames sent so far.
    pub fn forming_sent(&self) -> u64 {
        self.forming_sent.load(Ordering::SeqCst)
    }

    /// The close round of the minute opened at `open_time`, once it went out.
    pub fn round(&self, open_time: i64) -> Option<CloseRound> {
        let rounds = self.rounds.lock().unwrap();
        rounds.iter().find(|r| r.open_time == open_time).copied()
    }

    async fn run(self: Arc<Self>, fake: Arc<FakeExchange>, symbols: Vec<String>, offset: i64) {
        let count = symbols.len();
        let mut open_minute = minute_open(now_ms() + offset);
        let mut next = 0;
        let mut owed = 0.0_f64;
        let mut last = Instant::now();
        let mut slices = tokio::time::interval(SLICE);
        slices.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            slices.tick().await;
            // Closes first: a forming frame of the next minute before them would
            // tell the service the stream skipped one.
            while minute_open(now_ms() + offset) > open_minute {
                for symbol in &symbols {
                    // The very candle the forming frames of this minute showed.
                    let candle = fake.close_next_silently(symbol);
                    fake.send_update(&candle, true);
                }
                self.rounds.lock().unwrap().push(CloseRound {
                    open_time: open_minute,
                    handed: Instant::now(),
                    closes: count,
                });
                open_minute += MINUTE;
            }
            let now = Instant::now();
            let period = self.period_ms.load(Ordering::SeqCst) as f64 / 1000.0;
            owed = (owed + count as f64 * (now - last).as_secs_f64() / period).min(count as f64);
            last = now;
            while owed >= 1.0 {
                fake.send_forming(&symbols[next]);
                next = (next + 1) % count;
                owed -= 1.0;
                self.forming_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The fake exchange and its driver on a thread of their own (so what they send
/// is not queued behind the bench's clients); stops when dropped.
pub struct Market {
    pub fake: Arc<FakeExchange>,
    pub driver: Arc<Driver>,
    /// The fake's clock minus the wall clock (ms, whole minutes, at most 0).
    pub offset: i64,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Market {
    /// Starts the fake with every contract's history shaped for windows of
    /// `window` candles at each of `longer` (interval lengths in ms besides the
    /// base minute), its clock `offset` ms off the wall clock (whole minutes), and
    /// the driver with a forming period of `period`.
    pub fn start(
        symbols: &[String],
        longer: &[i64],
        window: usize,
        period: Duration,
        offset: i64,
    ) -> anyhow::Result<Self> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let symbols = symbols.to_vec();
        let longer = longer.to_vec();
        let thread = std::thread::Builder::new()
            .name("fake-exchange".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fake exchange's runtime");
                runtime.block_on(async move {
                    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
                    let fake = Arc::new(FakeExchange::start_sized(&names, 1).await);
                    fake.freeze();
                    fake.set_clock_offset_ms(offset);
                    let now = now_ms() + offset;
                    for symbol in &symbols {
                        fake.set_history(symbol, shaped_history(symbol, now, &longer, window));
                    }
                    let driver = Arc::new(Driver {
                        period_ms: AtomicU64::new(period.as_millis().max(1) as u64),
                        forming_sent: AtomicU64::new(0),
                        rounds: Mutex::new(Vec::new()),
                    });
                    tokio::spawn(Arc::clone(&driver).run(Arc::clone(&fake), symbols, offset));
                    let _ = started_tx.send((fake, driver));
                    let _ = stopped.await;
                });
            })?;
        let (fake, driver) = started_rx.recv()?;
        Ok(Self {
            fake,
            driver,
            offset,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Market {
    /// Now on the fake's clock (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        now_ms() + self.offset
    }
}

impl Drop for Market {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|stop| stop.send(()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The open time of the minute holding `ms`.
pub fn minute_open(ms: i64) -> i64 {
    ms.div_euclid(MINUTE) * MINUTE
}

/// One contract's closed minutes up to the one before `now` (the fake's clock): every minute of the
/// longest interval's bucket open now (the service fetches those, so that bucket
/// closes complete) and of the last `window + 20` minutes; before that, one minute
/// at the start of each of the `window + 2` newest buckets of every longer
/// interval, so the fake's klines of that interval (built from its minutes) hold
/// a candle per bucket. A few hundred minutes per contract instead of the 145,000
/// that a hundred days would take.
pub fn shaped_history(symbol: &str, now: i64, longer: &[i64], window: usize) -> Vec<Candle> {
    let current = minute_open(now);
    let longest = longer.iter().copied().max().unwrap_or(MINUTE);
    let dense_from =
        (current.div_euclid(longest) * longest).min(current - (window as i64 + 20) * MINUTE);
    let mut opens: BTreeSet<i64> = (dense_from / MINUTE..current / MINUTE)
        .map(|m| m * MINUTE)
        .collect();
    for &length in longer {
        let open_now = current.div_euclid(length) * length;
        opens.extend((1..=window as i64 + 2).map(|k| open_now - k * length));
    }
    let mut candles: Vec<Candle> = Vec::with_capacity(opens.len());
    for open_time in opens {
        let candle = minute(symbol, open_time, candles.last());
        candles.push(candle);
    }
    candles
}

/// A made-up closed minute of `symbol` following `previous`, its decimals those
/// the fake lists for the symbol.
fn minute(symbol: &str, open_time: i64, previous: Option<&Candle>) -> Candle {
    let (price_decimals, quantity_decimals) = precisions(symbol);
    let round = |value: f64, decimals: usize| {
        let scale = 10f64.powi(decimals as i32);
        (value * scale).round() / scale
    };
    let open = previous.map_or(start_price(symbol), |p| p.close);
    let step = (open_time / MINUTE) as u64 ^ symbol.bytes().map(u64::from).sum::<u64>();
    let change = ((step.wrapping_mul(2_654_435_761) % 401) as f64 - 200.0) / 100_000.0;
    let close = round(open * (1.0 + change), price_decimals);
    let volume = round(100.0 + (step % 97) as f64 + 0.125, quantity_decimals);
    let quote = |volume: f64| round(volume * close, price_decimals + quantity_decimals);
    Candle {
        symbol: symbol.to_owned(),
        interval: "1m".to_owned(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open,
        high: round(open.max(close) * 1.0005, price_decimals),
        low: round(open.min(close) * 0.9995, price_decimals),
        close,
        volume,
        quote_volume: quote(volume),
        taker_buy_volume: round(volume / 2.0, quantity_decimals),
        taker_buy_quote_volume: quote(round(volume / 2.0, quantity_decimals)),
        trades: 1_000 + (step % 500) as i64,
    }
}

/// Where a contract's prices start: the fake's own levels for the majors (its
/// precisions follow them), 100 for the generated ones.
fn start_price(symbol: &str) -> f64 {
    match symbol {
        "BTCUSDT" => 84_000.0,
        "ETHUSDT" => 3_000.0,
        "BNBUSDT" => 900.0,
        "SOLUSDT" => 140.0,
        "XRPUSDT" => 2.1,
        _ => 100.0,
    }
}

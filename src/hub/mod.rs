//! The in-memory windows of recent closed candles per (symbol, interval), each
//! serialized once into shared bytes, and the fan-out of those bytes to every
//! connection; longer intervals are built here from the ingested base candles.
//!
//! Windows change once per interval per coin and are read by every client, so the
//! JSON is built when a window changes, never per client. Connections watch one
//! [`Snapshot`]; a client that falls behind skips straight to the newest message of
//! each coin instead of queueing old ones. Candles still forming go out on a
//! separate channel ([`FormingSnapshot`]) that only `live=true` clients watch.

use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use chrono_tz::Tz;
use tokio::sync::watch;

mod base;
mod build;
mod forming;
mod message;
mod seed;
mod symbols;
mod views;
mod window;

use crate::candle::indicators::MAX_PERIOD;
use crate::candle::{BucketBuilder, Candle, Indicator, Interval, Notations};
use views::{Slot, Views};
use window::Window;

pub use forming::{FormingFrame, FormingSnapshot};
pub use message::{
    CandleEntry, CandlesMessage, CoinMessage, Format, FormingMessage, IndicatorValues, StoredCandle,
};
pub use views::HeldView;

/// Closes kept per (coin, interval) beyond the window, so an indicator of the longest
/// period agrees with TA-Lib on every candle shown: 15 × N earlier closes.
pub const INDICATOR_WARMUP: usize = 15 * MAX_PERIOD;

/// What a client asked to see of each coin: how many candles, in which format, at
/// which interval (an index into the served intervals), with which indicators.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    pub limit: usize,
    pub format: Format,
    pub interval: usize,
    pub indicators: Arc<[Indicator]>,
}

/// The newest candle a window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newest {
    /// Its open time, ms since the epoch (UTC).
    pub open_time: i64,
    /// Whether the window holds all the candles it keeps.
    pub window_full: bool,
}

/// How many candles clients see and the hub keeps, from `HISTORY_LEN`,
/// `HISTORY_MAX` and `TIME_ZONE`.
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// Candles per coin in each plain `/` message.
    pub history_len: usize,
    /// Candles per coin kept in memory, the most `?limit=` may ask for.
    pub history_max: usize,
    /// The zone of the `time` strings.
    pub time_zone: Tz,
    /// `SYMBOLS=*`: the longer intervals' windows are seeded with the exchange's
    /// candles, not built from deep base history, and keep no closes behind them
    /// for indicator warm-up (the base window does): 500 contracts × 5 longer
    /// intervals × 7,601 closes would be over 300 MB once built up.
    pub seeded: bool,
}

impl WindowOptions {
    /// Candles kept in memory per coin: `HISTORY_MAX`, or `HISTORY_LEN` if larger.
    pub fn window_len(&self) -> usize {
        self.history_max.max(self.history_len)
    }
}

/// Every (coin, interval) current message, coin-major ([`slot`]): a coin added
/// later appends its frames, so no index ever moves.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub coins: Vec<CoinFrame>,
    intervals: usize,
}

impl Snapshot {
    /// The frame of the coin at `position` at the served interval `interval`.
    pub fn frame(&self, interval: usize, position: usize) -> &CoinFrame {
        &self.coins[slot(self.intervals, interval, position)]
    }

    /// How many coins the snapshot holds.
    pub fn symbols(&self) -> usize {
        self.coins.len() / self.intervals
    }
}

/// Where the window of the coin at `position` at served interval `interval` sits in
/// every per-window vector (windows, frames, forming candles, cached renderings),
/// given `intervals` served intervals.
pub fn slot(intervals: usize, interval: usize, position: usize) -> usize {
    position * intervals + interval
}

/// One (coin, interval) window, its plain message and versions that change with it.
#[derive(Debug, Clone)]
pub struct CoinFrame {
    /// Bumped each time the window or the closes behind it change.
    pub version: u64,
    /// Bumped only when the candles a client sees change.
    pub shown_version: u64,
    /// The DESIGN.md §3 message (base interval only; empty for the others).
    pub text: Utf8Bytes,
    /// The newest closed candle's open time (ms since the epoch, UTC).
    pub newest_open_time: Option<i64>,
    /// The window at this version, for rendering other views without a lock.
    window: Arc<Window>,
}

impl CoinFrame {
    /// The version `view` changes with: indicators also move when older closes
    /// arrive (a deep backfill); other views only when shown candles change.
    pub fn version_for(&self, view: &View) -> u64 {
        if view.indicators.is_empty() {
            self.shown_version
        } else {
            self.version
        }
    }
}

/// Cheap to clone; all clones share the windows and the published snapshot.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// The coins, in position order; grows when a contract is listed.
    symbols: RwLock<symbols::Symbols>,
    intervals: Vec<Interval>,
    /// Per served interval, the one its buckets are built from: the longest
    /// shorter one that nests in it ([`Interval::nests_in`]), else the base (index
    /// 0; the base's own entry is unused).
    sources: Vec<usize>,
    history_max: usize,
    /// Candles a window keeps in all (shown, the one before, indicator warm-up).
    depth: usize,
    /// [`WindowOptions::seeded`].
    seeded: bool,
    time_zone: Tz,
    default_view: View,
    ledger: Mutex<Ledger>,
    /// Held views' messages, rendered once per coin version and shared.
    views: Views,
    published: watch::Sender<Arc<Snapshot>>,
    forming: watch::Sender<Arc<FormingSnapshot>>,
    /// How the exchange writes each symbol's decimals, learned by the exchange
    /// client, read by whoever writes candles in Binance's own format.
    notations: Arc<Notations>,
}

/// What the exchange reader changes, under one lock.
struct Ledger {
    /// Copy on write, coin-major like [`Snapshot::coins`]: a published snapshot
    /// keeps the windows it was built from.
    windows: Vec<Arc<Window>>,
    /// Per coin, one builder per served interval after the base, each fed by its
    /// source interval's candles.
    builders: Vec<Vec<BucketBuilder>>,
}

impl Hub {
    /// A hub with empty windows for each symbol at each of `intervals` (the first is
    /// the ingested base), keeping `HISTORY_MAX` candles per window.
    pub fn new(symbols: &[String], intervals: &[Interval], options: &WindowOptions) -> Self {
        let history_max = options.window_len();
        let default_view = View {
            limit: options.history_len,
            format: Format::Compact,
            interval: 0,
            indicators: Arc::new([]),
        };
        let snapshot = Snapshot {
            coins: Vec::new(),
            intervals: intervals.len(),
        };
        let (published, _) = watch::channel(Arc::new(snapshot));
        let (forming, _) = watch::channel(Arc::new(FormingSnapshot::empty(0)));
        let hub = Self {
            inner: Arc::new(HubInner {
                symbols: RwLock::new(symbols::Symbols::default()),
                intervals: intervals.to_vec(),
                sources: build::sources(intervals),
                history_max,
                depth: history_max + 1 + INDICATOR_WARMUP,
                seeded: options.seeded,
                time_zone: options.time_zone,
                default_view,
                ledger: Mutex::new(Ledger {
                    windows: Vec::new(),
                    builders: Vec::new(),
                }),
                views: Views::default(),
                published,
                forming,
                notations: Arc::default(),
            }),
        };
        hub.add_symbols(symbols);
        hub
    }

    /// Every coin the hub holds, in position order: `SYMBOLS` in client order, then
    /// contracts listed since (with `SYMBOLS=*`), followed or let go.
    pub fn symbols(&self) -> Arc<[String]> {
        Arc::clone(&self.inner.symbols.read().expect("symbols lock").names)
    }

    /// How the exchange writes each followed symbol's prices and volumes.
    pub fn notations(&self) -> &Arc<Notations> {
        &self.inner.notations
    }

    /// The served intervals, shortest (the ingested base) first.
    pub fn intervals(&self) -> &[Interval] {
        &self.inner.intervals
    }

    /// Whether the longer intervals' windows are seeded with the exchange's own
    /// candles rather than built from deep base history (`SYMBOLS=*`).
    pub fn seeded(&self) -> bool {
        self.inner.seeded
    }

    /// The index of the served interval named `name`.
    pub fn interval_index(&self, name: &str) -> Option<usize> {
        self.inner.intervals.iter().position(|i| i.name() == name)
    }

    /// Republishes each window `changed` marks (called under the ledger lock, so
    /// snapshots follow the windows' order of change); returns how many.
    fn publish(&self, windows: &[Arc<Window>], changed: &[window::Change]) -> usize {
        let intervals = self.inner.intervals.len();
        let count = changed.iter().filter(|c| c.any).count();
        if count > 0 {
            self.inner.published.send_modify(|snapshot| {
                let snapshot = Arc::make_mut(snapshot);
                for (index, change) in changed.iter().enumerate().filter(|(_, c)| c.any) {
                    let frame = &mut snapshot.coins[index];
                    frame.version += 1;
                    if change.shown {
                        frame.shown_version += 1;
                        if index.is_multiple_of(intervals) {
                            frame.text = windows[index].render(&self.inner.default_view);
                        }
                    }
                    frame.newest_open_time = windows[index].newest_open_time();
                    frame.window = Arc::clone(&windows[index]);
                }
            });
        }
        count
    }

    /// The position of `symbol` among the coins held, if it is one.
    pub fn position(&self, symbol: &str) -> Option<usize> {
        let symbols = self.inner.symbols.read().expect("symbols lock");
        symbols.positions.get(symbol).copied()
    }

    /// The view plain `/` clients get.
    pub fn default_view(&self) -> View {
        self.inner.default_view.clone()
    }

    /// The most candles per coin a view may ask for.
    pub fn history_max(&self) -> usize {
        self.inner.history_max
    }

    /// Holds `view` for a client: while held, its messages are rendered once per
    /// coin version and shared; when the last holder drops it, they are dropped.
    pub fn hold(&self, view: View) -> HeldView {
        let cached = view != self.inner.default_view;
        if cached {
            self.inner.views.hold(view.clone());
        }
        HeldView::new(self.clone(), view, cached)
    }

    /// Distinct non-default views held by clients now: the size of the view cache.
    pub fn cached_views(&self) -> usize {
        self.inner.views.len()
    }

    /// The message of the coin at `position` for `view`, exactly as of `snapshot`.
    /// The default view's bytes come from `snapshot`; a held view's are rendered once
    /// per coin version, outside any lock the exchange reader takes, and shared.
    pub fn message(&self, snapshot: &Snapshot, position: usize, view: &View) -> Utf8Bytes {
        let frame = snapshot.frame(view.interval, position);
        if *view == self.inner.default_view {
            return frame.text.clone();
        }
        let index = slot(self.inner.intervals.len(), view.interval, position);
        match self.inner.views.slot(view, index, frame.version_for(view)) {
            Slot::Shared(rendering) => rendering
                .text
                .get_or_init(|| frame.window.render(view))
                .clone(),
            Slot::Own => frame.window.render(view),
        }
    }

    /// The `candles` message of the coin at `position` holding every candle opened
    /// after `since` (ms since the epoch, UTC), newest first, exactly as of
    /// `snapshot`; `None` when the window does not reach back that far.
    pub fn message_after(
        &self,
        snapshot: &Snapshot,
        position: usize,
        view: &View,
        since: i64,
    ) -> Option<Utf8Bytes> {
        snapshot
            .frame(view.interval, position)
            .window
            .render_after(view, since)
    }

    /// The candles the window of the coin at `position` holds at the served interval
    /// `interval` as of `snapshot`, oldest first.
    pub fn window_candles(
        &self,
        snapshot: &Snapshot,
        interval: usize,
        position: usize,
    ) -> Vec<Candle> {
        let window = &snapshot.frame(interval, position).window;
        window.candles.iter().cloned().collect()
    }

    /// The snapshot published now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.published.borrow().clone()
    }

    /// The current snapshot and a receiver that wakes when it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.published.subscribe()
    }
}

/// Inserts `candle` into the window at `slot`, noting what changed; whether
/// anything did.
fn merge(change: &mut window::Change, slot: &mut Arc<Window>, candle: Candle) -> bool {
    let inserted = Arc::make_mut(slot).insert(candle);
    change.shown |= inserted.shown;
    change.any |= inserted.any;
    inserted.any
}

#[cfg(test)]
mod build_tests;
#[cfg(test)]
mod interval_tests;
#[cfg(test)]
mod tests;

//! The in-memory window of recent closed candles per symbol, each serialized once into
//! shared bytes, and the fan-out of those bytes to every connection.
//!
//! Windows change once per interval per coin and are read by every client, so the
//! JSON is built when a window changes, never per client. Connections watch one
//! [`Snapshot`]; a client that falls behind skips straight to the newest message of
//! each coin instead of queueing old ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use chrono_tz::Tz;
use tokio::sync::watch;

mod message;
mod views;
mod window;

use crate::candle::Candle;
use views::{Slot, Views};
use window::Window;

pub use message::{CandleEntry, CandlesMessage, CoinMessage, Format};
pub use views::HeldView;

/// What a client asked to see of each coin: how many candles, in which format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct View {
    pub limit: usize,
    pub format: Format,
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
}

impl WindowOptions {
    /// Candles kept in memory per coin: `HISTORY_MAX`, or `HISTORY_LEN` if larger.
    pub fn window_len(&self) -> usize {
        self.history_max.max(self.history_len)
    }
}

/// Every coin's current message, in `SYMBOLS` order.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub coins: Vec<CoinFrame>,
}

/// One coin's serialized message and a version that changes with it.
#[derive(Debug, Clone)]
pub struct CoinFrame {
    /// Bumped each time the coin's window changes.
    pub version: u64,
    /// The DESIGN.md §3 message, ready to send.
    pub text: Utf8Bytes,
    /// The window at this version, for rendering other views without a lock.
    window: Arc<Window>,
}

/// Cheap to clone; all clones share the windows and the published snapshot.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    symbols: Vec<String>,
    positions: HashMap<String, usize>,
    interval: String,
    history_max: usize,
    default_view: View,
    /// Copy on write: a published snapshot keeps the windows it was built from.
    windows: Mutex<Vec<Arc<Window>>>,
    /// Held views' messages, rendered once per coin version and shared.
    views: Views,
    published: watch::Sender<Arc<Snapshot>>,
}

impl Hub {
    /// A hub with an empty window for each symbol, keeping `history_max` candles
    /// per coin; the published messages hold `history_len` of them.
    pub fn new(
        symbols: &[String],
        interval: &str,
        history_len: usize,
        history_max: usize,
        zone: Tz,
    ) -> Self {
        let history_max = history_max.max(history_len);
        let default_view = View {
            limit: history_len,
            format: Format::Compact,
        };
        let windows: Vec<Arc<Window>> = symbols
            .iter()
            .map(|symbol| Arc::new(Window::new(symbol.clone(), history_max, zone)))
            .collect();
        let snapshot = Snapshot {
            coins: windows
                .iter()
                .map(|window| CoinFrame {
                    version: 0,
                    text: window.render(default_view),
                    window: Arc::clone(window),
                })
                .collect(),
        };
        let (published, _) = watch::channel(Arc::new(snapshot));
        Self {
            inner: Arc::new(HubInner {
                symbols: symbols.to_vec(),
                positions: symbols
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), i))
                    .collect(),
                interval: interval.to_owned(),
                history_max,
                default_view,
                windows: Mutex::new(windows),
                views: Views::default(),
                published,
            }),
        }
    }

    /// The configured symbols, in client order.
    pub fn symbols(&self) -> &[String] {
        &self.inner.symbols
    }

    /// Merges closed candles into their windows and republishes each coin whose window
    /// changed. Candles of other symbols or intervals are ignored; a candle already
    /// held with the same values changes nothing. Returns how many coins changed.
    pub fn apply(&self, candles: &[Candle]) -> usize {
        let mut windows = self.inner.windows.lock().expect("hub lock poisoned");
        let mut changed = vec![false; windows.len()];
        for candle in candles {
            if candle.interval != self.inner.interval {
                continue;
            }
            if let Some(&position) = self.inner.positions.get(&candle.symbol) {
                changed[position] |= Arc::make_mut(&mut windows[position]).insert(candle.clone());
            }
        }
        let count = changed.iter().filter(|c| **c).count();
        if count > 0 {
            self.inner.published.send_modify(|snapshot| {
                let snapshot = Arc::make_mut(snapshot);
                for (position, _) in changed.iter().enumerate().filter(|(_, c)| **c) {
                    let frame = &mut snapshot.coins[position];
                    frame.version += 1;
                    frame.text = windows[position].render(self.inner.default_view);
                    frame.window = Arc::clone(&windows[position]);
                }
            });
        }
        count
    }

    /// The newest candle held for `symbol`, and whether its window is full (holds
    /// `HISTORY_MAX` candles plus the one before them).
    pub fn newest(&self, symbol: &str) -> Option<Newest> {
        let position = *self.inner.positions.get(symbol)?;
        let windows = self.inner.windows.lock().expect("hub lock poisoned");
        let window = &windows[position];
        window.candles.back().map(|c| Newest {
            open_time: c.open_time,
            window_full: window.candles.len() > window.capacity,
        })
    }

    /// Open times (ms since the epoch, UTC) of the candles missing from `symbol`'s
    /// window between its oldest candle (or `from`, if later) and `until`
    /// (exclusive), on a grid of `step` ms. Empty when nothing is held yet.
    pub fn missing(&self, symbol: &str, from: i64, until: i64, step: i64) -> Vec<i64> {
        let Some(&position) = self.inner.positions.get(symbol) else {
            return Vec::new();
        };
        let windows = self.inner.windows.lock().expect("hub lock poisoned");
        let candles = &windows[position].candles;
        let Some(oldest) = candles.front().map(|c| c.open_time) else {
            return Vec::new();
        };
        let mut held = candles.iter().map(|c| c.open_time).peekable();
        let mut missing = Vec::new();
        let mut open_time = oldest.max(from);
        while open_time < until {
            while held.next_if(|t| *t < open_time).is_some() {}
            if held.peek() != Some(&open_time) {
                missing.push(open_time);
            }
            open_time += step;
        }
        missing
    }

    /// The candle of `symbol` opened at `open_time`, if the window holds it.
    pub fn candle_at(&self, symbol: &str, open_time: i64) -> Option<Candle> {
        let position = *self.inner.positions.get(symbol)?;
        let windows = self.inner.windows.lock().expect("hub lock poisoned");
        let candles = &windows[position].candles;
        let found = candles
            .binary_search_by_key(&open_time, |c| c.open_time)
            .ok()?;
        Some(candles[found].clone())
    }

    /// The position of `symbol` in `SYMBOLS`, if configured.
    pub fn position(&self, symbol: &str) -> Option<usize> {
        self.inner.positions.get(symbol).copied()
    }

    /// The view plain `/` clients get.
    pub fn default_view(&self) -> View {
        self.inner.default_view
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
            self.inner.views.hold(view, self.inner.symbols.len());
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
    pub fn message(&self, snapshot: &Snapshot, position: usize, view: View) -> Utf8Bytes {
        let frame = &snapshot.coins[position];
        if view == self.inner.default_view {
            return frame.text.clone();
        }
        match self.inner.views.slot(view, position, frame.version) {
            Slot::Shared(rendering) => rendering
                .text
                .get_or_init(|| frame.window.render(view))
                .clone(),
            Slot::Own => frame.window.render(view),
        }
    }

    /// The current snapshot and a receiver that wakes when it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.published.subscribe()
    }
}

#[cfg(test)]
mod tests;

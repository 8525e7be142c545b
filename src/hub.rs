//! The in-memory window of recent closed candles per symbol, each serialized once into
//! shared bytes, and the fan-out of those bytes to every connection.
//!
//! Windows change once per interval per coin and are read by every client, so the
//! JSON is built when a window changes, never per client. Connections watch one
//! [`Snapshot`]; a client that falls behind skips straight to the newest message of
//! each coin instead of queueing old ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use chrono_tz::Tz;
use tokio::sync::watch;

use crate::candle::{Candle, Operation};
use crate::protocol::{CandleEntry, CandlesMessage, CoinMessage, Format};

/// What a client asked to see of each coin: how many candles, in which format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct View {
    pub limit: usize,
    pub format: Format,
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
    windows: Mutex<Vec<Window>>,
    /// Other views' messages, rendered once per coin version and shared.
    rendered: Mutex<HashMap<(usize, View), (u64, Utf8Bytes)>>,
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
        let windows: Vec<Window> = symbols
            .iter()
            .map(|symbol| Window::new(symbol.clone(), history_max, zone))
            .collect();
        let snapshot = Snapshot {
            coins: windows
                .iter()
                .map(|window| CoinFrame {
                    version: 0,
                    text: window.render(default_view),
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
                rendered: Mutex::new(HashMap::new()),
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
                changed[position] |= windows[position].insert(candle.clone());
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
                }
            });
        }
        count
    }

    /// Open time of the newest candle held for `symbol`, and whether the window is
    /// full (holds `HISTORY_MAX` candles plus the one before them).
    pub fn newest_open_time(&self, symbol: &str) -> Option<(i64, bool)> {
        let position = *self.inner.positions.get(symbol)?;
        let windows = self.inner.windows.lock().expect("hub lock poisoned");
        let window = &windows[position];
        let full = window.candles.len() > window.capacity;
        window.candles.back().map(|c| (c.open_time, full))
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

    /// The message of the coin at `position` for `view`. The default view's bytes
    /// come from `snapshot`; others are rendered once per coin version and shared by
    /// every client with the same view.
    pub fn message(&self, snapshot: &Snapshot, position: usize, view: View) -> Utf8Bytes {
        let frame = &snapshot.coins[position];
        if view == self.inner.default_view {
            return frame.text.clone();
        }
        let mut rendered = self.inner.rendered.lock().expect("hub lock poisoned");
        if let Some((version, text)) = rendered.get(&(position, view))
            && *version >= frame.version
        {
            return text.clone();
        }
        // Versions only grow, and the windows are read under the same lock order
        // (rendered, then windows) everywhere, so the cache never goes backwards.
        let windows = self.inner.windows.lock().expect("hub lock poisoned");
        let version = self.inner.published.borrow().coins[position].version;
        let text = windows[position].render(view);
        rendered.insert((position, view), (version, text.clone()));
        text
    }

    /// The current snapshot and a receiver that wakes when it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.inner.published.subscribe()
    }
}

/// The newest `capacity` closed candles of one coin, oldest first, plus one more
/// candle before them so the oldest one shown still has a previous close.
struct Window {
    symbol: String,
    capacity: usize,
    zone: Tz,
    candles: VecDeque<Candle>,
}

impl Window {
    fn new(symbol: String, capacity: usize, zone: Tz) -> Self {
        Self {
            symbol,
            capacity,
            zone,
            candles: VecDeque::with_capacity(capacity + 1),
        }
    }

    /// Inserts in open-time order, replacing a candle of the same minute. Returns
    /// whether what clients see (or the reference candle behind it) changed.
    fn insert(&mut self, candle: Candle) -> bool {
        match self
            .candles
            .binary_search_by_key(&candle.open_time, |c| c.open_time)
        {
            Ok(found) if self.candles[found] == candle => false,
            Ok(found) => {
                self.candles[found] = candle;
                true
            }
            Err(0) if self.candles.len() > self.capacity => false, // older than all we keep
            Err(position) => {
                self.candles.insert(position, candle);
                if self.candles.len() > self.capacity + 1 {
                    self.candles.pop_front();
                }
                true
            }
        }
    }

    /// The client message for this window in `view`, newest first.
    fn render(&self, view: View) -> Utf8Bytes {
        let shown = self.candles.len().min(view.limit).min(self.capacity);
        let first_shown = self.candles.len() - shown;
        if view.format == Format::Candles {
            let message = CandlesMessage {
                coin: &self.symbol,
                candles: self
                    .candles
                    .range(first_shown..)
                    .rev()
                    .map(CandleEntry::from)
                    .collect(),
            };
            return Utf8Bytes::from(message.to_json());
        }
        let mut message = CoinMessage {
            coin: &self.symbol,
            values: Vec::with_capacity(shown),
            operations: Vec::with_capacity(shown),
            time: Vec::with_capacity(shown),
        };
        for index in (first_shown..self.candles.len()).rev() {
            let candle = &self.candles[index];
            let previous = index.checked_sub(1).map(|i| &self.candles[i]);
            message.values.push(candle.close);
            message
                .operations
                .push(Operation::of(candle, previous).as_str());
            message.time.push(candle.close_label(self.zone));
        }
        Utf8Bytes::from(message.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const T0: i64 = 1_763_791_500_000; // 2025-11-22 06:05 UTC

    fn candle(symbol: &str, minute: i64, open: f64, close: f64) -> Candle {
        Candle {
            symbol: symbol.into(),
            interval: "1m".into(),
            open_time: T0 + minute * MINUTE,
            close_time: T0 + (minute + 1) * MINUTE - 1,
            open,
            high: open.max(close),
            low: open.min(close),
            close,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 0.5,
            trades: 1,
        }
    }

    fn hub(history_len: usize) -> Hub {
        Hub::new(
            &["BTCUSDT".into(), "ETHUSDT".into()],
            "1m",
            history_len,
            history_len,
            Tz::UTC,
        )
    }

    fn message(hub: &Hub, position: usize) -> serde_json::Value {
        let snapshot = hub.subscribe().borrow().clone();
        serde_json::from_str(snapshot.coins[position].text.as_str()).unwrap()
    }

    #[test]
    fn starts_with_empty_messages_for_every_coin() {
        let hub = hub(3);
        assert_eq!(
            message(&hub, 0),
            serde_json::json!({"coin":"BTCUSDT","values":[],"operations":[],"time":[]})
        );
        assert_eq!(message(&hub, 1)["coin"], "ETHUSDT");
    }

    #[test]
    fn newest_first_with_operations_from_previous_closes() {
        let hub = hub(3);
        hub.apply(&[
            candle("BTCUSDT", 0, 10.0, 11.0),
            candle("BTCUSDT", 1, 11.0, 10.5), // SELL vs 11
            candle("BTCUSDT", 2, 10.5, 10.5), // BUY (equal)
            candle("BTCUSDT", 3, 10.5, 12.0), // BUY
        ]);
        assert_eq!(
            message(&hub, 0),
            serde_json::json!({
                "coin":"BTCUSDT",
                "values":[12.0,10.5,10.5],
                "operations":["BUY","BUY","SELL"],
                "time":["06:09","06:08","06:07"]
            })
        );
        assert_eq!(
            hub.newest_open_time("BTCUSDT"),
            Some((T0 + 3 * MINUTE, true))
        );
        assert_eq!(hub.newest_open_time("ETHUSDT"), None);
    }

    #[test]
    fn the_only_candle_compares_with_its_open() {
        let hub = hub(3);
        hub.apply(&[candle("ETHUSDT", 0, 10.0, 9.0)]);
        assert_eq!(hub.newest_open_time("ETHUSDT"), Some((T0, false)));
        assert_eq!(message(&hub, 1)["operations"], serde_json::json!(["SELL"]));
    }

    #[test]
    fn late_and_duplicate_candles_keep_the_window_ordered() {
        let hub = hub(3);
        let mut rx = hub.subscribe();
        rx.borrow_and_update();
        assert_eq!(
            hub.apply(&[
                candle("BTCUSDT", 0, 1.0, 1.0),
                candle("BTCUSDT", 2, 1.0, 3.0)
            ]),
            1
        );
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        // The same candle again changes nothing and wakes no one.
        assert_eq!(hub.apply(&[candle("BTCUSDT", 2, 1.0, 3.0)]), 0);
        assert!(!rx.has_changed().unwrap());
        // A late candle lands in the middle and recomputes the one after it.
        assert_eq!(hub.apply(&[candle("BTCUSDT", 1, 1.0, 4.0)]), 1);
        assert_eq!(
            message(&hub, 0)["values"],
            serde_json::json!([3.0, 4.0, 1.0])
        );
        assert_eq!(
            message(&hub, 0)["operations"],
            serde_json::json!(["SELL", "BUY", "BUY"])
        );
        let version = hub.subscribe().borrow().coins[0].version;
        // A candle older than everything kept is ignored once the window is full.
        hub.apply(&[candle("BTCUSDT", 3, 3.0, 5.0)]);
        assert_eq!(hub.apply(&[candle("BTCUSDT", -5, 1.0, 1.0)]), 0);
        assert_eq!(
            message(&hub, 0)["values"],
            serde_json::json!([5.0, 3.0, 4.0])
        );
        // The hidden reference candle (minute 0) still drives the oldest operation.
        assert_eq!(
            message(&hub, 0)["operations"],
            serde_json::json!(["BUY", "SELL", "BUY"])
        );
        assert_eq!(hub.subscribe().borrow().coins[0].version, version + 1);
    }

    #[test]
    fn other_views_are_rendered_from_the_same_window_and_cached_per_version() {
        let hub = Hub::new(&["BTCUSDT".into()], "1m", 2, 4, Tz::UTC);
        hub.apply(
            &(0..6)
                .map(|m| candle("BTCUSDT", m, 1.0, m as f64))
                .collect::<Vec<_>>(),
        );
        let snapshot = hub.subscribe().borrow().clone();
        let parse =
            |text: Utf8Bytes| serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap();
        // The default view is the published message itself.
        assert_eq!(
            hub.message(&snapshot, 0, hub.default_view()).as_str(),
            snapshot.coins[0].text.as_str()
        );
        let longer = View {
            limit: 4,
            format: Format::Compact,
        };
        assert_eq!(
            parse(hub.message(&snapshot, 0, longer))["values"],
            serde_json::json!([5.0, 4.0, 3.0, 2.0])
        );
        let candles = View {
            limit: 2,
            format: Format::Candles,
        };
        let message = parse(hub.message(&snapshot, 0, candles));
        assert_eq!(message["coin"], "BTCUSDT");
        assert_eq!(message["candles"][0]["open_time"], T0 + 5 * MINUTE);
        assert_eq!(message["candles"][0]["close_time"], T0 + 6 * MINUTE - 1);
        assert_eq!(message["candles"][1]["close"], 4.0);
        assert_eq!(message["candles"].as_array().unwrap().len(), 2);
        // Asking for more than is kept gives what is kept.
        let all = View {
            limit: 50,
            format: Format::Compact,
        };
        assert_eq!(
            parse(hub.message(&snapshot, 0, all))["values"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        // A new close invalidates the cached rendering.
        hub.apply(&[candle("BTCUSDT", 6, 1.0, 6.0)]);
        let snapshot = hub.subscribe().borrow().clone();
        assert_eq!(
            parse(hub.message(&snapshot, 0, longer))["values"],
            serde_json::json!([6.0, 5.0, 4.0, 3.0])
        );
    }

    #[test]
    fn a_corrected_candle_replaces_the_old_one() {
        let hub = hub(3);
        hub.apply(&[candle("BTCUSDT", 0, 1.0, 2.0)]);
        hub.apply(&[candle("BTCUSDT", 0, 1.0, 0.5)]);
        assert_eq!(message(&hub, 0)["values"], serde_json::json!([0.5]));
    }

    #[test]
    fn other_symbols_and_intervals_are_ignored() {
        let hub = hub(3);
        let mut other = candle("BTCUSDT", 0, 1.0, 2.0);
        other.interval = "5m".into();
        assert_eq!(hub.apply(&[candle("DOGEUSDT", 0, 1.0, 2.0), other]), 0);
    }

    #[test]
    fn only_changed_coins_get_a_new_version() {
        let hub = hub(3);
        hub.apply(&[candle("ETHUSDT", 0, 1.0, 2.0)]);
        let snapshot = hub.subscribe().borrow().clone();
        assert_eq!(snapshot.coins[0].version, 0);
        assert_eq!(snapshot.coins[1].version, 1);
    }
}

//! The coins the hub holds and how that set changes while the service runs: a
//! contract listed since start (`SYMBOLS=*`) gets windows of its own, appended so
//! no other coin's index moves; a contract let go keeps its windows (its history
//! is still served) but is no longer followed. Which coins a plain `/` client gets
//! is set once, at start.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;

use super::window::Window;
use super::{CoinFrame, Hub, Ledger, slot};
use crate::candle::BucketBuilder;

/// The symbol table: names by position and back, and who is followed.
#[derive(Debug, Default)]
pub(super) struct Symbols {
    /// Upper case, by position; replaced whole when a coin is added.
    pub(super) names: Arc<[String]>,
    pub(super) positions: HashMap<String, usize>,
    /// Per position: whether the exchange client follows it now.
    followed: Vec<bool>,
    /// The positions a plain `/` client gets, in its order.
    plain: Vec<usize>,
}

impl Hub {
    /// Adds windows for each of `symbols` (upper case) the hub does not hold yet, at
    /// the end, followed; returns the symbols added. A symbol held but let go is
    /// followed again. The first call (from [`Hub::new`]) also sets what plain `/`
    /// clients get: every coin given.
    pub fn add_symbols(&self, symbols: &[String]) -> Vec<String> {
        let inner = &self.inner;
        let intervals = inner.intervals.len();
        let mut ledger = inner.ledger.lock().expect("hub lock poisoned");
        let mut table = inner.symbols.write().expect("symbols lock");
        let first = table.names.is_empty();
        let mut names = table.names.to_vec();
        let mut added = Vec::new();
        for symbol in symbols {
            if let Some(&position) = table.positions.get(symbol) {
                table.followed[position] = true;
                continue;
            }
            let position = names.len();
            names.push(symbol.clone());
            table.positions.insert(symbol.clone(), position);
            table.followed.push(true);
            added.push(symbol.clone());
            let Ledger { windows, builders } = &mut *ledger;
            for (k, interval) in inner.intervals.iter().enumerate() {
                let depth = if k > 0 && inner.seeded {
                    inner.history_max + 1
                } else {
                    inner.depth
                };
                windows.push(Arc::new(Window::new(
                    symbol.clone(),
                    interval.clone(),
                    inner.history_max,
                    depth,
                    inner.time_zone,
                )));
            }
            builders.push(
                (1..intervals)
                    .map(|k| {
                        let source = &inner.intervals[inner.sources[k]];
                        BucketBuilder::new(inner.intervals[k].clone(), source)
                    })
                    .collect(),
            );
        }
        if first {
            table.plain = (0..names.len()).collect();
        }
        table.names = names.into();
        drop(table);
        if added.is_empty() {
            return added;
        }
        let from = ledger.windows.len() - added.len() * intervals;
        let frames: Vec<CoinFrame> = ledger.windows[from..]
            .iter()
            .enumerate()
            .map(|(offset, window)| CoinFrame {
                version: 0,
                shown_version: 0,
                text: if (from + offset).is_multiple_of(intervals) {
                    window.render(&inner.default_view)
                } else {
                    Utf8Bytes::from_static("")
                },
                newest_open_time: None,
                window: Arc::clone(window),
            })
            .collect();
        let count = frames.len();
        // Published under the ledger lock: an `apply` after this sees the frames.
        inner
            .published
            .send_modify(|snapshot| Arc::make_mut(snapshot).coins.extend(frames));
        inner.forming.send_modify(|snapshot| {
            let snapshot = Arc::make_mut(snapshot);
            snapshot.coins.resize(snapshot.coins.len() + count, None);
        });
        debug_assert_eq!(ledger.windows.len(), self.snapshot().coins.len());
        debug_assert_eq!(
            slot(intervals, 0, self.symbols().len()),
            ledger.windows.len()
        );
        added
    }

    /// What a plain `/` client gets from now on: these of the held coins, in this
    /// order (`SYMBOLS=*` sends the five majors, not the whole exchange). Coins not
    /// held are added first.
    #[must_use]
    pub fn with_plain(self, symbols: &[String]) -> Self {
        self.add_symbols(symbols);
        let mut table = self.inner.symbols.write().expect("symbols lock");
        table.plain = symbols
            .iter()
            .filter_map(|s| table.positions.get(s).copied())
            .collect();
        drop(table);
        self
    }

    /// The positions a plain `/` client gets, in its order.
    pub fn plain_positions(&self) -> Vec<usize> {
        self.inner
            .symbols
            .read()
            .expect("symbols lock")
            .plain
            .clone()
    }

    /// Stops following `symbol` (a contract no longer trading): its windows and
    /// history stay served. Returns whether it was followed.
    pub fn let_go(&self, symbol: &str) -> bool {
        let mut table = self.inner.symbols.write().expect("symbols lock");
        let Some(&position) = table.positions.get(symbol) else {
            return false;
        };
        std::mem::replace(&mut table.followed[position], false)
    }

    /// The coins followed now, in position order.
    pub fn followed(&self) -> Vec<String> {
        let table = self.inner.symbols.read().expect("symbols lock");
        table
            .names
            .iter()
            .zip(&table.followed)
            .filter(|(_, followed)| **followed)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

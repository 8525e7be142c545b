//! Which symbols the service follows, and over which connections: as few as Binance
//! allows, each carrying at most [`MAX_STREAMS_PER_CONNECTION`] streams. Symbols
//! followed while running join a connection with room, or a new one; symbols let go
//! leave the connection that carries them, which closes once it carries none.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

use super::Exchange;
use super::requests::MAX_STREAMS_PER_CONNECTION;

/// The followed symbols: in the order they were added (the configured ones first),
/// and as a set for the per-candle check.
#[derive(Debug, Default)]
pub(super) struct Followed {
    order: Vec<String>,
    set: HashSet<String>,
}

impl Followed {
    pub(super) fn new(symbols: &[String]) -> Self {
        let mut followed = Self::default();
        followed.add(symbols);
        followed
    }

    /// Adds the symbols not followed yet; returns them.
    fn add(&mut self, symbols: &[String]) -> Vec<String> {
        let added: Vec<String> = symbols
            .iter()
            .filter(|symbol| self.set.insert((*symbol).clone()))
            .cloned()
            .collect();
        self.order.extend(added.iter().cloned());
        added
    }

    /// Removes the symbols followed now; returns them.
    fn remove(&mut self, symbols: &[String]) -> Vec<String> {
        let removed: Vec<String> = symbols
            .iter()
            .filter(|symbol| self.set.remove(*symbol))
            .cloned()
            .collect();
        self.order.retain(|symbol| self.set.contains(symbol));
        removed
    }

    pub(super) fn contains(&self, symbol: &str) -> bool {
        self.set.contains(symbol)
    }
}

/// A change to the followed set, on its way to the upstream task.
#[derive(Debug)]
pub(super) enum Change {
    Follow(Vec<String>),
    LetGo(Vec<String>),
}

/// The way from [`Exchange::follow`] and [`Exchange::let_go`] to the upstream task.
#[derive(Debug)]
pub(super) struct Changes {
    sender: mpsc::UnboundedSender<Change>,
    /// Taken by the upstream task when it starts.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Default for Changes {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// The upstream task's view of the connections.
#[derive(Default)]
struct Connections {
    handles: Vec<Handle>,
    /// Connections opened so far, to name each in the logs.
    opened: usize,
}

/// The upstream task's view of one connection.
struct Handle {
    symbols: HashSet<String>,
    /// Dropping it lets the connection go.
    commands: mpsc::UnboundedSender<Command>,
}

/// A change to what one connection carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// Carry these symbols' streams too.
    Follow(Vec<String>),
    /// Stop carrying these.
    LetGo(Vec<String>),
}

/// What one connection carries, and where it hears of changes; the channel's end
/// (its sender dropped) lets the connection go.
#[derive(Debug)]
pub(super) struct Carried {
    /// Upper case, in the order they were added.
    pub(super) symbols: Vec<String>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
}

impl Carried {
    /// Applies `command`; returns the symbols it added.
    pub(super) fn apply(&mut self, command: Command) -> Vec<String> {
        match command {
            Command::Follow(symbols) => {
                let added: Vec<String> = symbols
                    .into_iter()
                    .filter(|symbol| !self.symbols.contains(symbol))
                    .collect();
                self.symbols.extend(added.iter().cloned());
                added
            }
            Command::LetGo(symbols) => {
                self.symbols.retain(|symbol| !symbols.contains(symbol));
                Vec::new()
            }
        }
    }
}

impl Exchange {
    /// Follows `symbols` too (upper-cased; names followed already are skipped):
    /// their candles are accepted from now on and their streams subscribed on a
    /// connection with room, or a new one, and their history fetched. Returns the
    /// symbols that were added. The hub shows only the symbols it was built with.
    pub fn follow(&self, symbols: &[String]) -> Vec<String> {
        let symbols: Vec<String> = symbols.iter().map(|s| s.to_uppercase()).collect();
        let added = self.followed.write().expect("followed lock").add(&symbols);
        if !added.is_empty() {
            // The upstream task holds the receiver for as long as the exchange lives.
            let _ = self.changes.sender.send(Change::Follow(added.clone()));
        }
        added
    }

    /// Stops following `symbols` (upper-cased; names not followed are skipped): their
    /// streams are unsubscribed, and a connection left carrying nothing is closed.
    /// Returns the symbols that were removed.
    pub fn let_go(&self, symbols: &[String]) -> Vec<String> {
        let symbols: Vec<String> = symbols.iter().map(|s| s.to_uppercase()).collect();
        let removed = self
            .followed
            .write()
            .expect("followed lock")
            .remove(&symbols);
        if !removed.is_empty() {
            let mut watch = self.watch.lock().expect("watch lock");
            for symbol in &removed {
                watch.remove(symbol);
            }
            let _ = self.changes.sender.send(Change::LetGo(removed.clone()));
        }
        removed
    }

    /// The symbols followed now: the configured ones, then those followed since, in
    /// that order, less those let go.
    pub fn followed(&self) -> Vec<String> {
        self.followed.read().expect("followed lock").order.clone()
    }

    /// Runs the connections until `cancel`, spreading the followed symbols over them
    /// and passing each change on to the connection it concerns.
    pub(super) async fn upstream(self: &Arc<Self>, cancel: &CancellationToken) {
        let Some(mut changes) = self.changes.receiver.lock().expect("changes lock").take() else {
            return;
        };
        let mut connections = Connections::default();
        self.place(&mut connections, self.followed(), cancel);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                change = changes.recv() => match change {
                    Some(Change::Follow(symbols)) => {
                        if self.market.seed_windows {
                            // A contract listed since start: its longer windows too.
                            let (exchange, cancel) = (Arc::clone(self), cancel.clone());
                            let listed = symbols.clone();
                            self.tasks.spawn(async move {
                                exchange.seed_windows(&listed, &cancel).await;
                            });
                        }
                        self.place(&mut connections, symbols, cancel);
                    }
                    Some(Change::LetGo(symbols)) => remove(&mut connections, &symbols),
                    None => break,
                },
            }
        }
    }

    /// Puts the `symbols` no connection carries yet on connections with room, then on
    /// new ones.
    fn place(
        self: &Arc<Self>,
        connections: &mut Connections,
        symbols: Vec<String>,
        cancel: &CancellationToken,
    ) {
        let handles = &mut connections.handles;
        let symbols: Vec<String> = symbols
            .into_iter()
            .filter(|symbol| !handles.iter().any(|c| c.symbols.contains(symbol)))
            .collect();
        let loads: Vec<usize> = handles.iter().map(|c| c.symbols.len()).collect();
        let cap = self
            .options
            .streams_per_connection
            .clamp(1, MAX_STREAMS_PER_CONNECTION);
        let (joining, new) = plan(&loads, symbols, cap);
        for (index, symbols) in joining {
            let handle = &mut handles[index];
            handle.symbols.extend(symbols.iter().cloned());
            let _ = handle.commands.send(Command::Follow(symbols));
        }
        for symbols in new {
            let (sender, commands) = mpsc::unbounded_channel();
            let id = connections.opened;
            connections.opened += 1;
            info!(
                connection = id,
                streams = symbols.len(),
                "opening an upstream connection"
            );
            handles.push(Handle {
                symbols: symbols.iter().cloned().collect(),
                commands: sender,
            });
            let carried = Carried { symbols, commands };
            self.tasks.spawn(
                Arc::clone(self)
                    .keep_connection(carried, cancel.clone())
                    .instrument(info_span!("connection", id)),
            );
        }
    }
}

/// Takes `symbols` off the connections that carry them; a connection left with none
/// is dropped, which closes it.
fn remove(connections: &mut Connections, symbols: &[String]) {
    connections.handles.retain_mut(|handle| {
        let leaving: Vec<String> = symbols
            .iter()
            .filter(|symbol| handle.symbols.remove(*symbol))
            .cloned()
            .collect();
        if handle.symbols.is_empty() {
            return false;
        }
        if !leaving.is_empty() {
            let _ = handle.commands.send(Command::LetGo(leaving));
        }
        true
    });
}

/// Where [`plan`] puts new symbols: the symbols each existing connection (by index)
/// takes, and each new connection's.
type Placement = (Vec<(usize, Vec<String>)>, Vec<Vec<String>>);

/// Spreads `symbols` over connections carrying `loads` streams each, at most `cap`
/// per connection: first into the room the existing ones have, in order, then over
/// as few new ones as it takes.
fn plan(loads: &[usize], symbols: Vec<String>, cap: usize) -> Placement {
    let mut rest = symbols.into_iter().peekable();
    let mut joining = Vec::new();
    for (index, load) in loads.iter().enumerate() {
        let room = cap.saturating_sub(*load);
        let taken: Vec<String> = rest.by_ref().take(room).collect();
        if !taken.is_empty() {
            joining.push((index, taken));
        }
    }
    let mut new = Vec::new();
    while rest.peek().is_some() {
        new.push(rest.by_ref().take(cap).collect());
    }
    (joining, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("C{i}USDT")).collect()
    }

    #[test]
    fn symbols_fill_the_room_there_is_then_as_few_new_connections_as_it_takes() {
        let (joining, new) = plan(&[], names(1025), MAX_STREAMS_PER_CONNECTION);
        assert!(joining.is_empty());
        assert_eq!(new.iter().map(Vec::len).collect::<Vec<_>>(), [1024, 1]);

        let (joining, new) = plan(&[1024, 1020], names(10), 1024);
        assert_eq!(joining, [(1, names(4))]);
        assert_eq!(new, [names(10)[4..].to_vec()]);

        let (joining, new) = plan(&[3], Vec::new(), 1024);
        assert!(joining.is_empty() && new.is_empty());
    }

    #[test]
    fn the_followed_set_keeps_its_order_and_each_name_once() {
        let mut followed = Followed::new(&names(3));
        assert_eq!(followed.add(&names(4)), names(4)[3..]);
        assert_eq!(
            followed.remove(&["C1USDT".into(), "NONE".into()]),
            ["C1USDT"]
        );
        assert_eq!(followed.order, ["C0USDT", "C2USDT", "C3USDT"]);
        assert!(followed.contains("C3USDT") && !followed.contains("C1USDT"));
    }

    #[test]
    fn changes_add_each_symbol_once_and_remove_what_they_name() {
        let (_sender, commands) = mpsc::unbounded_channel();
        let mut carried = Carried {
            symbols: vec!["BTCUSDT".into()],
            commands,
        };
        let added = carried.apply(Command::Follow(vec!["ETHUSDT".into(), "BTCUSDT".into()]));
        assert_eq!(added, ["ETHUSDT"]);
        assert_eq!(carried.symbols, ["BTCUSDT", "ETHUSDT"]);
        carried.apply(Command::LetGo(vec!["BTCUSDT".into(), "XRPUSDT".into()]));
        assert_eq!(carried.symbols, ["ETHUSDT"]);
    }
}

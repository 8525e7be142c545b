//! The renderings of non-default views, shared by every client that holds the same
//! view and dropped when the last one lets go: memory follows the views in use, not
//! every view ever asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ws::Utf8Bytes;

use super::{Hub, View};

/// One coin's message in one view, for one version of its window; rendered once,
/// by whichever client asks first, outside any lock the exchange reader takes.
#[derive(Debug)]
pub(super) struct Rendering {
    pub(super) version: u64,
    pub(super) text: OnceLock<Utf8Bytes>,
}

/// A held view: how many clients hold it, and its latest rendering per coin.
#[derive(Debug)]
struct Held {
    holders: usize,
    coins: Vec<Option<Arc<Rendering>>>,
}

/// The cache: views currently held, keyed by view.
#[derive(Debug, Default)]
pub(super) struct Views {
    held: Mutex<HashMap<View, Held>>,
}

/// What to render for one message.
pub(super) enum Slot {
    /// Share this rendering (fill it if it is still empty).
    Shared(Arc<Rendering>),
    /// Render for this caller only: the view is not held, or the cache already holds
    /// a newer version than the caller's snapshot (it must get exactly its own).
    Own,
}

impl Views {
    pub(super) fn hold(&self, view: View) {
        let mut held = self.held.lock().expect("views lock poisoned");
        held.entry(view)
            .or_insert_with(|| Held {
                holders: 0,
                coins: Vec::new(),
            })
            .holders += 1;
    }

    fn release(&self, view: &View) {
        let mut held = self.held.lock().expect("views lock poisoned");
        if let Some(entry) = held.get_mut(view) {
            entry.holders -= 1;
            if entry.holders == 0 {
                held.remove(view);
            }
        }
    }

    /// The slot for the window at `index` ([`super::slot`]) at `version` in `view`.
    pub(super) fn slot(&self, view: &View, index: usize, version: u64) -> Slot {
        let mut held = self.held.lock().expect("views lock poisoned");
        let Some(entry) = held.get_mut(view) else {
            return Slot::Own;
        };
        // Grown on demand: coins are added while clients hold views.
        if entry.coins.len() <= index {
            entry.coins.resize(index + 1, None);
        }
        let cached = &mut entry.coins[index];
        match cached {
            Some(rendering) if rendering.version == version => Slot::Shared(Arc::clone(rendering)),
            Some(rendering) if rendering.version > version => Slot::Own,
            _ => {
                let rendering = Arc::new(Rendering {
                    version,
                    text: OnceLock::new(),
                });
                *cached = Some(Arc::clone(&rendering));
                Slot::Shared(rendering)
            }
        }
    }

    /// How many distinct views are held.
    pub(super) fn len(&self) -> usize {
        self.held.lock().expect("views lock poisoned").len()
    }
}

/// A client's hold on its view: while any client holds a view, its renderings are
/// kept and shared; dropping the last hold drops them.
pub struct HeldView {
    hub: Hub,
    view: View,
    cached: bool,
}

impl HeldView {
    pub(super) fn new(hub: Hub, view: View, cached: bool) -> Self {
        Self { hub, view, cached }
    }

    /// The view held.
    pub fn view(&self) -> &View {
        &self.view
    }
}

impl Drop for HeldView {
    fn drop(&mut self) {
        if self.cached {
            self.hub.inner.views.release(&self.view);
        }
    }
}

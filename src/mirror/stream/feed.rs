//! One stream's subscribers and how an event reaches them: the event is built once
//! and its handle queued to every subscribed connection. A connection whose queue
//! is full (it stopped reading) is marked overflowed and closed by its task, as
//! Binance drops a client that cannot keep up, rather than fed an unbounded backlog.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::event::Event;
use super::name::StreamName;

/// Events queued per connection before it counts as too slow: at four events a
/// second per stream, a second or more of every stream it can hold.
pub const CONNECTION_QUEUE: usize = 4096;

/// Where a connection receives the events of all its streams.
pub struct Inbox {
    events: mpsc::Receiver<Arc<Event>>,
    overflowed: Arc<AtomicBool>,
}

impl Inbox {
    /// The next event; `None` never comes while the connection's session lives.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.events.try_recv().ok()
    }

    /// Whether an event was lost because the queue was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// The sending side of a connection's [`Inbox`], given to each feed it joins.
#[derive(Clone)]
pub struct Sink {
    id: u64,
    events: mpsc::Sender<Arc<Event>>,
    overflowed: Arc<AtomicBool>,
}

/// A connection's inbox and the sink feeding it; `id` tells connections apart.
pub fn inbox(id: u64) -> (Sink, Inbox) {
    let (events, receiver) = mpsc::channel(CONNECTION_QUEUE);
    let overflowed = Arc::new(AtomicBool::new(false));
    let sink = Sink {
        id,
        events,
        overflowed: Arc::clone(&overflowed),
    };
    (
        sink,
        Inbox {
            events: receiver,
            overflowed,
        },
    )
}

/// One served stream and the connections subscribed to it.
pub(super) struct Feed {
    pub(super) name: Arc<StreamName>,
    subscribers: Mutex<Vec<Sink>>,
}

impl Feed {
    pub(super) fn new(name: Arc<StreamName>) -> Self {
        Self {
            name,
            subscribers: Mutex::new(Vec::new()),
        }
    }

    /// Queues `event` to every subscriber.
    pub(super) fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let subscribers = self.subscribers.lock().expect("feed lock poisoned");
        for sink in subscribers.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) =
                sink.events.try_send(Arc::clone(&event))
            {
                sink.overflowed.store(true, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn join(self: &Arc<Self>, sink: &Sink) -> FeedHandle {
        let mut subscribers = self.subscribers.lock().expect("feed lock poisoned");
        subscribers.push(sink.clone());
        FeedHandle {
            feed: Arc::clone(self),
            id: sink.id,
        }
    }
}

/// A connection's subscription to one feed; dropping it unsubscribes, and the last
/// one dropped ends the feed.
pub struct FeedHandle {
    feed: Arc<Feed>,
    id: u64,
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        let mut subscribers = self.feed.subscribers.lock().expect("feed lock poisoned");
        subscribers.retain(|sink| sink.id != self.id);
    }
}

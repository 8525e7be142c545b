//! Binance USD-M kline streams served from the hub (DESIGN.md §8): stream names,
//! event encoding, one shared feed per stream with Binance's 250 ms conflation and
//! every close once, and the per-connection state machine of control messages and
//! limits. No I/O but the feeds' tasks: `http::market_stream` owns the sockets.

mod control;
mod event;
mod feed;
mod follow;
mod market;
mod name;
mod session;

pub use control::{COMBINED, ControlError, Request};
pub use event::Event;
pub use feed::{CONNECTION_QUEUE, FeedHandle, Inbox, Sink, inbox};
pub use follow::FORMING_EVERY;
pub use market::Market;
pub use name::{InvalidStream, StreamKind, StreamName};
pub use session::{MAX_INCOMING, MAX_STREAMS, RATE_WINDOW, Session, TooManyStreams};

#[cfg(test)]
mod tests;

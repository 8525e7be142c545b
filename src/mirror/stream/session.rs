//! One stream connection's state, without its socket: the streams it is subscribed
//! to (in order, each once, at most [`MAX_STREAMS`]), its `combined` property, and
//! Binance's limit on incoming messages. The websocket handler feeds it what the
//! client sends and writes what it answers.
//!
//! Binance USD-M futures docs, "Websocket Market Streams": "WebSocket connections
//! have a limit of 10 incoming messages per second"; "A connection that goes beyond
//! the limit will be disconnected"; "A single connection can listen to a maximum of
//! 1024 streams."

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::time::Instant;

use super::control::{self, ControlError, Request};
use super::event::Event;
use super::feed::{FeedHandle, Sink};
use super::market::Market;
use super::name::StreamName;

/// Streams one connection may listen to.
pub const MAX_STREAMS: usize = 1024;
/// Incoming messages (control messages, pings, pongs) allowed per [`RATE_WINDOW`].
pub const MAX_INCOMING: usize = 10;
/// The window the incoming-message limit is counted over.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// More streams than one connection may listen to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many streams")]
pub struct TooManyStreams;

/// A subscribed stream and, when candlecast serves it, its feed.
struct Subscribed {
    name: StreamName,
    _feed: Option<FeedHandle>,
}

/// One connection's subscriptions and properties.
pub struct Session {
    market: Market,
    sink: Sink,
    streams: Vec<Subscribed>,
    combined: bool,
    /// When the messages of the last [`RATE_WINDOW`] arrived.
    recent: VecDeque<Instant>,
}

impl Session {
    /// A connection opened on a path naming `streams` (names that are no stream are
    /// ignored, as ccxt's `/ws/0` needs); `combined`: on `/stream`, not `/ws`.
    ///
    /// # Errors
    /// [`TooManyStreams`] for more than [`MAX_STREAMS`] distinct streams.
    pub fn open<'a>(
        market: Market,
        sink: Sink,
        streams: impl IntoIterator<Item = &'a str>,
        combined: bool,
    ) -> Result<Self, TooManyStreams> {
        let mut session = Self {
            market,
            sink,
            streams: Vec::new(),
            combined,
            recent: VecDeque::with_capacity(MAX_INCOMING + 1),
        };
        let names: Vec<StreamName> = streams
            .into_iter()
            .filter_map(|raw| StreamName::parse(raw).ok())
            .collect();
        session.subscribe(names)?;
        Ok(session)
    }

    /// Notes one incoming message at `now`; `false` once more than
    /// [`MAX_INCOMING`] arrived within [`RATE_WINDOW`]: the connection is dropped.
    pub fn admit(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= MAX_INCOMING
    }

    /// Handles one control message; returns Binance's answer.
    pub fn handle(&mut self, text: &str) -> Utf8Bytes {
        let (id, request) = match control::parse(text) {
            Ok(parsed) => parsed,
            Err((id, err)) => return control::error(id, &err),
        };
        let result = match request {
            Request::Subscribe(raw) => raw
                .iter()
                .map(|raw| StreamName::parse(raw))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ControlError::invalid_request)
                .and_then(|names| self.subscribe(names).map_err(ControlError::invalid_request))
                .map(|()| Value::Null),
            Request::Unsubscribe(raw) => raw
                .iter()
                .map(|raw| StreamName::parse(raw))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ControlError::invalid_request)
                .map(|names| {
                    self.streams.retain(|s| !names.contains(&s.name));
                    Value::Null
                }),
            Request::ListSubscriptions => Ok(Value::Array(
                self.streams
                    .iter()
                    .map(|s| Value::String(s.name.to_string()))
                    .collect(),
            )),
            Request::SetCombined(combined) => {
                self.combined = combined;
                Ok(Value::Null)
            }
            Request::GetCombined => Ok(Value::Bool(self.combined)),
        };
        match result {
            Ok(result) => control::answer(id, result),
            Err(err) => control::error(Some(id), &err),
        }
    }

    /// What this connection sends for `event`: raw or combined, as set now.
    pub fn payload(&self, event: &Arc<Event>) -> Utf8Bytes {
        event.payload(self.combined)
    }

    /// How many streams are subscribed.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Adds the streams not yet subscribed, all or none.
    fn subscribe(&mut self, names: Vec<StreamName>) -> Result<(), TooManyStreams> {
        let mut new: Vec<StreamName> = Vec::new();
        for name in names {
            if !new.contains(&name) && !self.streams.iter().any(|s| s.name == name) {
                new.push(name);
            }
        }
        if self.streams.len() + new.len() > MAX_STREAMS {
            return Err(TooManyStreams);
        }
        for name in new {
            let feed = self.market.join(&name, &self.sink);
            self.streams.push(Subscribed { name, _feed: feed });
        }
        Ok(())
    }
}

//! One websocket to the combined-stream endpoint and what it was asked to carry: the
//! streams named in its URL or subscribed since, its control messages on their way,
//! and when it last delivered.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::requests::{Answer, Method, Requests};
use crate::retry::{Backoff, FIRST_RETRY_DELAY};

/// A websocket to the exchange.
pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one control message may take to write before the link is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait before asking again for streams the exchange refused.
const RESYNC_MAX: Duration = Duration::from_secs(60);

/// What woke a link up.
#[derive(Debug)]
pub(super) enum LinkEvent {
    /// The socket's next message, or its end.
    Read(Option<Result<Message, tungstenite::Error>>),
    /// A queued control message may be sent now.
    Send,
    /// Time to ask again for what a refusal left out.
    Resync,
    /// The request with this id was not answered in time.
    Overdue(u64),
}

/// One websocket and its subscriptions.
pub(super) struct Link {
    pub(super) socket: Socket,
    pub(super) requests: Requests,
    /// Symbols whose streams were named in the URL or asked for since, and neither
    /// refused nor let go.
    asked: HashSet<String>,
    /// After a refusal: when to ask again for what is missing.
    resync_at: Option<Instant>,
    resync_backoff: Backoff,
    /// Whether a refusal was logged since a request was last accepted.
    pub(super) warned: bool,
    /// Whether a kline arrived on it.
    pub(super) delivered: bool,
    pub(super) connected_at: Instant,
    /// When its last kline arrived (its opening, before the first).
    pub(super) last_data: Instant,
}

impl Link {
    /// A link just opened with `in_url` named in its URL; streams are named
    /// `{symbol}{suffix}`.
    pub(super) fn new(socket: Socket, in_url: &[String], suffix: String) -> Self {
        let now = Instant::now();
        Self {
            socket,
            requests: Requests::new(suffix),
            asked: in_url.iter().cloned().collect(),
            resync_at: None,
            resync_backoff: Backoff::new(FIRST_RETRY_DELAY, RESYNC_MAX),
            warned: false,
            delivered: false,
            connected_at: now,
            last_data: now,
        }
    }

    /// Queues a `SUBSCRIBE` for each of `wanted` not asked for yet and an
    /// `UNSUBSCRIBE` for each asked for and no longer wanted.
    pub(super) fn sync(&mut self, wanted: &[String]) {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|symbol| !self.asked.contains(*symbol))
            .cloned()
            .collect();
        let wanted_set: HashSet<&String> = wanted.iter().collect();
        let unwanted: Vec<String> = self
            .asked
            .iter()
            .filter(|symbol| !wanted_set.contains(symbol))
            .cloned()
            .collect();
        for symbol in &unwanted {
            self.asked.remove(symbol);
        }
        self.requests.push(Method::Unsubscribe, &unwanted);
        self.asked.extend(missing.iter().cloned());
        self.requests.push(Method::Subscribe, &missing);
    }

    /// Queues `UNSUBSCRIBE` then `SUBSCRIBE` for `symbols` (asked for already), so the
    /// exchange starts their streams afresh on this connection.
    pub(super) fn resubscribe(&mut self, symbols: &[String]) {
        let symbols: Vec<String> = symbols
            .iter()
            .filter(|symbol| self.asked.contains(*symbol))
            .cloned()
            .collect();
        self.requests.push(Method::Unsubscribe, &symbols);
        self.requests.push(Method::Subscribe, &symbols);
    }

    /// Notes a refusal: what it was to change did not change, and a resync follows
    /// after a growing delay. Returns that delay.
    pub(super) fn refused(&mut self, answer: &Answer) -> Duration {
        if let Answer::Refused(request, _, _) = answer {
            for symbol in &request.symbols {
                match request.method {
                    Method::Subscribe => self.asked.remove(symbol),
                    Method::Unsubscribe => self.asked.insert(symbol.clone()),
                };
            }
        }
        let delay = self.resync_backoff.next_delay();
        self.resync_at = Some(Instant::now() + delay);
        delay
    }

    /// Notes an accepted request; returns whether refusals had been logged before it.
    pub(super) fn accepted(&mut self) -> bool {
        self.resync_backoff.reset();
        std::mem::take(&mut self.warned)
    }

    /// Asks again for what refusals left out, once their delay has passed.
    pub(super) fn resync(&mut self, wanted: &[String]) {
        self.resync_at = None;
        self.sync(wanted);
    }

    /// Every request answered and none refused since: the link carries all it was
    /// asked to.
    pub(super) fn settled(&self) -> bool {
        self.requests.idle() && self.resync_at.is_none()
    }

    /// Waits for the next thing this link has to handle. Cancel-safe: a message the
    /// socket has half read stays in the socket.
    pub(super) async fn next_event(&mut self) -> LinkEvent {
        let send_at = self.requests.send_at();
        let deadline = self.requests.deadline();
        let resync_at = self.resync_at;
        tokio::select! {
            read = self.socket.next() => LinkEvent::Read(read),
            _ = sleep_until(send_at) , if send_at.is_some() => LinkEvent::Send,
            _ = sleep_until(resync_at), if resync_at.is_some() => LinkEvent::Resync,
            _ = sleep_until(deadline.map(|(_, at)| at)), if deadline.is_some() => {
                LinkEvent::Overdue(deadline.map_or(0, |(id, _)| id))
            }
        }
    }

    /// Sends the next queued control message.
    ///
    /// # Errors
    /// The write failed or did not finish within [`SEND_TIMEOUT`]: the link is lost.
    pub(super) async fn send_next(&mut self) -> Result<(), String> {
        let Some((id, text)) = self.requests.take_next(Instant::now()) else {
            return Ok(());
        };
        match tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Text(text.into()))).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("sending request {id} failed: {err}")),
            Err(_) => Err(format!("sending request {id} took over {SEND_TIMEOUT:?}")),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

//! The fake's combined stream, `/market/stream`, as Binance's USD-M "Websocket Market
//! Streams" describe it: streams named in the URL (`?streams=a/b`) or subscribed with
//! `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` and Binance's answers; frames
//! only for the streams a connection is subscribed to; Binance's limits (at most
//! 1,024 streams a connection, at most 10 incoming messages a second, else the
//! connection is closed); and a handshake whose request line is over 8 KiB refused
//! with 414, as Binance refuses very long URLs (1,025 streams do not fit in 8 KiB).
//! Each connection's streams and control messages are recorded for tests.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use candlecast::candle::Candle;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{ACKS, FakeExchange, FakeState, Frame, kline_frame_at};

/// The longest request line (`GET /market/stream?streams=… HTTP/1.1`) the fake
/// upgrades; Binance refuses very long URLs, and 8 KiB is a common server limit.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Binance: "A single connection can listen to a maximum of 1024 streams."
pub const MAX_STREAMS: usize = 1024;
/// Binance: "WebSocket connections have a limit of 10 incoming messages per second."
pub const MAX_INCOMING_PER_SECOND: usize = 10;

/// One control message a connection sent, as the fake saw it.
#[derive(Debug, Clone)]
pub struct ControlMessage {
    pub at: Instant,
    /// `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, … (empty when unreadable).
    pub method: String,
    pub params: Vec<String>,
    pub id: Option<u64>,
    /// The answer sent, if one was.
    pub answer: Option<Value>,
}

/// What the fake saw of one stream connection.
#[derive(Debug, Clone, Default)]
pub struct StreamConnection {
    /// The `streams` query of its URL, as sent.
    pub query: String,
    /// The streams it is subscribed to now, in the order they were added.
    pub streams: Vec<String>,
    pub control: Vec<ControlMessage>,
    pub open: bool,
    pub opened_at: Option<Instant>,
    /// When it ended, if it did.
    pub closed_at: Option<Instant>,
    /// Whether the service ended it with a close frame.
    pub closed_by_client: bool,
    /// Closed by the fake for sending more than 10 messages within a second.
    pub over_rate: bool,
}

/// The fake stream's own state, beside the rest of the fake's.
#[derive(Default)]
pub(super) struct StreamState {
    connections: Mutex<Vec<StreamConnection>>,
    /// The statuses of handshakes refused for their length (414).
    refused: Mutex<Vec<u16>>,
    /// The next this many `SUBSCRIBE`s are refused with an error answer.
    refuse_subscribes: AtomicUsize,
    /// The next this many `SUBSCRIBE`s are never answered (nor applied).
    ignore_subscribes: AtomicUsize,
}

impl FakeExchange {
    /// The `streams` query of each stream connection, in the order they opened.
    pub fn stream_queries(&self) -> Vec<String> {
        let connections = self.state.streams.connections.lock().unwrap();
        connections.iter().map(|c| c.query.clone()).collect()
    }

    /// Every stream connection so far, in the order they opened: its URL's streams,
    /// its subscriptions now, its control messages.
    pub fn stream_connections(&self) -> Vec<StreamConnection> {
        self.state.streams.connections.lock().unwrap().clone()
    }

    /// The streams each open connection is subscribed to now.
    pub fn subscriptions(&self) -> Vec<Vec<String>> {
        let connections = self.state.streams.connections.lock().unwrap();
        connections
            .iter()
            .filter(|c| c.open)
            .map(|c| c.streams.clone())
            .collect()
    }

    /// The HTTP statuses of stream handshakes refused for their length (414).
    pub fn refused_handshakes(&self) -> Vec<u16> {
        self.state.streams.refused.lock().unwrap().clone()
    }

    /// The next `n` `SUBSCRIBE` requests get Binance's error answer instead of taking
    /// effect.
    pub fn refuse_subscribes(&self, n: usize) {
        self.state
            .streams
            .refuse_subscribes
            .store(n, Ordering::SeqCst);
    }

    /// The next `n` `SUBSCRIBE` requests are neither answered nor applied.
    pub fn ignore_subscribes(&self, n: usize) {
        self.state
            .streams
            .ignore_subscribes
            .store(n, Ordering::SeqCst);
    }
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

pub(super) async fn stream(
    upgrade: WebSocketUpgrade,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    State(state): State<Arc<FakeState>>,
) -> Response {
    state.attempts.lock().unwrap().push(Instant::now());
    if state.refuse_stream.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "refusing stream connections",
        )
            .into_response();
    }
    let request_line = format!("GET {uri} HTTP/1.1").len();
    let raw = query.get("streams").cloned().unwrap_or_default();
    let named: Vec<String> = raw
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if request_line > MAX_REQUEST_LINE {
        let status = StatusCode::URI_TOO_LONG;
        state.streams.refused.lock().unwrap().push(status.as_u16());
        return (status, "URI Too Long").into_response();
    }
    upgrade
        .on_upgrade(move |socket| async move {
            let frames = state.frames.subscribe();
            let index = {
                let mut connections = state.streams.connections.lock().unwrap();
                connections.push(StreamConnection {
                    query: raw,
                    streams: Vec::new(),
                    control: Vec::new(),
                    open: true,
                    opened_at: Some(Instant::now()),
                    closed_at: None,
                    closed_by_client: false,
                    over_rate: false,
                });
                connections.len() - 1
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let open = state.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
            state
                .peak_open_connections
                .fetch_max(open, Ordering::SeqCst);
            let mut connection = Connection {
                socket,
                state: &state,
                index,
                subscribed: HashSet::new(),
                recent: VecDeque::new(),
            };
            let closed_by_client = connection.serve(frames, named).await;
            {
                let mut connections = state.streams.connections.lock().unwrap();
                connections[index].open = false;
                connections[index].closed_at = Some(Instant::now());
                connections[index].closed_by_client = closed_by_client;
            }
            state.open_connections.fetch_sub(1, Ordering::SeqCst);
            if closed_by_client {
                state.closed_by_client.fetch_add(1, Ordering::SeqCst);
            }
        })
        .into_response()
}

/// One open stream connection.
struct Connection<'a> {
    socket: WebSocket,
    state: &'a FakeState,
    /// Its place in the state's list of connections.
    index: usize,
    subscribed: HashSet<String>,
    /// When the messages of the last second arrived.
    recent: VecDeque<Instant>,
}

/// The stream a combined frame belongs to; `None` for any other text.
fn stream_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(r#"{"stream":""#)?;
    rest.split('"').next()
}

impl Connection<'_> {
    /// Serves the connection until it ends; true if the service closed it with a
    /// close frame.
    async fn serve(&mut self, mut frames: broadcast::Receiver<Frame>, named: Vec<String>) -> bool {
        for replay in self.subscribe(named).unwrap_or_default() {
            if self.send(replay).await.is_err() {
                return false;
            }
        }
        let state = self.state;
        let mut silent = false;
        let mut acks = tokio::time::interval(Duration::from_secs(1));
        acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = acks.tick() => {
                    if !silent && state.acks_only.load(Ordering::SeqCst) {
                        for ack in ACKS {
                            if self.send(ack.to_owned()).await.is_err() {
                                return false;
                            }
                        }
                    }
                }
                frame = frames.recv() => match frame {
                    Ok(Frame::Text(text)) if !silent && !state.acks_only.load(Ordering::SeqCst) => {
                        // Binance sends only the streams a connection listens to.
                        if stream_of(&text).is_some_and(|s| !self.subscribed.contains(s)) {
                            continue;
                        }
                        if self.send(text).await.is_err() {
                            return false;
                        }
                    }
                    Ok(Frame::Text(_)) => {}
                    Ok(Frame::Ping) if !silent => {
                        if self.socket.send(Message::Ping(b"are you there".to_vec().into())).await.is_err() {
                            return false;
                        }
                    }
                    Ok(Frame::Ping) => {}
                    Ok(Frame::Silence) => silent = true,
                    Ok(Frame::Drop) => return false, // dropping the socket without a close frame
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
                incoming = self.socket.recv() => {
                    let message = match incoming {
                        Some(Ok(Message::Close(_))) => return true,
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => return false,
                    };
                    if !self.admit() {
                        self.state.streams.connections.lock().unwrap()[self.index].over_rate = true;
                        let close = CloseFrame { code: 1008, reason: "Too many requests".into() };
                        let _ = self.socket.send(Message::Close(Some(close))).await;
                        return false;
                    }
                    match message {
                        Message::Pong(_) => {
                            state.pongs.fetch_add(1, Ordering::SeqCst);
                        }
                        Message::Text(text) => {
                            let (answer, replay) = self.control(text.as_str());
                            for text in answer.map(|a| a.to_string()).into_iter().chain(replay) {
                                if self.send(text).await.is_err() {
                                    return false;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    async fn send(&mut self, text: String) -> Result<(), axum::Error> {
        self.socket.send(Message::Text(text.into())).await
    }

    /// Notes one incoming message now; false once more than
    /// [`MAX_INCOMING_PER_SECOND`] arrived within a second.
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= MAX_INCOMING_PER_SECOND
    }

    /// Adds `streams` (all or none: at most [`MAX_STREAMS`] in all); returns the
    /// frames to send first (see [`Connection::replay`]).
    fn subscribe(&mut self, streams: Vec<String>) -> Result<Vec<String>, ()> {
        let new: Vec<String> = streams
            .into_iter()
            .filter(|s| !self.subscribed.contains(s))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if self.subscribed.len() + new.len() > MAX_STREAMS {
            return Err(());
        }
        self.subscribed.extend(new.iter().cloned());
        self.state.streams.connections.lock().unwrap()[self.index]
            .streams
            .extend(new.iter().cloned());
        Ok(self.replay(&new))
    }

    /// With [`FakeExchange::replay_last_close_on_connect`] on: the closing frame of
    /// the newest candle of each of `streams`, for this connection alone.
    fn replay(&self, streams: &[String]) -> Vec<String> {
        let state = self.state;
        if !state.replay_last_close_on_connect.load(Ordering::SeqCst)
            || state.acks_only.load(Ordering::SeqCst)
            || streams.is_empty()
        {
            return Vec::new();
        }
        state.catch_up();
        let newest: Vec<Candle> = {
            let history = state.history.lock().unwrap();
            history
                .iter()
                .filter(|(symbol, _)| {
                    streams.contains(&format!("{}@kline_1m", symbol.to_lowercase()))
                })
                .filter_map(|(_, candles)| candles.last().cloned())
                .collect()
        };
        state
            .replayed
            .lock()
            .unwrap()
            .extend(newest.iter().cloned());
        let at = state.server_ms();
        newest.iter().map(|c| kline_frame_at(c, true, at)).collect()
    }

    /// Handles a control message; returns Binance's answer (`None` when the test
    /// asked for silence) and the frames to send after it.
    fn control(&mut self, text: &str) -> (Option<Value>, Vec<String>) {
        let request: Result<Value, _> = serde_json::from_str(text);
        let (method, params, id) = match &request {
            Ok(request) => (
                request["method"].as_str().unwrap_or_default().to_owned(),
                request["params"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                request["id"].as_u64(),
            ),
            Err(_) => (String::new(), Vec::new(), None),
        };
        let mut replay = Vec::new();
        let error = |code: u8, msg: String| json!({"error": {"code": code, "msg": msg}, "id": id});
        let answer = match (&request, method.as_str()) {
            (Err(err), _) => Some(error(3, format!("Invalid JSON: {err}"))),
            (Ok(_), _) if id.is_none() => Some(error(
                2,
                "Invalid request: request ID must be an unsigned integer".into(),
            )),
            (Ok(_), "SUBSCRIBE") if take_one(&self.state.streams.ignore_subscribes) => None,
            (Ok(_), "SUBSCRIBE") if take_one(&self.state.streams.refuse_subscribes) => {
                Some(error(2, "Invalid request: refused by the test".into()))
            }
            (Ok(_), "SUBSCRIBE") => match self.subscribe(params.clone()) {
                Ok(frames) => {
                    replay = frames;
                    Some(json!({"result": null, "id": id}))
                }
                Err(()) => Some(error(2, "Invalid request: too many streams".into())),
            },
            (Ok(_), "UNSUBSCRIBE") => {
                for stream in &params {
                    self.subscribed.remove(stream);
                }
                let mut connections = self.state.streams.connections.lock().unwrap();
                connections[self.index]
                    .streams
                    .retain(|s| !params.contains(s));
                Some(json!({"result": null, "id": id}))
            }
            (Ok(_), "LIST_SUBSCRIPTIONS") => {
                let connections = self.state.streams.connections.lock().unwrap();
                Some(json!({"result": connections[self.index].streams, "id": id}))
            }
            (Ok(_), other) => Some(error(
                2,
                format!("Invalid request: unknown variant `{other}`"),
            )),
        };
        self.state.streams.connections.lock().unwrap()[self.index]
            .control
            .push(ControlMessage {
                at: Instant::now(),
                method,
                params,
                id,
                answer: answer.clone(),
            });
        (answer, replay)
    }
}

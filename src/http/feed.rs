//! The websocket feed on `/`: the subscription a client asks for in the URL, its
//! first snapshot, then each coin's new message as it changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::error::HttpError;
use super::handshake::{BadHandshake, asks_for_websocket};
use super::page::page;
use super::query::{Parameters, Params, number_in};
use super::quiet::Noisy;
use super::{AppState, Slot};
use crate::hub::{Format, Hub, View};

/// Clients send only control frames; anything larger than this is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Per-connection read buffer (axum's default is 128 KiB).
const READ_BUFFER: usize = 1024;
/// Outgoing bytes are gathered up to this size before a write, so the five messages
/// of a round leave in one write (axum's default is 128 KiB).
const WRITE_BUFFER: usize = 8 * 1024;
/// A client that stops reading can hold at most this much of our memory (plus the
/// kernel's socket buffer) before its send times out.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Close code for a client too slow to take its messages: reconnecting gets it a
/// fresh snapshot ("try again later").
pub const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code for a client that stopped answering pings.
pub const CLOSE_NO_PONG: u16 = 1008;

/// `?symbols=&limit=&format=`, as given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    symbols: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

impl Parameters for FeedParams {
    const NAMES: &'static [&'static str] = &["symbols", "limit", "format"];
}

/// Which coins a websocket client wants, in which order, and how.
struct Subscription {
    positions: Vec<usize>,
    view: View,
}

impl Subscription {
    /// Validates `?symbols=` (known, each once), `?limit=` (1 to `HISTORY_MAX`) and
    /// `?format=` (`compact` or `candles`).
    fn from_params(params: FeedParams, hub: &Hub) -> Result<Self, HttpError> {
        let mut subscription = Subscription {
            positions: (0..hub.symbols().len()).collect(),
            view: hub.default_view(),
        };
        if let Some(value) = params.symbols {
            let mut positions = Vec::new();
            for symbol in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let symbol = symbol.to_uppercase();
                let Some(position) = hub.position(&symbol) else {
                    let known = hub.symbols().join(",");
                    return Err(HttpError::bad_parameter(
                        "symbols",
                        format!("unknown symbol {symbol}; this server has {known}"),
                    ));
                };
                if positions.contains(&position) {
                    return Err(HttpError::bad_parameter(
                        "symbols",
                        format!("{symbol} is listed twice"),
                    ));
                }
                positions.push(position);
            }
            if positions.is_empty() {
                return Err(HttpError::bad_parameter(
                    "symbols",
                    "symbols must name at least one symbol",
                ));
            }
            subscription.positions = positions;
        }
        if let Some(value) = params.limit {
            subscription.view.limit = number_in("limit", &value, 1..=hub.history_max())?;
        }
        if let Some(value) = params.format {
            subscription.view.format = match value.as_str() {
                "compact" => Format::Compact,
                "candles" => Format::Candles,
                _ => {
                    return Err(HttpError::bad_parameter(
                        "format",
                        format!("format must be compact or candles, got {value:?}"),
                    ));
                }
            }
        }
        Ok(subscription)
    }
}

/// `/`: a websocket upgrade subscribes to the feed; a browser gets the live page.
pub async fn feed(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    headers: HeaderMap,
    params: Result<Params<FeedParams>, HttpError>,
    State(state): State<AppState>,
    connect_info: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Result<Response, HttpError> {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) if !asks_for_websocket(&headers) => return Ok(page()),
        Err(rejection) => {
            let bad = BadHandshake::of(&headers, &rejection);
            bad.count(&state.parts.metrics);
            return Ok(bad.into_response());
        }
    };
    let Params(params) = params?;
    let subscription = Subscription::from_params(params, &state.parts.hub)?;
    let Some(slot) = state.claim_slot() else {
        state.parts.metrics.connections_rejected.inc();
        Noisy::ConnectionLimit.note(&format_args!(
            "MAX_CONNECTIONS={}",
            state.parts.feed.max_connections
        ));
        return Err(HttpError::ConnectionLimit {
            max_connections: state.parts.feed.max_connections,
        });
    };
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let peer = connect_info
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    let clients = state.clients.clone();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            clients.track_future(
                serve_client(socket, state, subscription, slot)
                    .instrument(info_span!("client", id, peer)),
            )
        }))
}

/// Why a client's connection ended early.
enum Failed {
    Gone,
    TooSlow,
}

/// Sends `frames` as one batch (one write), within the send timeout.
async fn send_batch(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Utf8Bytes>,
    state: &AppState,
) -> Result<(), Failed> {
    let (mut messages, mut bytes) = (0u64, 0u64);
    let sending = async {
        for frame in frames {
            messages += 1;
            bytes += frame.len() as u64;
            socket.feed(Message::Text(frame)).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(state.parts.feed.send_timeout, sending).await {
        Ok(Ok(())) => {
            state.parts.metrics.messages_sent.inc_by(messages);
            state.parts.metrics.bytes_sent.inc_by(bytes);
            Ok(())
        }
        Ok(Err(_)) => Err(Failed::Gone),
        Err(_) => Err(Failed::TooSlow),
    }
}

/// Closes with `code`, giving up quickly: the peer may be what is stuck.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(frame)).await;
}

/// Sends the current window of every coin, then each coin's new window as it changes.
/// A client that falls behind gets only the newest message per coin, never a backlog.
async fn serve_client(
    mut socket: WebSocket,
    state: AppState,
    subscription: Subscription,
    _slot: Slot,
) {
    let Subscription { positions, view } = subscription;
    // Keeps this view's renderings shared while the client is connected.
    let _held = state.parts.hub.hold(view);
    let mut updates = state.parts.hub.subscribe();
    let snapshot = Arc::clone(&updates.borrow_and_update());
    let mut sent: Vec<u64> = positions
        .iter()
        .map(|&p| snapshot.coins[p].version)
        .collect();
    let first: Vec<Utf8Bytes> = positions
        .iter()
        .map(|&p| state.parts.hub.message(&snapshot, p, view))
        .collect();
    drop(snapshot);
    let outcome = send_batch(&mut socket, first.into_iter(), &state).await;
    if let Err(failed) = outcome {
        return on_failed(&mut socket, failed, &state).await;
    }
    debug!("client subscribed");

    let ping_every = state.parts.feed.ping_every;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = state.parts.shutdown.cancelled() => {
                return close(&mut socket, close_code::AWAY, "server shutting down").await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = Arc::clone(&updates.borrow_and_update());
                let changed: Vec<Utf8Bytes> = positions
                    .iter()
                    .zip(sent.iter_mut())
                    .filter(|(p, sent)| snapshot.coins[**p].version != **sent)
                    .map(|(&p, sent)| {
                        *sent = snapshot.coins[p].version;
                        state.parts.hub.message(&snapshot, p, view)
                    })
                    .collect();
                drop(snapshot);
                if let Err(failed) = send_batch(&mut socket, changed.into_iter(), &state).await {
                    return on_failed(&mut socket, failed, &state).await;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    state.parts.metrics.unresponsive_clients_closed.inc();
                    debug!("client stopped answering pings");
                    return close(&mut socket, CLOSE_NO_PONG, "no pong").await;
                }
                let ping = tokio::time::timeout(state.parts.feed.send_timeout, socket.send(Message::Ping(Default::default())));
                match ping.await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => return on_failed(&mut socket, Failed::TooSlow, &state).await,
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => {
                    debug!("client left");
                    return;
                }
                // Pongs (and anything else) show the client is alive; pings are
                // answered by the websocket layer.
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(err)) => {
                    if is_too_big(err) {
                        state.parts.metrics.oversized_messages.inc();
                        debug!("client sent an oversized message");
                        return close(&mut socket, close_code::SIZE, "message too big").await;
                    }
                    return;
                }
            }
        }
    }
}

async fn on_failed(socket: &mut WebSocket, failed: Failed, state: &AppState) {
    if let Failed::TooSlow = failed {
        state.parts.metrics.slow_clients_closed.inc();
        Noisy::SlowClient.note(&format_args!(
            "CLIENT_SEND_TIMEOUT_SECS={}",
            state.parts.feed.send_timeout.as_secs()
        ));
        close(socket, CLOSE_TOO_SLOW, "too slow").await;
    }
}

fn is_too_big(err: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        err.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_))
    )
}

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
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::error::HttpError;
use super::handshake::{BadHandshake, asks_for_websocket};
use super::live::LiveFeed;
use super::page::page;
use super::query::Params;
use super::quiet::Noisy;
use super::resume::resume_message;
use super::subscription::{FeedParams, Subscription};
use super::{AppState, Slot};
use crate::telemetry::Chain;

/// Clients send only control frames; anything larger than this is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Per-connection read buffer (axum's default is 128 KiB): clients send only control
/// frames, and a larger one grows the buffer as needed. Measured: 1,024 bytes here
/// cost 0.9 KB of every idle connection's RSS (see the README's Performance section).
const READ_BUFFER: usize = 128;
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

/// Sends `frames` as one batch (one write), within the send timeout; nothing at all
/// when there are none.
async fn send_batch(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Utf8Bytes>,
    state: &AppState,
) -> Result<(), Failed> {
    // A wake-up for coins or intervals this client does not follow sends nothing.
    let mut frames = frames.peekable();
    if frames.peek().is_none() {
        return Ok(());
    }
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

/// Sends the current window of every coin, then each coin's new window as it changes,
/// and (for `live=true`) the forming candle, throttled. A client that falls behind
/// gets only the newest message per coin, never a backlog.
async fn serve_client(
    mut socket: WebSocket,
    state: AppState,
    subscription: Subscription,
    _slot: Slot,
) {
    let Subscription {
        positions,
        view,
        live,
        since,
    } = subscription;
    let hub = &state.parts.hub;
    // Keeps this view's renderings shared while the client is connected.
    let _held = hub.hold(view.clone());
    let mut live = live.then(|| {
        let slots = hub.symbols().len();
        LiveFeed::new(
            hub.subscribe_forming(),
            positions.iter().map(|p| view.interval * slots + p),
            state.parts.feed.live_interval,
        )
    });
    let mut updates = hub.subscribe();
    let snapshot = Arc::clone(&updates.borrow_and_update());
    let mut sent: Vec<u64> = Vec::with_capacity(positions.len());
    // The message last sent per coin: a new version can render the same bytes (a
    // change behind what this view shows), which the client already has.
    let mut last: Vec<Utf8Bytes> = Vec::with_capacity(positions.len());
    let mut first: Vec<Utf8Bytes> = Vec::with_capacity(positions.len());
    for (coin, &p) in positions.iter().enumerate() {
        let frame = snapshot.frame(view.interval, p);
        sent.push(frame.version_for(&view));
        let message = match since {
            None => hub.message(&snapshot, p, &view),
            Some(since) => match resume_message(&state, &snapshot, p, &view, since).await {
                Ok(message) => message,
                Err(err) => {
                    Noisy::StoreUnavailable.note(&Chain(&err));
                    return close(&mut socket, CLOSE_TOO_SLOW, "history unavailable; retry").await;
                }
            },
        };
        last.push(message.clone());
        first.push(message);
        if let Some(live) = &mut live {
            live.closed(coin, frame.newest_open_time);
        }
    }
    drop(snapshot);
    if let Some(live) = &mut live {
        first.extend(live.due(Instant::now()));
    }
    let outcome = send_batch(&mut socket, first.into_iter(), &state).await;
    if let Err(failed) = outcome {
        return on_failed(&mut socket, failed, &state).await;
    }
    debug!("client subscribed");

    let ping_every = state.parts.feed.ping_every;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        let forming_due = live.as_ref().and_then(|live| live.next_due);
        tokio::select! {
            _ = state.parts.shutdown.cancelled() => {
                return close(&mut socket, close_code::AWAY, "server shutting down").await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = Arc::clone(&updates.borrow_and_update());
                let mut changed = Vec::new();
                for (coin, (&p, sent)) in positions.iter().zip(sent.iter_mut()).enumerate() {
                    let frame = snapshot.frame(view.interval, p);
                    if frame.version_for(&view) == *sent {
                        continue;
                    }
                    *sent = frame.version_for(&view);
                    let message = hub.message(&snapshot, p, &view);
                    if message == last[coin] {
                        continue;
                    }
                    last[coin] = message.clone();
                    changed.push(message);
                    if let Some(live) = &mut live {
                        live.closed(coin, frame.newest_open_time);
                    }
                }
                drop(snapshot);
                if let Err(failed) = send_batch(&mut socket, changed.into_iter(), &state).await {
                    return on_failed(&mut socket, failed, &state).await;
                }
            }
            Some(()) = forming_changed(live.as_mut()) => {
                let Some(live) = &mut live else { continue };
                let forming = live.due(Instant::now());
                if let Err(failed) = send_batch(&mut socket, forming.into_iter(), &state).await {
                    return on_failed(&mut socket, failed, &state).await;
                }
            }
            _ = sleep_until(forming_due), if forming_due.is_some() => {
                let Some(live) = &mut live else { continue };
                let forming = live.due(Instant::now());
                if let Err(failed) = send_batch(&mut socket, forming.into_iter(), &state).await {
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

/// Resolves when a live client's forming candles changed; never for other clients,
/// while its updates are held back (it waits for their due time instead), or once
/// the hub is gone.
async fn forming_changed(live: Option<&mut LiveFeed>) -> Option<()> {
    match live {
        Some(live) if !live.holding() => live.updates.changed().await.ok(),
        _ => std::future::pending().await,
    }
}

/// Sleeps until `deadline` (the caller only polls this with one set).
async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
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

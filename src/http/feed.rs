//! The websocket feed on `/`: the subscription a client asks for in the URL, its
//! first snapshot, then each coin's new message as it changes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::{Utf8Bytes, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tracing::{Instrument, debug, info_span};

use super::closing::{CLOSE_WAIT, answer_close, close};
use super::error::HttpError;
use super::frames::Outgoing;
use super::handshake::{BadHandshake, asks_for_websocket};
use super::live::LiveFeed;
use super::page::page;
use super::query::Params;
use super::quiet::Noisy;
use super::resume::resume_message;
use super::subscription::{FeedParams, Subscription};
use super::upgrade::{Socket, Upgrade};
use super::{AppState, Slot};
use crate::telemetry::Chain;

/// Clients send only control frames; anything larger than this is closed with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Per-connection read buffer (axum's default is 128 KiB): clients send only control
/// frames, and a larger one grows the buffer as needed. Measured: 1,024 bytes here
/// cost 0.9 KB of every idle connection's RSS (see the README's Performance section).
const READ_BUFFER: usize = 128;
/// The most the websocket layer may hold for one client. Messages never pass through
/// it (they are written by [`Outgoing`]); only control frames do: pings, the pongs
/// that answer a client's pings, and the close.
const MAX_CONTROL_BUFFER: usize = 16 * 1024;
/// Close code for a client too slow to take its messages: reconnecting gets it a
/// fresh snapshot ("try again later").
pub const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code for a client that stopped answering pings.
pub const CLOSE_NO_PONG: u16 = 1008;

/// `/`: a websocket upgrade subscribes to the feed; a browser gets the live page.
pub async fn feed(
    upgrade: Result<Upgrade, BadHandshake>,
    headers: HeaderMap,
    params: Result<Params<FeedParams>, HttpError>,
    State(state): State<AppState>,
    connect_info: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Result<Response, HttpError> {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) if !asks_for_websocket(&headers) => return Ok(page()),
        Err(bad) => {
            bad.count(&state.parts.metrics);
            return Ok(bad.into_response());
        }
    };
    let Params(params) = params?;
    let subscription =
        Subscription::from_params(params, &state.parts.hub, state.parts.clock.now_ms())?;
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
    Ok(upgrade.on_upgrade(socket_config(), move |socket| {
        clients.track_future(
            serve_client(socket, state, subscription, slot)
                .instrument(info_span!("client", id, peer)),
        )
    }))
}

/// The websocket layer's settings for a client.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Control frames are written at once, whole, before any message.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_CONTROL_BUFFER)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// Why a client's connection ended early.
pub(super) enum Failed {
    Gone,
    /// The send timed out; `mid_frame`: the socket was left part way through a frame,
    /// so no close frame can follow.
    TooSlow {
        mid_frame: bool,
    },
}

/// Sends `messages` as one batch (one write), within the send timeout; nothing at
/// all when there are none.
pub(super) async fn send_batch(
    socket: &mut Socket,
    messages: Vec<Utf8Bytes>,
    state: &AppState,
) -> Result<(), Failed> {
    // A wake-up for coins or intervals this client does not follow sends nothing.
    if messages.is_empty() {
        return Ok(());
    }
    let mut outgoing = Outgoing::new(messages);
    let sending = async {
        // Whatever control frame the websocket layer holds (a pong part way out)
        // leaves whole first, so the messages start on a frame boundary.
        socket.flush().await.map_err(|_| ())?;
        outgoing.write_to(socket.get_mut()).await.map_err(|_| ())
    };
    match tokio::time::timeout(state.parts.feed.send_timeout, sending).await {
        Ok(Ok(())) => {
            let metrics = &state.parts.metrics;
            metrics.messages_sent.inc_by(outgoing.messages() as u64);
            metrics.bytes_sent.inc_by(outgoing.payload_bytes() as u64);
            Ok(())
        }
        Ok(Err(())) => Err(Failed::Gone),
        Err(_) if outgoing.partly_written() => {
            let rest = tokio::time::timeout(CLOSE_WAIT, outgoing.write_to(socket.get_mut()));
            let finished = matches!(rest.await, Ok(Ok(())));
            Err(Failed::TooSlow {
                mid_frame: !finished,
            })
        }
        Err(_) => Err(Failed::TooSlow { mid_frame: false }),
    }
}

/// Sends the current window of every coin, then each coin's new window as it changes,
/// and (for `live=true`) the forming candle, throttled. A client that falls behind
/// gets only the newest message per coin, never a backlog.
///
/// A plain function returning the task's future, not an `async fn`: an `async fn`
/// keeps its arguments twice in its future (once as arguments, once as locals), and
/// this future is most of what an idle connection costs.
fn serve_client(
    mut socket: Socket,
    state: AppState,
    subscription: Subscription,
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    let Subscription {
        positions,
        view,
        live,
        since,
    } = subscription;
    async move {
        let _slot = &slot;
        let hub = &state.parts.hub;
        // Keeps this view's renderings shared while the client is connected.
        let _held = hub.hold(view.clone());
        let mut live = live.then(|| {
            let intervals = hub.intervals().len();
            LiveFeed::new(
                hub.subscribe_forming(),
                positions
                    .iter()
                    .map(|p| crate::hub::slot(intervals, view.interval, *p)),
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
            let window = hub.message(&snapshot, p, &view);
            // What later messages are compared with is the window as of this
            // snapshot, which a resumed client now holds too: a re-render of the same
            // window is then not sent again just because its bytes differ from the
            // resume message's.
            last.push(window.clone());
            let message = match since {
                None => window,
                // Boxed: a store read is rare, and its future would otherwise be
                // part of every connection's.
                Some(since) => {
                    match Box::pin(resume_message(&state, &snapshot, p, &view, since)).await {
                        Ok(message) => message,
                        Err(err) => {
                            Noisy::StoreUnavailable.note(&Chain(&err));
                            let reason = "history unavailable; retry";
                            return close(&mut socket, CLOSE_TOO_SLOW, reason).await;
                        }
                    }
                }
            };
            first.push(message);
            if let Some(live) = &mut live {
                live.closed(coin, frame.newest_open_time);
            }
        }
        drop(snapshot);
        if let Some(live) = &mut live {
            first.extend(live.newest(Instant::now()));
        }
        if let Err(failed) = send_batch(&mut socket, first, &state).await {
            return on_failed(&mut socket, failed, &state).await;
        }
        debug!("client subscribed");

        // One timer for both the next ping and held-back forming updates.
        let ping_every = state.parts.feed.ping_every;
        let mut next_ping = Instant::now() + ping_every;
        let mut last_heard = Instant::now();
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        loop {
            let forming_due = live.as_ref().and_then(|live| live.next_due);
            let wake = forming_due.map_or(next_ping, |due| due.min(next_ping));
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let batch = tokio::select! {
                // Closed candles before forming ones.
                biased;
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
                    if let Some(live) = live.as_mut().filter(|_| !changed.is_empty()) {
                        live.sent_closes(Instant::now());
                    }
                    changed
                }
                Some(()) = forming_changed(live.as_mut()) => {
                    live.as_mut().map_or_else(Vec::new, |live| live.due(Instant::now()))
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= next_ping {
                        if last_heard.elapsed() > ping_every * 2 {
                            state.parts.metrics.unresponsive_clients_closed.inc();
                            debug!("client stopped answering pings");
                            return close(&mut socket, CLOSE_NO_PONG, "no pong").await;
                        }
                        next_ping = now + ping_every;
                        let ping = socket.send(Message::Ping(Default::default()));
                        match tokio::time::timeout(state.parts.feed.send_timeout, ping).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return,
                            Err(_) => {
                                let failed = Failed::TooSlow { mid_frame: false };
                                return on_failed(&mut socket, failed, &state).await;
                            }
                        }
                    }
                    match &mut live {
                        Some(live) if forming_due.is_some_and(|due| due <= now) => live.due(now),
                        _ => Vec::new(),
                    }
                }
                incoming = socket.next() => match incoming {
                    Some(Ok(Message::Close(_))) => {
                        debug!("client left");
                        return answer_close(&mut socket).await;
                    }
                    // Pongs (and anything else) show the client is alive. A ping's
                    // pong is queued by the websocket layer and leaves on the next
                    // read, which is this loop's next turn, at once.
                    Some(Ok(_)) => {
                        last_heard = Instant::now();
                        continue;
                    }
                    Some(Err(Error::Capacity(_))) => {
                        state.parts.metrics.oversized_messages.inc();
                        debug!("client sent an oversized message");
                        return close(&mut socket, close_code::SIZE, "message too big").await;
                    }
                    // Gone without a close: nothing to answer.
                    None | Some(Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)))
                        => return,
                    // RFC 6455 §7.1.7: a connection failed for a bad frame is closed
                    // with the reason (§7.4.1).
                    Some(Err(Error::Protocol(_))) => {
                        debug!("client broke the protocol");
                        return close(&mut socket, close_code::PROTOCOL, "protocol error").await;
                    }
                    Some(Err(Error::Utf8(_))) => {
                        debug!("client sent invalid UTF-8");
                        return close(&mut socket, close_code::INVALID, "invalid UTF-8").await;
                    }
                    Some(Err(_)) => return,
                }
            };
            if let Err(failed) = send_batch(&mut socket, batch, &state).await {
                return on_failed(&mut socket, failed, &state).await;
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

pub(super) async fn on_failed(socket: &mut Socket, failed: Failed, state: &AppState) {
    if let Failed::TooSlow { mid_frame } = failed {
        state.parts.metrics.slow_clients_closed.inc();
        Noisy::SlowClient.note(&format_args!(
            "CLIENT_SEND_TIMEOUT_SECS={}",
            state.parts.feed.send_timeout.as_secs()
        ));
        // Part way through a frame, a close frame would be read as that frame's
        // rest: the connection is just dropped.
        if !mid_frame {
            close(socket, CLOSE_TOO_SLOW, "too slow").await;
        }
    }
}

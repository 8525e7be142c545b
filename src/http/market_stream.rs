//! Binance USD-M's websocket market streams on candlecast's port (DESIGN.md §8):
//! `/market/stream?streams=a/b` and `/stream?streams=` (combined payloads),
//! `/market/ws/<stream>[/<stream>…]`, `/market/ws` and `/ws/…` (raw events). What the
//! streams carry and how control messages are answered is `mirror::stream`'s; this
//! module is the socket: the upgrade, the shared frames, pings and the close.
//!
//! Binance's docs ("Websocket Market Streams"): the server pings every 3 minutes and
//! disconnects a client that sent no pong for 10 minutes; more than 10 incoming
//! messages a second drops the connection. Pings here follow `CLIENT_PING_SECS`
//! (never rarer than Binance's 3 minutes), the 10 minutes are Binance's.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::close_code;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tracing::{Instrument, debug, info_span};

use super::closing::{answer_close, close};
use super::error::HttpError;
use super::feed::{on_failed, send_batch};
use super::handshake::BadHandshake;
use super::upgrade::{Socket, Upgrade};
use super::{AppState, Slot};
use crate::mirror::stream::{Inbox, Session, inbox};

/// Binance pings at least this often.
const BINANCE_PING_EVERY: Duration = Duration::from_secs(180);
/// A client that sent nothing (no pong) for this long is disconnected, as Binance does.
const PONG_DEADLINE: Duration = Duration::from_secs(600);
/// Control messages are small; 64 KiB leaves room for 1,024 stream names.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Close code and reason for a client over the incoming-message limit.
const CLOSE_TOO_MANY: (u16, &str) = (close_code::POLICY, "Too many requests");
/// Events written to one client in one write, at most.
const MAX_BATCH: usize = 64;

/// `/market/stream`, `/stream`: combined payloads, streams from `?streams=a/b`.
pub async fn combined(
    upgrade: Result<Upgrade, BadHandshake>,
    RawQuery(query): RawQuery,
    State(state): State<AppState>,
) -> Result<Response, HttpError> {
    let streams: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "streams")
        .flat_map(|(_, value)| value.split('/').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    open(upgrade, state, streams, true)
}

/// `/market/ws/<stream>/…`, `/ws/<stream>/…`: raw events.
pub async fn raw(
    upgrade: Result<Upgrade, BadHandshake>,
    Path(path): Path<String>,
    State(state): State<AppState>,
) -> Result<Response, HttpError> {
    let streams = path.split('/').map(str::to_owned).collect();
    open(upgrade, state, streams, false)
}

/// `/market/ws`, `/ws`: raw events, no stream until the client subscribes.
pub async fn bare(
    upgrade: Result<Upgrade, BadHandshake>,
    State(state): State<AppState>,
) -> Result<Response, HttpError> {
    open(upgrade, state, Vec::new(), false)
}

fn open(
    upgrade: Result<Upgrade, BadHandshake>,
    state: AppState,
    streams: Vec<String>,
    combined: bool,
) -> Result<Response, HttpError> {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(bad) => {
            bad.count(&state.parts.metrics);
            return Ok(bad.into_response());
        }
    };
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let (sink, events) = inbox(id);
    let market = state.market.clone();
    let Ok(session) = Session::open(market, sink, streams.iter().map(String::as_str), combined)
    else {
        let body = r#"{"code":2,"msg":"Invalid request: too many streams"}"#;
        return Ok((StatusCode::BAD_REQUEST, body).into_response());
    };
    let Some(slot) = state.claim_slot() else {
        state.parts.metrics.connections_rejected.inc();
        return Err(HttpError::ConnectionLimit {
            max_connections: state.parts.feed.max_connections,
        });
    };
    let clients = state.clients.clone();
    let config = WebSocketConfig::default()
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    Ok(upgrade.on_upgrade(config, move |socket| {
        clients.track_future(
            serve(socket, state, session, events, slot).instrument(info_span!("market", id)),
        )
    }))
}

async fn serve(
    mut socket: Socket,
    state: AppState,
    mut session: Session,
    mut events: Inbox,
    slot: Slot,
) {
    let _slot = slot;
    let ping_every = state.parts.feed.ping_every.min(BINANCE_PING_EVERY);
    let mut last_heard = Instant::now();
    let ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    tokio::pin!(ping);
    debug!(
        streams = session.streams(),
        "market stream client connected"
    );
    loop {
        let batch = tokio::select! {
            biased;
            _ = state.parts.shutdown.cancelled() => {
                return close(&mut socket, close_code::AWAY, "server shutting down").await;
            }
            incoming = socket.next() => {
                let text = match incoming {
                    Some(Ok(Message::Close(_))) => return answer_close(&mut socket).await,
                    Some(Ok(Message::Text(text))) => Some(text),
                    Some(Ok(_)) => None,
                    Some(Err(_)) | None => return,
                };
                last_heard = Instant::now();
                if !session.admit(last_heard) {
                    debug!("market stream client over the message limit");
                    let (code, reason) = CLOSE_TOO_MANY;
                    return close(&mut socket, code, reason).await;
                }
                match text {
                    Some(text) => vec![session.handle(text.as_str())],
                    // A ping's pong leaves on the next read: this loop's next turn.
                    None => continue,
                }
            }
            Some(event) = events.recv() => {
                let mut batch = vec![session.payload(&event)];
                while batch.len() < MAX_BATCH {
                    let Some(event) = events.try_recv() else { break };
                    batch.push(session.payload(&event));
                }
                if events.overflowed() {
                    state.parts.metrics.slow_clients_closed.inc();
                    return close(&mut socket, super::CLOSE_TOO_SLOW, "too slow").await;
                }
                batch
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PONG_DEADLINE {
                    state.parts.metrics.unresponsive_clients_closed.inc();
                    return close(&mut socket, super::CLOSE_NO_PONG, "no pong").await;
                }
                let sent = socket.send(Message::Ping(Default::default()));
                match tokio::time::timeout(state.parts.feed.send_timeout, sent).await {
                    Ok(Ok(())) => continue,
                    _ => return,
                }
            }
        };
        // The same send as `/`: a timed-out send is finished or the connection is
        // dropped without a close frame, never a frame cut in two.
        if let Err(failed) = send_batch(&mut socket, batch, &state).await {
            return on_failed(&mut socket, failed, &state).await;
        }
    }
}

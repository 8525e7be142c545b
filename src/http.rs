//! The axum router: the websocket feed on `/` and the health endpoint, plus the
//! listener setup. Connections are cheap: small buffers, one shared snapshot, and
//! a slow client only ever owes the newest message of each coin.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Config;
use crate::hub::Hub;
use crate::telemetry::Counters;

/// Pending connections the kernel queues for us; bursts of connects beyond the
/// default 128 would otherwise be dropped and retried by clients after a second.
pub const LISTEN_BACKLOG: u32 = 4096;
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

/// Binds `addr` with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How connections are treated, from the configuration.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub send_timeout: Duration,
    pub ping_every: Duration,
    pub max_connections: usize,
}

impl ClientPolicy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            send_timeout: config.client_send_timeout,
            ping_every: config.client_ping_every,
            max_connections: config.max_connections,
        }
    }
}

/// What handlers share: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    /// The windows and their published messages.
    pub hub: Hub,
    /// Fires on shutdown; open connections close with 1001.
    pub shutdown: CancellationToken,
    /// Every client task, so shutdown can wait for their close frames.
    pub clients: TaskTracker,
    pub counters: Arc<Counters>,
    policy: Arc<ClientPolicy>,
    open: Arc<AtomicUsize>,
    next_connection: Arc<AtomicU64>,
}

impl AppState {
    /// State for a router serving `hub` until `shutdown` fires.
    pub fn new(
        hub: Hub,
        shutdown: CancellationToken,
        counters: Arc<Counters>,
        policy: ClientPolicy,
    ) -> Self {
        Self {
            hub,
            shutdown,
            clients: TaskTracker::new(),
            counters,
            policy: Arc::new(policy),
            open: Arc::new(AtomicUsize::new(0)),
            next_connection: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Takes one of the `MAX_CONNECTIONS` slots, if any is free.
    fn claim_slot(&self) -> Option<Slot> {
        let claimed = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.policy.max_connections).then_some(open + 1)
            })
            .is_ok();
        claimed.then(|| {
            Counters::add(&self.counters.clients_connected, 1);
            Slot {
                open: Arc::clone(&self.open),
                counters: Arc::clone(&self.counters),
            }
        })
    }
}

/// A connection slot, given back when the connection ends.
struct Slot {
    open: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        Counters::sub(&self.counters.clients_connected, 1);
    }
}

/// The service's routes, without a listener, so tests can drive it either way.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(feed))
        .route("/health", get(health))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `/`: a websocket upgrade subscribes to the feed; a plain request gets a hint.
async fn feed(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    connect_info: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, "websocket")],
            "candlecast streams candles over a websocket: connect with e.g. `wscat -c ws://HOST:PORT/`\n",
        )
            .into_response();
    };
    let Some(slot) = state.claim_slot() else {
        Counters::add(&state.counters.connections_rejected, 1);
        let body = serde_json::json!({
            "error": "connection limit reached",
            "max_connections": state.policy.max_connections,
        });
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(body),
        )
            .into_response();
    };
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let peer = connect_info
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    let clients = state.clients.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| {
            clients.track_future(
                serve_client(socket, state, slot).instrument(info_span!("client", id, peer)),
            )
        })
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
    match tokio::time::timeout(state.policy.send_timeout, sending).await {
        Ok(Ok(())) => {
            Counters::add(&state.counters.messages_sent, messages);
            Counters::add(&state.counters.bytes_sent, bytes);
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
async fn serve_client(mut socket: WebSocket, state: AppState, _slot: Slot) {
    let mut updates = state.hub.subscribe();
    let snapshot = Arc::clone(&updates.borrow_and_update());
    let mut sent: Vec<u64> = snapshot.coins.iter().map(|coin| coin.version).collect();
    let outcome = send_batch(
        &mut socket,
        snapshot.coins.iter().map(|coin| coin.text.clone()),
        &state,
    )
    .await;
    drop(snapshot);
    if let Err(failed) = outcome {
        return on_failed(&mut socket, failed, &state).await;
    }
    debug!("client subscribed");

    let ping_every = state.policy.ping_every;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                return close(&mut socket, close_code::AWAY, "server shutting down").await;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = Arc::clone(&updates.borrow_and_update());
                let changed: Vec<Utf8Bytes> = snapshot
                    .coins
                    .iter()
                    .zip(sent.iter_mut())
                    .filter(|(coin, sent)| coin.version != **sent)
                    .map(|(coin, sent)| {
                        *sent = coin.version;
                        coin.text.clone()
                    })
                    .collect();
                drop(snapshot);
                if let Err(failed) = send_batch(&mut socket, changed.into_iter(), &state).await {
                    return on_failed(&mut socket, failed, &state).await;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    Counters::add(&state.counters.unresponsive_clients_closed, 1);
                    debug!("client stopped answering pings");
                    return close(&mut socket, CLOSE_NO_PONG, "no pong").await;
                }
                let ping = tokio::time::timeout(state.policy.send_timeout, socket.send(Message::Ping(Default::default())));
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
                        Counters::add(&state.counters.oversized_messages, 1);
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
        Counters::add(&state.counters.slow_clients_closed, 1);
        warn!(timeout = ?state.policy.send_timeout, "closing a client too slow to take its messages");
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

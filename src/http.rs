//! The axum router: the websocket feed and the live page on `/`, health, readiness,
//! metrics and the history API, plus the listener setup. Connections are cheap:
//! small buffers, one shared snapshot, and a slow client only ever owes the newest
//! message of each coin.
// Validation helpers return the 400 response itself; it is built once, for a
// rejected request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::trace::TraceLayer;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Config;
use crate::hub::{Hub, View};
use crate::protocol::Format;
use crate::store::CandleStore;
use crate::telemetry::{Counters, SymbolLabel};

/// The live page, and the chart library it uses (vendored from npm; see web/vendor).
const PAGE: &str = include_str!("../web/index.html");
const CHARTS_JS: &[u8] =
    include_bytes!("../web/vendor/lightweight-charts/lightweight-charts.standalone.production.js");
/// Most candles one history request returns.
pub const HISTORY_API_MAX: usize = 1000;

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

/// How connections are treated and what readiness means, from the configuration.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub send_timeout: Duration,
    pub ping_every: Duration,
    pub max_connections: usize,
    /// Readiness fails when the exchange sent no data for this long.
    pub upstream_stale_after: Duration,
    /// An ingester is ready with live exchange data; a follower with an open change stream.
    pub ingest: bool,
    pub interval: crate::config::Interval,
}

impl ClientPolicy {
    pub fn from_config(config: &Config) -> Self {
        Self {
            send_timeout: config.client_send_timeout,
            ping_every: config.client_ping_every,
            max_connections: config.max_connections,
            upstream_stale_after: config.upstream_stale_after,
            ingest: config.ingest,
            interval: config.interval.clone(),
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
    store: Arc<dyn CandleStore>,
    /// For a follower's readiness: the ingesters' heartbeats.
    mongo: Option<crate::store::MongoStore>,
    registry: Arc<prometheus_client::registry::Registry>,
    policy: Arc<ClientPolicy>,
    open: Arc<AtomicUsize>,
    next_connection: Arc<AtomicU64>,
}

impl AppState {
    /// State for a router serving `hub` (and `store`'s history) until `shutdown` fires.
    pub fn new(
        hub: Hub,
        store: Arc<dyn CandleStore>,
        mongo: Option<crate::store::MongoStore>,
        shutdown: CancellationToken,
        counters: Arc<Counters>,
        policy: ClientPolicy,
    ) -> Self {
        Self {
            hub,
            shutdown,
            clients: TaskTracker::new(),
            registry: Arc::new(counters.registry()),
            counters,
            store,
            mongo,
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
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/candles/{symbol}", get(history))
        .route(
            "/assets/lightweight-charts.standalone.production.js",
            get(charts_js),
        )
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `/ready`: 200 when the store answers and the exchange sent data within the stale
/// window; 503 with the reasons otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if let Err(err) = state.store.ping().await {
        reasons.push(format!("store: {err}"));
    }
    if state.policy.ingest {
        let last = state.counters.last_upstream_data_ms.load(Ordering::Relaxed);
        let silent_ms = chrono::Utc::now().timestamp_millis() - last;
        if last == 0 {
            reasons.push("upstream: no data received from the exchange yet".to_owned());
        } else if silent_ms > state.policy.upstream_stale_after.as_millis() as i64 {
            reasons.push(format!(
                "upstream: no data from the exchange for {} s",
                silent_ms / 1000
            ));
        }
    } else {
        if Counters::get(&state.counters.change_stream_open) == 0 {
            reasons.push(
                "change stream: not open, so candles written by ingesters do not arrive".to_owned(),
            );
        }
        if let Some(reason) = ingesters_unhealthy(&state).await {
            reasons.push(reason);
        }
    }
    if reasons.is_empty() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let body = serde_json::json!({"status": "not ready", "reasons": reasons});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Why no new candles reach a follower, judged by the ingesters' heartbeats.
async fn ingesters_unhealthy(state: &AppState) -> Option<String> {
    let stale_ms = state.policy.upstream_stale_after.as_millis() as i64;
    let now = chrono::Utc::now().timestamp_millis();
    let hint = "new candles come only from replicas with INGEST=true";
    match state.mongo.as_ref()?.freshest_heartbeat().await {
        Ok(None) => Some(format!("ingesters: none has reported yet; {hint}")),
        Ok(Some(beat)) if now - beat.seen_ms > 2 * stale_ms => Some(format!(
            "ingesters: none has reported for {} s; {hint}",
            (now - beat.seen_ms) / 1000
        )),
        Ok(Some(beat)) if now - beat.last_data_ms > stale_ms => Some(format!(
            "ingesters: no data from the exchange for {} s",
            (now - beat.last_data_ms) / 1000
        )),
        Ok(Some(_)) => None,
        Err(_) => None, // the store's own check reports it
    }
}

/// `/metrics`: every counter in the Prometheus (OpenMetrics) text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let now = chrono::Utc::now().timestamp_millis();
    for symbol in state.hub.symbols() {
        if let Some((open_time, _)) = state.hub.newest_open_time(symbol) {
            let closed_at = open_time + state.policy.interval.millis();
            let label = SymbolLabel {
                symbol: symbol.clone(),
            };
            state
                .counters
                .newest_candle_age
                .get_or_create(&label)
                .set((now - closed_at) as f64 / 1000.0);
        }
    }
    let mut body = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn charts_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CHARTS_JS,
    )
        .into_response()
}

/// A 400 answer naming the parameter at fault.
fn bad_parameter(parameter: &str, error: String) -> Response {
    let body = serde_json::json!({"error": error, "parameter": parameter});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Query pairs, decoded; a parameter given twice is an error.
fn query_pairs(query: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, Response> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(bad_parameter(
                &name,
                format!(
                    "unknown parameter {name:?}; expected one of {}",
                    known.join(", ")
                ),
            ));
        }
        if pairs.iter().any(|(seen, _)| *seen == name) {
            return Err(bad_parameter(
                &name,
                format!("{name} is given more than once"),
            ));
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

fn parse_number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    parameter: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, Response> {
    match value.parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(bad_parameter(
            parameter,
            format!(
                "{parameter} must be a whole number from {} to {}, got {value:?}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// Which coins a websocket client wants, in which order, and how.
struct Subscription {
    positions: Vec<usize>,
    view: View,
}

/// Reads `?symbols=`, `?limit=` and `?format=`.
fn parse_subscription(query: Option<&str>, hub: &Hub) -> Result<Subscription, Response> {
    let mut subscription = Subscription {
        positions: (0..hub.symbols().len()).collect(),
        view: hub.default_view(),
    };
    for (name, value) in query_pairs(query, &["symbols", "limit", "format"])? {
        match name.as_str() {
            "symbols" => {
                let mut positions = Vec::new();
                for symbol in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let symbol = symbol.to_ascii_uppercase();
                    let Some(position) = hub.position(&symbol) else {
                        let known = hub.symbols().join(",");
                        return Err(bad_parameter(
                            "symbols",
                            format!("unknown symbol {symbol}; this server has {known}"),
                        ));
                    };
                    if positions.contains(&position) {
                        return Err(bad_parameter(
                            "symbols",
                            format!("{symbol} is listed twice"),
                        ));
                    }
                    positions.push(position);
                }
                if positions.is_empty() {
                    return Err(bad_parameter(
                        "symbols",
                        "symbols must name at least one symbol".to_owned(),
                    ));
                }
                subscription.positions = positions;
            }
            "limit" => {
                subscription.view.limit = parse_number("limit", &value, 1..=hub.history_max())?
            }
            "format" => {
                subscription.view.format = match value.as_str() {
                    "compact" => Format::Compact,
                    "candles" => Format::Candles,
                    _ => {
                        return Err(bad_parameter(
                            "format",
                            format!("format must be compact or candles, got {value:?}"),
                        ));
                    }
                }
            }
            _ => unreachable!("query_pairs only returns known names"),
        }
    }
    Ok(subscription)
}

/// `/api/v1/candles/{symbol}?limit=&before=`: stored candles, newest first, paged
/// by `before` (an open time in epoch ms, exclusive).
async fn history(
    Path(symbol): Path<String>,
    RawQuery(query): RawQuery,
    State(state): State<AppState>,
) -> Response {
    let symbol = symbol.to_ascii_uppercase();
    if state.hub.position(&symbol).is_none() {
        let body = serde_json::json!({"error": format!("unknown symbol {symbol}"), "symbols": state.hub.symbols()});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let (mut limit, mut before) = (100usize, None);
    let pairs = match query_pairs(query.as_deref(), &["limit", "before"]) {
        Ok(pairs) => pairs,
        Err(response) => return response,
    };
    for (name, value) in pairs {
        let parsed = match name.as_str() {
            "limit" => parse_number("limit", &value, 1..=HISTORY_API_MAX).map(|n| limit = n),
            _ => parse_number("before", &value, 0..=i64::MAX).map(|n| before = Some(n)),
        };
        if let Err(response) = parsed {
            return response;
        }
    }
    let interval = state.policy.interval.name();
    match state.store.page(&symbol, interval, limit, before).await {
        Ok(candles) => {
            let candles: Vec<crate::protocol::StoredCandle> =
                candles.iter().map(Into::into).collect();
            axum::Json(
                serde_json::json!({"symbol": symbol, "interval": interval, "candles": candles}),
            )
            .into_response()
        }
        Err(err) => {
            warn!(error = %err, "history request failed");
            let body = serde_json::json!({"error": format!("the store is unavailable: {err}")});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// `/`: a websocket upgrade subscribes to the feed; a browser gets the live page.
async fn feed(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    RawQuery(query): RawQuery,
    State(state): State<AppState>,
    connect_info: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return Html(PAGE).into_response();
    };
    let subscription = match parse_subscription(query.as_deref(), &state.hub) {
        Ok(subscription) => subscription,
        Err(response) => return response,
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
                serve_client(socket, state, subscription, slot)
                    .instrument(info_span!("client", id, peer)),
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
async fn serve_client(
    mut socket: WebSocket,
    state: AppState,
    subscription: Subscription,
    _slot: Slot,
) {
    let Subscription { positions, view } = subscription;
    let mut updates = state.hub.subscribe();
    let snapshot = Arc::clone(&updates.borrow_and_update());
    let mut sent: Vec<u64> = positions
        .iter()
        .map(|&p| snapshot.coins[p].version)
        .collect();
    let first: Vec<Utf8Bytes> = positions
        .iter()
        .map(|&p| state.hub.message(&snapshot, p, view))
        .collect();
    drop(snapshot);
    let outcome = send_batch(&mut socket, first.into_iter(), &state).await;
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
                let changed: Vec<Utf8Bytes> = positions
                    .iter()
                    .zip(sent.iter_mut())
                    .filter(|(p, sent)| snapshot.coins[**p].version != **sent)
                    .map(|(&p, sent)| {
                        *sent = snapshot.coins[p].version;
                        state.hub.message(&snapshot, p, view)
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

//! The HTTP/1.1 server under the router: our own accept loop over hyper, so that
//! every connection is bounded before it upgrades (header and idle timeouts, header
//! size, a cap on open connections), a process out of file descriptors still
//! answers, and shutdown has a deadline whatever a client is doing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use super::proxy::{self, ProxyProtocol};
use super::quiet::{self, Noisy};
use super::timeouts::{Activity, ConnectionTimer, Watched};
use crate::metrics::Metrics;

/// A connection whose request headers are not complete this long after it opened
/// (or after the first byte of a later request) is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request line and headers larger than this are answered 431 and the connection closed.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most HTTP connections open at once that have not upgraded to websockets
/// (fewer when `MAX_CONNECTIONS` is small, see [`http_connection_cap`]); more are
/// answered 503 at once.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// At shutdown, requests in flight get this long to finish before their
/// connections are dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The most time spent answering a refused connection.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Refused connections being answered at once; beyond this they are closed unanswered.
const MAX_REFUSING: usize = 64;

/// The bounds of one server's HTTP connections.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_HEADER_BYTES`], in bytes.
    pub max_header_bytes: usize,
    /// HTTP connections open at once, before their upgrade.
    pub max_connections: usize,
    /// See [`DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// `PROXY_PROTOCOL`: the header each connection must start with, if any.
    pub proxy_protocol: ProxyProtocol,
}

impl ServeLimits {
    /// The service's limits for a server of `max_clients` websocket clients.
    pub fn for_clients(max_clients: usize) -> Self {
        Self {
            header_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_connections: http_connection_cap(max_clients),
            drain_timeout: DRAIN_TIMEOUT,
            proxy_protocol: ProxyProtocol::Off,
        }
    }
}

/// HTTP connections allowed open before their upgrade for `max_clients` websocket
/// clients: a quarter of them, from 16 to [`MAX_HTTP_CONNECTIONS`].
pub fn http_connection_cap(max_clients: usize) -> usize {
    (max_clients / 4).clamp(16, MAX_HTTP_CONNECTIONS)
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets
/// requests in flight finish for up to `drain_timeout` and drops what is left.
/// Upgraded websockets are not waited for here: they close on `shutdown` by themselves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    connections.spawn(quiet::summarize(shutdown.clone()));
    // A descriptor kept free so that, when the process runs out, the waiting
    // connection can still be accepted and answered instead of hanging.
    let mut reserve = reserve_descriptor();
    loop {
        if reserve.is_none() {
            reserve = reserve_descriptor();
        }
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                metrics.serving.accept_errors.inc();
                Noisy::AcceptFailed.note(&err);
                if out_of_descriptors(&err) && reserve.take().is_some() {
                    let waiting =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept());
                    if let Ok(Ok((stream, _))) = waiting.await {
                        refuse(stream, "the server is out of file descriptors");
                    }
                } else if !is_per_connection(&err) {
                    // Out of memory or descriptors with no reserve left: wait a little
                    // instead of spinning; the listen queue holds the connections.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.serving.http_connections_refused.inc();
            Noisy::HttpConnectionLimit.note(&format_args!("{} open", limits.max_connections));
            if let Ok(slot) = Arc::clone(&refusing).try_acquire_owned() {
                connections.spawn(async move {
                    let _slot = slot;
                    answer_refused(stream, "too many open connections").await;
                });
            }
            continue;
        };
        connections.spawn(serve_connection(Connection {
            stream,
            peer,
            router: router.clone(),
            limits: limits.clone(),
            metrics: Arc::clone(&metrics),
            _permit: permit,
            shutdown: shutdown.clone(),
            hard_stop: hard_stop.clone(),
        }));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        debug!(
            connections = connections.len(),
            "dropping HTTP connections still open after the drain timeout"
        );
        hard_stop.cancel();
        connections.wait().await;
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServeLimits,
    metrics: Arc<Metrics>,
    /// Its place among the open HTTP connections, given back when it ends or upgrades.
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

async fn serve_connection(connection: Connection) {
    let Connection {
        mut stream,
        peer,
        router,
        limits,
        metrics,
        _permit,
        shutdown,
        hard_stop,
    } = connection;
    // The client's address, from the load balancer's PROXY header where there is
    // one, within the time the first request's headers have.
    let client = tokio::select! {
        client = tokio::time::timeout(
            limits.header_timeout,
            proxy::client_address(&mut stream, peer, limits.proxy_protocol, &metrics),
        ) => client.ok().flatten(),
        _ = shutdown.cancelled() => None,
    };
    let Some(peer) = client else { return };
    let open = &metrics.serving.http_connections_open;
    open.inc();
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let response: tower::util::Oneshot<Router, _> = router.clone().oneshot(request);
        async move { Ok::<_, Infallible>(response.await.unwrap_or_else(|never| match never {})) }
    });
    let connection = http1::Builder::new()
        .timer(ConnectionTimer::new(
            activity,
            limits.header_timeout,
            limits.idle_timeout,
        ))
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size((limits.max_header_bytes * 2).max(8 * 1024))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        _ = connection.as_mut() => true,
        _ = hard_stop.cancelled() => true,
        _ = shutdown.cancelled() => false,
    };
    if !ended {
        // Finish the request in flight, if any, then close; an idle connection
        // closes now.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection.as_mut() => {}
            _ = hard_stop.cancelled() => {}
        }
    }
    open.dec();
}

/// The answer to a connection refused before any request was read.
fn refusal(reason: &str) -> Vec<u8> {
    let body = format!("{{\"error\":\"{reason}\"}}");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers `stream` 503 in the background (out-of-descriptors path).
fn refuse(stream: TcpStream, reason: &'static str) {
    tokio::spawn(answer_refused(stream, reason));
}

/// Writes the 503, then reads what the client sent until it closes (closing with
/// unread data would reset the connection and could lose the answer), all within
/// [`REFUSE_TIMEOUT`].
async fn answer_refused(mut stream: TcpStream, reason: &str) {
    let answer = refusal(reason);
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Errors about one connection that went away while queued; the next accept is fine.
fn is_per_connection(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

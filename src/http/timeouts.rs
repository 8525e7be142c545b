//! The two clocks of an HTTP connection before it upgrades: how long a request's
//! headers may take to arrive, and how long a kept-alive connection may sit idle.
//!
//! hyper has one knob, `header_read_timeout`, and starts it whenever it waits for a
//! request head, idle or not. [`ConnectionTimer`] is the timer hyper asks for that
//! clock: the first request gets the header timeout from accept; later ones get the
//! idle timeout until their first byte arrives ([`Watched`] notes reads), then the
//! header timeout from that byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a connection last received bytes, shared by its [`Watched`] socket and its
/// [`ConnectionTimer`].
#[derive(Debug)]
pub(super) struct Activity {
    born: Instant,
    /// Nanoseconds after `born` of the latest read that returned bytes.
    last_read_nanos: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            last_read_nanos: AtomicU64::new(0),
        })
    }

    fn read_now(&self) {
        let nanos = self.born.elapsed().as_nanos() as u64;
        self.last_read_nanos.store(nanos.max(1), Ordering::Relaxed);
    }

    fn last_read(&self) -> Option<Instant> {
        match self.last_read_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.born + Duration::from_nanos(nanos)),
        }
    }
}

/// A socket that notes in its [`Activity`] when it receives bytes.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_now();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The timer hyper uses for one connection's header-read timeout (see the module
/// docs); hyper asks it for a new sleep each time it starts waiting for a request.
pub(super) struct ConnectionTimer {
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Whether the first request's clock was handed out.
    started: AtomicBool,
}

impl ConnectionTimer {
    pub(super) fn new(
        activity: Arc<Activity>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            activity,
            header_timeout,
            idle_timeout,
            started: AtomicBool::new(false),
        }
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep::plain(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        if !self.started.swap(true, Ordering::Relaxed) {
            // The first request: its headers are due within the header timeout.
            return Box::pin(HeadSleep::plain(deadline.into()));
        }
        let now = Instant::now();
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep_until(now + self.idle_timeout)),
            idle: Some(Idle {
                since: now,
                activity: Arc::clone(&self.activity),
                header_timeout: self.header_timeout,
            }),
        })
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into()
    }
}

/// A kept-alive connection waiting for its next request.
struct Idle {
    since: Instant,
    activity: Arc<Activity>,
    header_timeout: Duration,
}

/// Completes when the wait for a request head has lasted too long.
struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set while no byte of the next request has arrived.
    idle: Option<Idle>,
}

impl HeadSleep {
    fn plain(deadline: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            idle: None,
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this after every read while it waits for a head, so the first
        // byte of the next request is seen here at once: from then on, the header
        // timeout runs instead of the idle one.
        if let Some(idle) = &self.idle
            && let Some(read) = idle.activity.last_read()
            && read > idle.since
        {
            let due = (read + idle.header_timeout).min(self.sleep.deadline());
            self.idle = None;
            self.sleep.as_mut().reset(due);
        }
        self.sleep.as_mut().poll(cx)
    }
}

// hyper's timers must be shareable across threads; every field here is.
impl Sleep for HeadSleep {}

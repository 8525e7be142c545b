//! One upstream connection while it is up: its link to the exchange (and, during a
//! renewal, the successor link), the stale watchdog, renewal (make before break)
//! ahead of Binance's 24-hour cut, changes to the symbols it carries, and the repair
//! of a stream that REST showed to have missed candles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use url::Url;

use super::frames::Lost;
use super::link::{Link, LinkEvent, Socket};
use super::requests::{ANSWER_TIMEOUT, URL_STREAMS};
use super::upstream::Carried;
use super::{Exchange, Overlap, ReconnectCause};
use crate::metrics::ReasonLabel;
use crate::retry::Backoff;
use crate::telemetry::Chain;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads (of up to 64 frames each) done to find a late answer before giving up on it.
const MAX_DRAIN_READS: usize = 64;

type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Socket, ConnectError>> + Send + 'a>>;

/// Why a stream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect failed")]
    Failed(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("connect timed out after {0:?}")]
    TimedOut(Duration),
}

/// How a stream connection ended.
#[derive(Debug)]
pub(super) enum Ended {
    Shutdown,
    /// It carries nothing any more.
    Released,
    /// Lost, why, and the details for the log line.
    Lost(ReconnectCause, String),
}

impl Exchange {
    /// Opens a combined-stream connection to `url`, within `CONNECT_TIMEOUT`.
    pub(super) async fn connect(&self, url: Url) -> Result<Socket, ConnectError> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(err)) => Err(ConnectError::Failed(Box::new(err))),
            Err(_) => Err(ConnectError::TimedOut(CONNECT_TIMEOUT)),
        }
    }

    /// The URL of a connection carrying `symbols`, naming the first
    /// [`URL_STREAMS`] of them; those it names.
    pub(super) fn link_url(&self, symbols: &[String]) -> (Url, Vec<String>) {
        let in_url = symbols[..symbols.len().min(URL_STREAMS)].to_vec();
        let url = super::stream_url(&self.options.ws_url, &in_url, &self.market.interval);
        (url, in_url)
    }

    /// A link over `socket`, whose URL named `in_url`, asked to carry `wanted`.
    pub(super) fn link(&self, socket: Socket, in_url: &[String], wanted: &[String]) -> Link {
        let suffix = format!("@kline_{}", self.market.interval.name());
        let mut link = Link::new(socket, in_url, suffix);
        link.sync(wanted);
        link
    }

    /// Reads `link` until it is lost, `cancel` fires or the connection carries
    /// nothing any more. At `max_age` a successor link is opened; once it carries
    /// every stream and has delivered a kline it replaces the first, which is then
    /// closed, so no candle falls between the two.
    pub(super) async fn stream(
        self: &Arc<Self>,
        mut link: Link,
        carried: &mut Carried,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Ended {
        let stale = self.options.stale_after;
        let mut renew_at = Instant::now() + self.options.max_age;
        let mut renewing: Option<(Connecting<'_>, Vec<String>)> = None;
        let mut successor: Option<Link> = None;
        let mut renewed_for_missing: Option<Instant> = None;
        let every = (stale / 2).max(Duration::from_millis(250));
        let mut quiet_check = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            // A connection that has delivered data for a whole stale window is healthy:
            // the next failure starts again from the shortest delay.
            if link.last_data - link.connected_at >= stale {
                backoff.reset();
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), link.socket.close(None)).await;
                    return Ended::Shutdown;
                }
                command = carried.commands.recv() => {
                    let Some(command) = command else {
                        let _ = tokio::time::timeout(Duration::from_secs(2), link.socket.close(None)).await;
                        return Ended::Released;
                    };
                    let added = carried.apply(command);
                    link.sync(&carried.symbols);
                    if let Some(next) = successor.as_mut() {
                        next.sync(&carried.symbols);
                    }
                    self.repair_followed(added, cancel);
                }
                _ = quiet_check.tick() => {
                    let missed = self.check_quiet(&carried.symbols, cancel);
                    if missed.is_empty() {
                    } else if carried.symbols.len() > URL_STREAMS {
                        // Renewing would move hundreds of healthy streams for one.
                        self.metrics.resubscribed.inc_by(missed.len() as u64);
                        warn!(streams = missed.len(), first = %missed[0], "REST found candles the stream did not deliver; subscribing those streams afresh");
                        link.resubscribe(&missed);
                    } else if renewing.is_none()
                        && successor.is_none()
                        && renewed_for_missing.is_none_or(|at| at.elapsed() >= stale)
                    {
                        // A connection this small is made afresh by one handshake,
                        // which also cures a fault of the connection itself.
                        renewed_for_missing = Some(Instant::now());
                        warn!(streams = missed.len(), first = %missed[0], "REST found candles the stream did not deliver; renewing the connection");
                        renew_at = Instant::now();
                    }
                }
                // Only klines count as life: a retired endpoint keeps TCP open and
                // sends nothing, a broken one only acknowledgements.
                _ = tokio::time::sleep_until(link.last_data + stale) => {
                    match successor.take() {
                        Some(next) => link = self.switch(link, next, &carried.symbols, &mut renew_at),
                        None => return Ended::Lost(ReconnectCause::Stale, format!("no data for {stale:?}")),
                    }
                }
                event = link.next_event() => {
                    if let Err((cause, reason)) = self.on_event(&mut link, event, &carried.symbols, cancel).await {
                        match successor.take() {
                            Some(next) => link = self.switch(link, next, &carried.symbols, &mut renew_at),
                            None => return Ended::Lost(cause, reason),
                        }
                    }
                }
                _ = tokio::time::sleep_until(renew_at), if renewing.is_none() && successor.is_none() => {
                    debug!(age = ?link.connected_at.elapsed(), "renewing the upstream connection");
                    let (url, in_url) = self.link_url(&carried.symbols);
                    renewing = Some((Box::pin(self.connect(url)), in_url));
                }
                connected = async { renewing.as_mut().expect("guarded").0.as_mut().await }, if renewing.is_some() => {
                    let (_, in_url) = renewing.take().expect("guarded");
                    match connected {
                        Ok(socket) => successor = Some(self.link(socket, &in_url, &carried.symbols)),
                        Err(err) => {
                            let retry = backoff.next_delay();
                            warn!(reason = %Chain(&err), retry_in = ?retry, "renewal connection failed; keeping the current one");
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
                event = async { successor.as_mut().expect("guarded").next_event().await }, if successor.is_some() => {
                    let next = successor.as_mut().expect("guarded");
                    match self.on_event(next, event, &carried.symbols, cancel).await {
                        // Only a kline proves the new link streams, and only a link
                        // carrying everything may replace the old one.
                        Ok(()) if next.delivered && next.settled() => {
                            let next = successor.take().expect("guarded");
                            link = self.switch(link, next, &carried.symbols, &mut renew_at);
                        }
                        Ok(()) => {}
                        Err((_, reason)) => {
                            successor = None;
                            let retry = backoff.next_delay();
                            warn!(reason, retry_in = ?retry, "renewal connection ended before carrying every stream; keeping the current one");
                            renew_at = Instant::now() + retry;
                        }
                    }
                }
            }
        }
    }

    /// Handles what woke `link` up.
    ///
    /// # Errors
    /// The link is lost: it ended, a write failed, or a request went unanswered.
    async fn on_event(
        self: &Arc<Self>,
        link: &mut Link,
        event: LinkEvent,
        wanted: &[String],
        cancel: &CancellationToken,
    ) -> Result<(), Lost> {
        match event {
            LinkEvent::Read(first) => self.read(link, first, cancel),
            LinkEvent::Send => link
                .send_next()
                .await
                .map_err(|reason| (ReconnectCause::Error, reason)),
            LinkEvent::Resync => {
                link.resync(wanted);
                Ok(())
            }
            LinkEvent::Overdue(id) => {
                // Our own lateness is not the exchange's: what has arrived is read
                // before the request counts as unanswered.
                for _ in 0..MAX_DRAIN_READS {
                    if !link.requests.is_pending(id) {
                        return Ok(());
                    }
                    match link.socket.next().now_or_never() {
                        Some(ready) => self.read(link, ready, cancel)?,
                        None => break,
                    }
                }
                if !link.requests.is_pending(id) {
                    return Ok(());
                }
                self.metrics
                    .subscription_failures
                    .get_or_create(&ReasonLabel {
                        reason: "unanswered",
                    })
                    .inc();
                let what = link.requests.give_up(id).map_or_else(
                    || "a request".to_owned(),
                    |request| {
                        format!(
                            "{} of {} streams",
                            request.method.name(),
                            request.symbols.len()
                        )
                    },
                );
                Err((
                    ReconnectCause::Unanswered,
                    format!("no answer to {what} (id {id}) within {ANSWER_TIMEOUT:?}"),
                ))
            }
        }
    }

    /// Makes `next` the link in use and closes `old` in the background. The silence
    /// clocks of `symbols` start again, as on a new connection: a link that replaced
    /// a silent one must not find hundreds of symbols quiet at once.
    fn switch(
        &self,
        mut old: Link,
        mut next: Link,
        symbols: &[String],
        renew_at: &mut Instant,
    ) -> Link {
        self.metrics.renewals.inc();
        info!(age = ?old.connected_at.elapsed(), "upstream connection renewed");
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.socket.close(None)).await;
        });
        next.connected_at = Instant::now();
        next.last_data = Instant::now();
        self.watch_from(symbols, Instant::now());
        *renew_at = Instant::now() + self.options.max_age;
        next
    }

    /// After symbols were added to a connection that is up: their silence clocks
    /// start, and what they lack is fetched by REST.
    fn repair_followed(self: &Arc<Self>, added: Vec<String>, cancel: &CancellationToken) {
        if added.is_empty() {
            return;
        }
        self.watch_from(&added, Instant::now());
        let resume = self.resume_points_of(&added);
        let exchange = Arc::clone(self);
        let cancel = cancel.clone();
        self.tasks.spawn(
            async move {
                exchange
                    .backfill(resume, Overlap::SkipInFlight, &cancel)
                    .await;
            }
            .instrument(info_span!("backfill", reason = "followed")),
        );
    }
}

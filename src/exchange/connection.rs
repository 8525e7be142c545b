//! One upstream connection's life: connect (the first streams in the URL, the rest
//! subscribed), repair each symbol's gap after every (re)connect, stream, and
//! reconnect with backoff when the connection is lost; until shutdown, or until the
//! upstream task lets it go.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::stream::Ended;
use super::upstream::Carried;
use super::{Exchange, Overlap, ReconnectCause};
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::telemetry::Chain;

impl Exchange {
    /// Keeps one connection up for `carried`'s symbols until `cancel`, or until it
    /// carries nothing any more.
    pub(super) async fn keep_connection(
        self: Arc<Self>,
        mut carried: Carried,
        cancel: CancellationToken,
    ) {
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, self.options.backoff_max);
        loop {
            // Taken before connecting: the new stream may deliver newer candles before
            // the repair starts, and the gap lies behind what we held when it broke.
            let resume = self.resume_points_of(&carried.symbols);
            let (url, in_url) = self.link_url(&carried.symbols);
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                connected = self.connect(url.clone()) => connected,
            };
            let (cause, reason) = match connected {
                Ok(socket) => {
                    info!(%url, streams = carried.symbols.len(), "upstream connected");
                    let link = self.link(socket, &in_url, &carried.symbols);
                    self.watch_from(&carried.symbols, Instant::now());
                    let repair = Arc::clone(&self);
                    let repair_cancel = cancel.clone();
                    self.tasks.spawn(
                        async move {
                            // The exchange's clock again: ours may have stepped.
                            if let Ok(server_ms) = repair.rest.server_time().await {
                                repair.saw_exchange_time(server_ms);
                            }
                            repair
                                .backfill(resume, Overlap::SkipInFlight, &repair_cancel)
                                .await
                        }
                        .instrument(info_span!("backfill", reason = "reconnect")),
                    );
                    self.metrics.upstream_connected.inc();
                    let ended = self.stream(link, &mut carried, &cancel, &mut backoff).await;
                    self.metrics.upstream_connected.dec();
                    match ended {
                        Ended::Shutdown | Ended::Released => return,
                        Ended::Lost(cause, reason) => (cause, reason),
                    }
                }
                Err(err) => (ReconnectCause::ConnectFailed, Chain(&err).to_string()),
            };
            self.metrics.reconnected(cause.label());
            let delay = backoff.next_delay();
            warn!(cause = cause.label(), reason = %reason, retry_in = ?delay, "upstream connection lost; reconnecting");
            // Changes meanwhile apply to the next connection, whose repair covers
            // the symbols they add.
            let retry_at = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(retry_at) => break,
                    command = carried.commands.recv() => match command {
                        Some(command) => {
                            carried.apply(command);
                        }
                        None => return,
                    },
                }
            }
        }
    }
}

//! The one shutdown source: SIGTERM, SIGINT (Ctrl-C) and SIGHUP, heard from the
//! first instant of the process and turned into a [`CancellationToken`] on which
//! every wait of start-up, serving and shutdown ends.
//!
//! SIGHUP: graceful stop, same as SIGTERM. A reload would have to re-read settings
//! that size windows and queues already built; a stop that the supervisor follows
//! with a start does that correctly, and a terminal that closes stops the service
//! cleanly instead of killing it.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// The stop signals, listened to from the moment [`StopSignals::listen`] returns.
///
/// Each listener installs its handler when it is created, not when first awaited:
/// from then on a signal is recorded even while nothing waits for it, and none of
/// them takes its default action. That matters as PID 1 of a container, where the
/// kernel drops a SIGTERM that has no handler.
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers. Call it inside the runtime, before anything awaits.
    ///
    /// # Errors
    /// The operating system refused a handler (it does not, in practice).
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next stop signal and returns its name ("SIGTERM", "SIGINT",
    /// "SIGHUP").
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.hangup.recv() => "SIGHUP",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }

    /// A token cancelled at the first stop signal (which is logged). Later
    /// signals change nothing: the shutdown under way has its own deadlines.
    pub fn into_token(mut self) -> CancellationToken {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            let signal = self.recv().await;
            tracing::info!(signal, "shutdown requested");
            cancel.cancel();
            // The handlers stay installed with `self`: a second signal is heard
            // and ignored rather than killing the process mid-shutdown.
            loop {
                self.recv().await;
            }
        });
        stop
    }
}

/// `work` to completion, or `None` as soon as `stop` is cancelled (at once if it
/// already is): what every start-up wait goes through, so none outlasts a signal.
pub async fn until_cancelled<T>(
    stop: &CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        done = work => Some(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn signals_until_cancelled_ends_a_wait_that_would_never_end() {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            cancel.cancel();
        });
        let waited = until_cancelled(&stop, std::future::pending::<()>()).await;
        assert_eq!(waited, None);
    }

    #[tokio::test]
    async fn signals_until_cancelled_does_not_start_work_once_stopped() {
        let stop = CancellationToken::new();
        stop.cancel();
        assert_eq!(until_cancelled(&stop, async { 1 }).await, None);
    }

    #[tokio::test]
    async fn signals_until_cancelled_returns_what_the_work_gave() {
        let stop = CancellationToken::new();
        assert_eq!(until_cancelled(&stop, async { 7 }).await, Some(7));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn signals_a_sighup_cancels_the_token() {
        let stop = StopSignals::listen().unwrap().into_token();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(5), stop.cancelled())
            .await
            .expect("SIGHUP cancels the stop token");
    }
}

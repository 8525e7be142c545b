//! A thread of its own for work that must not queue behind the client tasks.

use std::future::Future;

use tokio::sync::oneshot;

/// Runs `work` on a thread of its own with its own single-threaded runtime; the
/// returned future completes when it has. The exchange reader lives there so that it
/// never waits in the runtime's queue behind thousands of client tasks woken by the
/// candle it just read (it must also keep answering the exchange's pings).
pub(super) fn on_own_thread(
    name: &str,
    work: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (finished, done) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(work);
            let _ = finished.send(());
        })?;
    Ok(async move {
        let _ = done.await;
    })
}

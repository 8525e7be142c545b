//! Holds N idle websocket clients on a running candlecast, for profiling what one
//! connection costs the server (see the README's Performance section):
//!
//! ```sh
//! heaptrack ./target/release/candlecast &          # or any way of running it
//! cargo run --release --example idle_clients -- ws://127.0.0.1:8080/ 2000 30
//! ```
//!
//! Connects N clients (reading their snapshot, then nothing) and keeps them for the
//! given seconds, then leaves.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: idle_clients URL [N] [SECONDS]")?;
    let clients: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let seconds: u64 = args.next().map_or(Ok(30), |s| s.parse())?;
    let mut held = JoinSet::new();
    for _ in 0..clients {
        let url = url.clone();
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        held.spawn(async move {
            let mut socket = socket;
            // Take the snapshot, then stay idle (pings are answered while polled).
            let _ = tokio::time::timeout(Duration::from_secs(seconds), async {
                while socket.next().await.is_some() {}
            })
            .await;
        });
    }
    println!("{clients} clients connected; holding them for {seconds} s");
    while held.join_next().await.is_some() {}
    Ok(())
}

//! The candlecast release binary, started as a separate process against the fake,
//! and what the bench reads of it: readiness and RSS.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::fake_exchange::FakeExchange;

/// The server, running.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts target/release/candlecast on a free port against `fake`, allowing
    /// `max_connections` clients.
    pub fn start(fake: &FakeExchange, max_connections: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let binary = exe
            .parent()
            .and_then(|examples| examples.parent())
            .map(|release| release.join("candlecast"))
            .context("locating target/release")?;
        if !binary.exists() {
            bail!(
                "{} is missing: run `cargo build --release` first",
                binary.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&binary)
            .env_clear()
            .current_dir(dir.path())
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("BINANCE_WS_URL", fake.ws_url())
            .env("BINANCE_REST_URL", fake.rest_url())
            .env("MAX_CONNECTIONS", max_connections.to_string())
            .env("CLIENT_PING_SECS", "300")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("the server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            addr,
            _dir: dir,
        })
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until GET /ready answers 200: the server has the exchange's data.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = reqwest::get(format!("http://{}/ready", self.addr)).await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

//! The candlecast release binary, started as a separate process against the fake,
//! and what the bench reads of it: RSS, CPU time and the sent-message counters.

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

/// The server's counters and CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// `candlecast_messages_sent_total`.
    pub messages: f64,
    /// `candlecast_bytes_sent_total`.
    pub bytes: f64,
    /// The server's user + system CPU seconds.
    pub server_cpu: f64,
    /// This process's (the clients' and the fake's) user + system CPU seconds.
    pub bench_cpu: f64,
}

/// Rates between two samples.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub messages: f64,
    pub bytes: f64,
    pub server_cpu: f64,
    pub bench_cpu: f64,
}

impl Sample {
    /// Per second from `self` to `later`.
    pub fn rates_to(&self, later: &Sample) -> Rates {
        let secs = (later.at - self.at).as_secs_f64();
        Rates {
            messages: (later.messages - self.messages) / secs,
            bytes: (later.bytes - self.bytes) / secs,
            server_cpu: (later.server_cpu - self.server_cpu) / secs,
            bench_cpu: (later.bench_cpu - self.bench_cpu) / secs,
        }
    }
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

    /// The counters from GET /metrics and both processes' CPU time, now.
    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let at = Instant::now();
        let server_cpu = cpu_seconds(&self.child.id().to_string())?;
        let bench_cpu = cpu_seconds("self")?;
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await?
            .error_for_status()?
            .text()
            .await?;
        let counter = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .with_context(|| format!("{name} missing from /metrics"))
        };
        Ok(Sample {
            at,
            messages: counter("candlecast_messages_sent_total")?,
            bytes: counter("candlecast_bytes_sent_total")?,
            server_cpu,
            bench_cpu,
        })
    }
}

/// User + system CPU seconds of process `pid` (or `self`), from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("reading /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second)
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

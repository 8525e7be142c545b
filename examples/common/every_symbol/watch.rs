//! What `every_symbol_bench` watches: clients that note every close they receive,
//! the store file polled for a minute's closes, a bare reader of the exchange's
//! stream (the CPU floor), the service's memory and metrics, and the klines
//! requests the fake served.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User plus system CPU seconds of thread `tid` of this process (`/proc/<tid>/stat`
/// would count the whole process).
pub fn thread_cpu_seconds(tid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

/// CPU seconds the whole machine spent busy (every core, every process), from
/// `/proc/stat`: with the server's and the bench's own, what else ran meanwhile.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).unwrap_or(&0.0))
        .sum();
    busy / 100.0
}

/// A `candles` message, as much of it as a close watcher reads.
#[derive(Deserialize)]
struct CoinCandles {
    coin: String,
    candles: Vec<OpenTime>,
}

#[derive(Deserialize)]
struct OpenTime {
    open_time: i64,
}

/// One websocket client of `/?symbols=…&format=candles&limit=1`, noting the newest
/// candle of every message it receives and when.
pub struct CloseWatcher {
    pub symbols: Vec<String>,
    seen: Arc<Mutex<Vec<(String, i64, Instant)>>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl CloseWatcher {
    /// Connects to the service at `addr` for `symbols` (the URL holds them all).
    pub async fn connect(addr: SocketAddr, symbols: &[String]) -> anyhow::Result<Self> {
        let url = format!(
            "ws://{addr}/?symbols={}&format=candles&limit=1",
            symbols.join(",")
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Some(message) = socket.next().await {
                if let Message::Text(text) = message? {
                    let at = Instant::now();
                    let message: CoinCandles = serde_json::from_str(&text)?;
                    let newest = message.candles.first().map_or(i64::MIN, |c| c.open_time);
                    noted.lock().unwrap().push((message.coin, newest, at));
                }
            }
            Ok(())
        });
        Ok(Self {
            symbols: symbols.to_vec(),
            seen,
            task,
        })
    }

    /// Messages received so far.
    pub fn received(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Per coin, the messages whose newest candle opened at `open_time`, and when
    /// the first of them arrived.
    pub fn closes_of(&self, open_time: i64) -> HashMap<String, (usize, Instant)> {
        let mut closes: HashMap<String, (usize, Instant)> = HashMap::new();
        for (coin, newest, at) in self.seen.lock().unwrap().iter() {
            if *newest == open_time {
                let entry = closes.entry(coin.clone()).or_insert((0, *at));
                entry.0 += 1;
            }
        }
        closes
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Polls the service's SQLite file every `every` until each of `symbols` has its
/// minute opened at `open_time` stored; returns when that was seen (or `None`
/// after `timeout`). Runs on a blocking thread.
pub async fn stored_at(
    file: PathBuf,
    symbols: Vec<String>,
    open_time: i64,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    tokio::task::spawn_blocking(move || {
        let connection = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mut exists = connection.prepare(
            "SELECT 1 FROM candles WHERE symbol = ?1 AND interval = '1m' AND open_time = ?2",
        )?;
        let deadline = Instant::now() + timeout;
        let mut missing: HashSet<String> = symbols.into_iter().collect();
        loop {
            let mut found = Vec::new();
            for symbol in &missing {
                if exists.exists(rusqlite::params![symbol, open_time])? {
                    found.push(symbol.clone());
                }
            }
            for symbol in found {
                missing.remove(&symbol);
            }
            if missing.is_empty() {
                return Ok(Some(Instant::now()));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(every);
        }
    })
    .await?
}

/// A bare reader of the fake's stream on a thread of its own: subscribed to the
/// same streams, it receives the same frames the service does and does nothing
/// with them, so its CPU time is what taking them off a loopback websocket costs
/// (tokio and tungstenite, as in the service).
pub struct FloorReader {
    /// The reader thread's id, for `/proc/<tid>/stat`.
    pub tid: u32,
    frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl FloorReader {
    /// Connects to the fake's stream at `url` and subscribes to `symbols`' klines.
    pub fn start(url: String, symbols: &[String]) -> anyhow::Result<Self> {
        let streams: Vec<String> = symbols
            .iter()
            .map(|symbol| format!("{}@kline_1m", symbol.to_lowercase()))
            .collect();
        let subscribe = serde_json::json!({"method": "SUBSCRIBE", "params": streams, "id": 1});
        let frames = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped) = (Arc::clone(&frames), Arc::clone(&stop));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("floor-reader".to_owned())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() } as u32);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the floor reader's runtime");
                runtime.block_on(async move {
                    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
                        return;
                    };
                    let subscribe = Message::Text(subscribe.to_string().into());
                    if futures_util::SinkExt::send(&mut socket, subscribe)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while !stopped.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), socket.next()).await
                        {
                            Ok(Some(Ok(_))) => {
                                counted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => return,
                            Err(_) => {}
                        }
                    }
                });
            })?;
        let tid = tid_rx.recv().context("the floor reader's thread id")?;
        Ok(Self { tid, frames, stop })
    }

    /// Frames received so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for FloorReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The value of `name` in the service's OpenMetrics text, summed over its labels.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The klines requests the fake served so far: (symbol, interval) of each.
pub fn klines_requests(log: &[String]) -> Vec<(String, String)> {
    log.iter()
        .filter_map(|entry| {
            let query = entry.strip_prefix("/fapi/v1/klines?")?;
            let mut symbol = None;
            let mut interval = None;
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                match name.as_ref() {
                    "symbol" => symbol = Some(value.into_owned()),
                    "interval" => interval = Some(value.into_owned()),
                    _ => {}
                }
            }
            Some((symbol?, interval?))
        })
        .collect()
}

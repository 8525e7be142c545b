//! The bench's websocket clients: a hand-rolled frame reader over a TcpStream that
//! records, per message, when it arrived, its length and its first bytes, and parses
//! nothing while it runs; and clients that never read at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::SYMBOLS;

/// Per-client read buffer, as small as the tungstenite clients the bench used before;
/// it grows only for a frame larger than itself.
const READ_BUFFER: usize = 4096;

/// Microseconds since the bench started: the one clock of every recorded instant.
pub fn stamp(at: Instant) -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u32::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u32::MAX)
}

/// What every client of a batch asks for and keeps.
pub struct ClientSpec {
    pub addr: SocketAddr,
    /// The request target: `/` or `/?live=true`.
    pub target: String,
    /// Bytes kept of each message's beginning, for telling messages apart afterwards.
    pub head_len: usize,
    /// Messages to make room for before the run.
    pub capacity: usize,
}

/// One client's record of its messages: arrival ([`stamp`]), length and head.
pub struct Recording {
    pub times: Vec<u32>,
    pub lens: Vec<u32>,
    heads: Vec<u8>,
    head_len: usize,
}

impl Recording {
    pub fn with_capacity(head_len: usize, capacity: usize) -> Self {
        Self {
            times: Vec::with_capacity(capacity),
            lens: Vec::with_capacity(capacity),
            heads: Vec::with_capacity(capacity * head_len),
            head_len,
        }
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// The first bytes of message `i`, zero-padded to the head length.
    pub fn head(&self, i: usize) -> &[u8] {
        &self.heads[i * self.head_len..(i + 1) * self.head_len]
    }

    pub fn push(&mut self, at: u32, payload: &[u8]) {
        self.times.push(at);
        self.lens.push(payload.len() as u32);
        let kept = payload.len().min(self.head_len);
        self.heads.extend_from_slice(&payload[..kept]);
        self.heads
            .resize(self.heads.len() + self.head_len - kept, 0);
    }
}

/// Messages received by all clients of a batch, so the bench can wait for a round.
#[derive(Default)]
pub struct Progress {
    messages: AtomicU64,
}

impl Progress {
    /// Waits until the batch's clients together hold `total` messages.
    pub async fn wait_for(&self, total: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.messages.load(Ordering::Relaxed);
            if now >= total {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {now} of {total} messages arrived within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until no message has arrived for `quiet`, or at most `timeout`.
    pub async fn wait_quiet(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (mut seen, mut since) = (self.messages.load(Ordering::Relaxed), Instant::now());
        while Instant::now() < deadline && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.messages.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
    }
}

/// Tells the batch a client holds its snapshot (one message per coin), and frees
/// its connect slot.
struct Ready {
    latencies: mpsc::UnboundedSender<Duration>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A server frame's header.
struct Header {
    len: usize,
    payload: usize,
    opcode: u8,
    fin: bool,
}

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

impl Header {
    /// The header at the start of `bytes`, or `None` if it has not all arrived.
    fn parse(bytes: &[u8]) -> anyhow::Result<Option<Self>> {
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if second & 0x80 != 0 {
            bail!("the server sent a masked frame");
        }
        let (len, payload) = match second & 0x7f {
            126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")) as usize,
            ),
            126 | 127 => return Ok(None),
            short => (2, short as usize),
        };
        Ok(Some(Self {
            len,
            payload,
            opcode: first & 0x0f,
            fin: first & 0x80 != 0,
        }))
    }
}

/// A masked pong echoing `payload` (an all-zero key is a valid mask).
fn pong(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Sends the upgrade request for `target` and reads the answer into `buffer`.
/// Returns how many bytes after the headers (the first frames) are at its start,
/// and when they arrived.
async fn handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    target: &str,
    buffer: &mut Vec<u8>,
) -> anyhow::Result<(usize, Instant)> {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut end = 0;
    loop {
        if end == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = stream.read(&mut buffer[end..]).await?;
        if read == 0 {
            bail!("the server closed the connection during the handshake");
        }
        end += read;
        let Some(headers) = buffer[..end].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let at = Instant::now();
        if !buffer.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&buffer[..headers]);
            bail!(
                "the server refused the upgrade: {}",
                status.lines().next().unwrap_or("")
            );
        }
        buffer.copy_within(headers + 4..end, 0);
        return Ok((end - headers - 4, at));
    }
}

/// One client: connects, upgrades, then records every message until `stop`, the
/// server's close or the end of the connection.
async fn client(
    spec: Arc<ClientSpec>,
    progress: Arc<Progress>,
    ready: Ready,
    stop: CancellationToken,
) -> anyhow::Result<Recording> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(spec.addr).await?;
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; READ_BUFFER];
    let (mut end, mut at) = handshake(&mut stream, spec.addr, &spec.target, &mut buffer).await?;
    let mut recording = Recording::with_capacity(spec.head_len, spec.capacity);
    let mut ready = Some(ready);
    loop {
        // Every frame completed by the last read arrived at the same instant.
        let arrived = stamp(at);
        let before = recording.len();
        let mut start = 0;
        while let Some(header) = Header::parse(&buffer[start..end])? {
            let frame_end = start + header.len + header.payload;
            if frame_end > end {
                break;
            }
            let payload = &buffer[start + header.len..frame_end];
            match header.opcode {
                OP_TEXT | OP_BINARY if header.fin => recording.push(arrived, payload),
                OP_PING => stream.write_all(&pong(payload)).await?,
                OP_CLOSE => return Ok(recording),
                opcode if opcode < OP_CLOSE => bail!("the server fragmented a message"),
                _ => {}
            }
            start = frame_end;
        }
        let completed = recording.len() - before;
        if completed > 0 {
            progress
                .messages
                .fetch_add(completed as u64, Ordering::Relaxed);
            if recording.len() >= SYMBOLS.len()
                && let Some(ready) = ready.take()
            {
                let _ = ready.latencies.send(at - started);
            }
        }
        // Keep the partial frame at the front; grow only if it fills the buffer.
        buffer.copy_within(start..end, 0);
        end -= start;
        if end == buffer.len() {
            buffer.resize(buffer.len() * 2, 0);
        }
        let read = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(recording),
            read = stream.read(&mut buffer[end..]) => read?,
        };
        if read == 0 {
            return Ok(recording);
        }
        end += read;
        at = Instant::now();
    }
}

/// A client that completes the handshake with a 4 KiB receive buffer and never
/// reads again.
pub async fn idle_client(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr).await?;
    handshake(&mut stream, addr, "/", &mut vec![0; 256]).await?;
    Ok(stream)
}

/// How fast a batch connects.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many new connections per second.
    Rate(f64),
    /// As fast as this many connects in flight allow (a slot is free once its client
    /// holds the snapshot).
    InFlight(usize),
}

/// Clients connected together, recording until [`Batch::finish`].
pub struct Batch {
    tasks: JoinSet<anyhow::Result<Recording>>,
    stop: CancellationToken,
    pub progress: Arc<Progress>,
    /// From TCP connect to holding the snapshot, per client.
    pub connect: Vec<Duration>,
    /// Clients per second, from the first connect to the last snapshot.
    pub rate: f64,
}

/// Connects `n` clients and waits until each holds its snapshot.
pub async fn connect(spec: Arc<ClientSpec>, n: usize, pace: Pace) -> anyhow::Result<Batch> {
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let (latencies, mut connected) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(match pace {
        Pace::Rate(_) => Semaphore::MAX_PERMITS,
        Pace::InFlight(slots) => slots,
    }));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        if let Pace::Rate(rate) = pace {
            let at = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let ready = Ready {
            latencies: latencies.clone(),
            _permit: Some(Arc::clone(&permits).acquire_owned().await?),
        };
        tasks.spawn(client(
            Arc::clone(&spec),
            Arc::clone(&progress),
            ready,
            stop.clone(),
        ));
    }
    drop(latencies);
    let mut connect = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while connect.len() < n {
        tokio::select! {
            latency = connected.recv() => match latency {
                Some(latency) => connect.push(latency),
                None => bail!("only {} of {n} clients got their snapshot", connect.len()),
            },
            Some(ended) = tasks.join_next() => {
                ended?.context("a client failed while connecting")?;
                bail!("a client's connection ended before its snapshot");
            }
            _ = tokio::time::sleep_until(deadline) => {
                bail!("only {} of {n} clients got their snapshot within 120 s", connect.len());
            }
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok(Batch {
        tasks,
        stop,
        progress,
        connect,
        rate,
    })
}

impl Batch {
    /// Stops every client and returns their recordings (a client that failed is
    /// reported and left out; the analysis counts what it misses).
    pub async fn finish(mut self) -> Vec<Recording> {
        self.stop.cancel();
        let mut recordings = Vec::with_capacity(self.tasks.len());
        let mut failed = 0;
        while let Some(ended) = self.tasks.join_next().await {
            match ended {
                Ok(Ok(recording)) => recordings.push(recording),
                Ok(Err(err)) => {
                    if failed == 0 {
                        eprintln!("a client failed: {err:#}");
                    }
                    failed += 1;
                }
                Err(err) => eprintln!("a client task panicked: {err}"),
            }
        }
        if failed > 0 {
            eprintln!("{failed} clients failed during the run");
        }
        recordings
    }
}

/// The mean length of the five snapshot messages, as the server sends them now.
pub async fn sample_message_len(addr: SocketAddr) -> anyhow::Result<usize> {
    let spec = Arc::new(ClientSpec {
        addr,
        target: "/".to_owned(),
        head_len: 0,
        capacity: SYMBOLS.len(),
    });
    let recordings = connect(spec, 1, Pace::InFlight(1)).await?.finish().await;
    let recording = recordings.first().context("the sample client failed")?;
    let total: u32 = recording.lens.iter().take(SYMBOLS.len()).sum();
    Ok(total as usize / SYMBOLS.len())
}

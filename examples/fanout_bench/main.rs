//! Fan-out benchmark: the release binary as a separate process, fed by an in-process
//! fake exchange, against N websocket clients in this process.
//!
//! ```sh
//! cargo build --release && cargo run --release --example fanout_bench -- --clients 1000,10000
//! ```
//!
//! For each N it prints: connect + snapshot (rate, and latency from TCP connect to the
//! fifth message) at a fixed offered rate and at saturation; fan-out latency from the
//! fake closing all five coins to each client holding all five new messages; server
//! RSS before and after connecting; the same fan-out with 1,000 extra clients that
//! never read; and the floor: one thread writing the same bytes to N loopback sockets
//! with blocking writes while another (in a child process) reads them.
//! Everything stays on 127.0.0.1 and stops by itself.

#[path = "../../tests/common/fake_exchange.rs"]
mod fake_exchange;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fake_exchange::FakeExchange;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

struct Options {
    clients: Vec<usize>,
    rate: f64,
    rounds: usize,
    idle: usize,
    saturation_in_flight: usize,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        clients: vec![1_000, 10_000],
        rate: 1_000.0,
        rounds: 10,
        idle: 1_000,
        saturation_in_flight: 256,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("missing value");
        match arg.as_str() {
            "--clients" => {
                options.clients = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--rate" => options.rate = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            "--idle" => options.idle = value()?.parse()?,
            "--in-flight" => options.saturation_in_flight = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--floor-reader") {
        return floor_reader(args[2].parse()?, args[3].parse()?, args[4].parse()?);
    }
    let options = parse_options()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(options))
}

/// Latency summary in milliseconds.
struct Summary {
    p50: f64,
    p99: f64,
    max: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    Summary {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1} / {:.1} ms", self.p50, self.p99, self.max)
    }
}

/// The candlecast release binary, running.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(fake: &FakeExchange, max_connections: usize) -> anyhow::Result<Self> {
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

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
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

fn client_config() -> WebSocketConfig {
    // The bench's own clients stay small too, so 10,000 of them fit beside the server.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// One client: connects, reads its snapshot (reporting the latency), then reports
/// the moment it holds all five messages of each round.
async fn client(
    addr: SocketAddr,
    connected: mpsc::UnboundedSender<Duration>,
    rounds: mpsc::UnboundedSender<Instant>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut socket, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/"),
        stream,
        Some(client_config()),
    )
    .await?;
    let mut received = 0usize;
    while let Some(message) = socket.next().await {
        if let Message::Text(_) = message? {
            received += 1;
            if received == SYMBOLS.len() {
                let _ = connected.send(started.elapsed());
            } else if received.is_multiple_of(SYMBOLS.len()) {
                let _ = rounds.send(Instant::now());
            }
        }
    }
    Ok(())
}

/// A client that completes the handshake with a small receive buffer and never reads.
async fn idle_client(addr: SocketAddr) -> anyhow::Result<impl Sized> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
    Ok(socket)
}

struct Batch {
    tasks: JoinSet<anyhow::Result<()>>,
    rounds: mpsc::UnboundedReceiver<Instant>,
    connect: Vec<Duration>,
    rate: f64,
}

/// Connects `n` clients, at `rate` per second or, with `None`, as fast as
/// `in_flight` concurrent attempts allow.
async fn connect_batch(
    addr: SocketAddr,
    n: usize,
    rate: Option<f64>,
    in_flight: usize,
) -> anyhow::Result<Batch> {
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (rounds_tx, rounds_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let permits = Arc::new(Semaphore::new(in_flight));
    let started = Instant::now();
    for i in 0..n {
        let (connected_tx, rounds_tx) = (connected_tx.clone(), rounds_tx.clone());
        match rate {
            Some(rate) => {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                tasks.spawn(client(addr, connected_tx, rounds_tx));
            }
            None => {
                let permit = Arc::clone(&permits).acquire_owned().await?;
                let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Duration>();
                tasks.spawn(client(addr, done_tx, rounds_tx));
                // Release the slot once this client holds its snapshot.
                let connected_tx = connected_tx.clone();
                tokio::spawn(async move {
                    if let Some(latency) = done_rx.recv().await {
                        let _ = connected_tx.send(latency);
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(connected_tx);
    let mut connect = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while connect.len() < n {
        match tokio::time::timeout_at(deadline.into(), connected_rx.recv()).await {
            Ok(Some(latency)) => connect.push(latency),
            _ => bail!("only {} of {n} clients got their snapshot", connect.len()),
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok(Batch {
        tasks,
        rounds: rounds_rx,
        connect,
        rate,
    })
}

/// Closes every coin `rounds` times (after one warm-up round) and returns, for each
/// client and round, the time from the closes to the client holding all five.
async fn fan_out(
    fake: &FakeExchange,
    batch: &mut Batch,
    clients: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(clients * rounds);
    for round in 0..=rounds {
        let started = Instant::now();
        for symbol in SYMBOLS {
            fake.close_next(symbol);
        }
        for _ in 0..clients {
            let arrived = tokio::time::timeout(Duration::from_secs(30), batch.rounds.recv())
                .await
                .context("a client missed a round")?
                .context("clients gone")?;
            if round > 0 {
                latencies.push(arrived - started);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(latencies)
}

/// The child side of the floor: accepts a control connection and `n` data
/// connections, then per round reads `bytes` from each in turn and acknowledges.
fn floor_reader(n: usize, bytes: usize, rounds: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut control, _) = listener.accept()?;
    let mut sockets: Vec<TcpStream> = (0..n)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    let mut buffer = vec![0u8; bytes];
    for _ in 0..rounds {
        for socket in &mut sockets {
            socket.read_exact(&mut buffer)?;
        }
        control.write_all(b"k")?;
    }
    Ok(())
}

/// Median time for one thread to write `payload` to `n` loopback sockets with plain
/// blocking writes while another process reads them.
fn floor(n: usize, payload: &[u8], rounds: usize) -> anyhow::Result<Duration> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--floor-reader",
            &n.to_string(),
            &payload.len().to_string(),
            &rounds.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut port)?;
    let addr: SocketAddr = ([127, 0, 0, 1], port.trim().parse()?).into();
    let mut control = TcpStream::connect(addr)?;
    let mut sockets: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr))
        .collect::<Result<_, _>>()?;
    for socket in &sockets {
        socket.set_nodelay(true)?;
    }
    let mut times = Vec::with_capacity(rounds);
    let mut ack = [0u8; 1];
    for _ in 0..rounds {
        let started = Instant::now();
        for socket in &mut sockets {
            socket.write_all(payload)?;
        }
        control.read_exact(&mut ack)?;
        times.push(started.elapsed());
    }
    child.wait()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// The mean length of the five snapshot messages, as the server sends them now.
async fn sample_message_len(addr: SocketAddr) -> anyhow::Result<usize> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    let mut total = 0;
    for _ in 0..SYMBOLS.len() {
        match socket.next().await.context("closed")?? {
            Message::Text(text) => total += text.len(),
            other => bail!("unexpected {other:?}"),
        }
    }
    Ok(total / SYMBOLS.len())
}

/// The five messages of a round as the server frames them (unmasked text frames).
fn round_payload(messages: usize, message_len: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for _ in 0..messages {
        payload.push(0x81);
        if message_len < 126 {
            payload.push(message_len as u8);
        } else {
            payload.push(126);
            payload.extend_from_slice(&(message_len as u16).to_be_bytes());
        }
        payload.extend(std::iter::repeat_n(b'x', message_len));
    }
    payload
}

async fn bench(options: Options) -> anyhow::Result<()> {
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()?,
        memory_line()
    );
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut rows = Vec::new();
    for &n in &options.clients {
        eprintln!("== {n} clients");
        let server = Server::start(&fake, n + options.idle + 100)?;
        let message_len = sample_message_len(server.addr).await?;
        let rss_idle = server.rss_kib();

        eprintln!("connecting {n} clients at {}/s", options.rate);
        let mut steady = connect_batch(
            server.addr,
            n,
            Some(options.rate),
            options.saturation_in_flight,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_connected = server.rss_kib();
        eprintln!("fan-out, {} rounds", options.rounds);
        let fanout = fan_out(&fake, &mut steady, n, options.rounds).await?;

        eprintln!("adding {} clients that never read", options.idle);
        let mut idle = Vec::with_capacity(options.idle);
        for _ in 0..options.idle {
            idle.push(idle_client(server.addr).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_with_idle = server.rss_kib();
        let fanout_with_idle = fan_out(&fake, &mut steady, n, options.rounds).await?;
        drop(idle);
        steady.tasks.abort_all();
        while steady.tasks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_secs(1)).await;

        eprintln!(
            "connecting {n} clients at saturation ({} in flight)",
            options.saturation_in_flight
        );
        let mut saturated =
            connect_batch(server.addr, n, None, options.saturation_in_flight).await?;
        saturated.tasks.abort_all();
        while saturated.tasks.join_next().await.is_some() {}
        drop(server);

        eprintln!("floor: blocking writes to {n} loopback sockets");
        let floor = floor(n, &round_payload(SYMBOLS.len(), message_len), 7)?;
        rows.push(Row {
            n,
            steady_rate: steady.rate,
            steady_connect: summarize(steady.connect),
            saturated_rate: saturated.rate,
            saturated_connect: summarize(saturated.connect),
            fanout: summarize(fanout),
            fanout_with_idle: summarize(fanout_with_idle),
            floor,
            rss_idle,
            rss_connected,
            rss_with_idle,
            idle: options.idle,
        });
    }
    print_table(&rows, options.rate);
    Ok(())
}

struct Row {
    n: usize,
    steady_rate: f64,
    steady_connect: Summary,
    saturated_rate: f64,
    saturated_connect: Summary,
    fanout: Summary,
    fanout_with_idle: Summary,
    floor: Duration,
    rss_idle: u64,
    rss_connected: u64,
    rss_with_idle: u64,
    idle: usize,
}

fn print_table(rows: &[Row], rate: f64) {
    println!();
    println!(
        "| clients | connect+snapshot @{rate:.0}/s offered: rate, p50/p99/max | @saturation: rate, p50/p99/max |"
    );
    println!("| --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {:.0}/s, {} | {:.0}/s, {} |",
            r.n, r.steady_rate, r.steady_connect, r.saturated_rate, r.saturated_connect
        );
    }
    println!();
    println!("| clients | fan-out p50/p99/max | floor (blocking writes) | fan-out p99 / floor |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        let floor_ms = r.floor.as_secs_f64() * 1000.0;
        println!(
            "| {} | {} | {:.1} ms | {:.2}x |",
            r.n,
            r.fanout,
            floor_ms,
            r.fanout.p99 / floor_ms
        );
    }
    println!();
    println!("| clients | server RSS idle | RSS connected | per connection |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        let per = (r.rss_connected.saturating_sub(r.rss_idle)) as f64 * 1024.0 / r.n as f64;
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} KB |",
            r.n,
            r.rss_idle as f64 / 1024.0,
            r.rss_connected as f64 / 1024.0,
            per / 1000.0
        );
    }
    println!();
    println!(
        "| clients | + idle clients | fan-out p99 without / with | change | RSS without / with | per idle client |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let change = (r.fanout_with_idle.p99 / r.fanout.p99 - 1.0) * 100.0;
        let per_idle = (r.rss_with_idle.saturating_sub(r.rss_connected)) as f64 * 1024.0
            / r.idle.max(1) as f64;
        println!(
            "| {} | {} | {:.1} / {:.1} ms | {:+.0}% | {:.1} / {:.1} MiB | {:.1} KB |",
            r.n,
            r.idle,
            r.fanout.p99,
            r.fanout_with_idle.p99,
            change,
            r.rss_connected as f64 / 1024.0,
            r.rss_with_idle as f64 / 1024.0,
            per_idle / 1000.0
        );
    }
}

fn memory_line() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .next()
        .unwrap_or("memory unknown")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

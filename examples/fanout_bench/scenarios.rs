//! The closes and isolation scenarios, and what every scenario shares: a fresh fake
//! exchange and server each, rounds of closes, floor rounds. Closes measures the
//! fan-out with the floor between rounds, the connect rate and RSS; isolation, clients
//! that never read, in alternating runs. The live scenario is in [`crate::live`].

use std::sync::Arc;
use std::time::Duration;

use crate::analysis::{self, Handed, RoundDelays, Summary};
use crate::clients::{self, Batch, ClientSpec, Pace};
use crate::exchange::{Closer, Exchange};
use crate::floor::{Floor, round_payload};
use crate::server::Server;
use crate::{Options, SYMBOLS};

/// Bytes kept of each message: enough for a window message's coin and newest close.
const WINDOW_HEAD: usize = 48;
/// Enough for a forming message's close price too.
const FORMING_HEAD: usize = 192;
/// Quiet time after each round, before the next round or floor round.
pub const SETTLE: Duration = Duration::from_millis(200);
/// The longest a round may take before the run is called failed.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// One measured round of closes.
pub struct Round {
    pub fanout: Summary,
    /// The floor round that followed it, if the scenario measures one per round.
    pub floor: Option<Duration>,
}

/// What the closes scenario measured.
pub struct ClosesResult {
    pub n: usize,
    pub message_len: usize,
    pub rounds: Vec<Round>,
    /// Every client's delay over every measured round.
    pub fanout: Summary,
    pub floor: Duration,
    pub check: RoundCheck,
    pub steady_rate: f64,
    pub steady_connect: Summary,
    pub saturated_rate: f64,
    pub saturated_connect: Summary,
    pub rss_idle: u64,
    pub rss_connected: u64,
}

/// One run of rounds in the isolation scenario.
pub struct IsolationRun {
    pub with_idle: bool,
    pub fanout: Summary,
    pub rss_kib: u64,
}

/// What the isolation scenario measured; runs alternate without and with the idle
/// clients, each run's p99 over all its rounds.
pub struct IsolationResult {
    pub n: usize,
    pub idle: usize,
    pub runs: Vec<IsolationRun>,
    pub check: RoundCheck,
}

/// What did not go by the rounds: (client, round) pairs never held, and window
/// messages repeating a round the client held.
#[derive(Debug, Clone, Copy)]
pub struct RoundCheck {
    pub missed: usize,
    pub extra: usize,
}

impl RoundCheck {
    pub fn of(delays: &RoundDelays) -> Self {
        Self {
            missed: delays.missed,
            extra: delays.extra,
        }
    }
}

/// `MAX_CONNECTIONS` for `n` clients: room for the idle ones too, and enough that
/// the server's cap on connections not yet upgraded (a quarter of it) admits every
/// connect in flight.
fn max_connections(options: &Options, n: usize) -> usize {
    (n + options.idle + 100).max(4 * options.in_flight + 100)
}

pub fn spec(addr: std::net::SocketAddr, live: bool, capacity: usize) -> Arc<ClientSpec> {
    Arc::new(ClientSpec {
        addr,
        target: if live { "/?live=true" } else { "/" }.to_owned(),
        head_len: if live { FORMING_HEAD } else { WINDOW_HEAD },
        capacity,
    })
}

/// A fresh fake and server, the server holding the fake's first round of closes:
/// that round puts the fake's history ahead of the wall clock (see
/// [`Exchange::start`]) before any client connects.
pub async fn start(options: &Options, n: usize) -> anyhow::Result<(Exchange, Server, Closer)> {
    let exchange = Exchange::start().await?;
    let server = Server::start(&exchange.fake, max_connections(options, n))?;
    // Listening comes before the stream connection; a close sent before it is lost.
    exchange.fake.wait_for_connections(1).await;
    let mut closer = Closer::new(&exchange.fake);
    closer.close_round(&exchange.fake, Duration::ZERO);
    server.wait_ready(ROUND_TIMEOUT).await?;
    Ok((exchange, server, closer))
}

/// Closes one round and waits until every client of `batch` holds it (`done` rounds
/// so far, snapshots included).
async fn close_and_wait(
    exchange: &Exchange,
    closer: &mut Closer,
    batch: &Batch,
    n: usize,
    done: &mut u64,
    spacing: Duration,
) -> anyhow::Result<Handed> {
    let (_, handed) = closer.close_round(&exchange.fake, spacing);
    *done += 1;
    let expected = n as u64 * SYMBOLS.len() as u64 * *done;
    batch.progress.wait_for(expected, ROUND_TIMEOUT).await?;
    Ok(handed)
}

pub fn floor_round(floor: &mut Floor) -> anyhow::Result<Duration> {
    tokio::task::block_in_place(|| floor.round())
}

/// Per-round summaries of the measured rounds (`skip` warm-up rounds first).
pub fn summarize_rounds(delays: &mut RoundDelays, skip: usize) -> (Vec<Summary>, Summary) {
    let per_round = delays.per_round[skip..]
        .iter_mut()
        .map(|d| analysis::summarize_micros(d))
        .collect();
    let mut all: Vec<u32> = delays.per_round[skip..].concat();
    (per_round, analysis::summarize_micros(&mut all))
}

pub fn median_duration(durations: &[Duration]) -> Duration {
    let secs: Vec<f64> = durations.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(analysis::median(&secs))
}

/// Target (1), (3) and (5): five closes as five frames to N plain clients, each
/// round followed by a floor round; the connect rate at the offered rate and at
/// saturation; RSS per connection.
pub async fn closes(options: &Options, n: usize) -> anyhow::Result<ClosesResult> {
    eprintln!("== closes: {n} clients");
    let (exchange, server, mut closer) = start(options, n).await?;
    let message_len = clients::sample_message_len(server.addr).await?;
    let rss_idle = server.rss_kib();

    eprintln!("connecting {n} clients at {}/s", options.rate);
    let capacity = SYMBOLS.len() * (options.rounds + 2);
    let batch = clients::connect(
        spec(server.addr, false, capacity),
        n,
        Pace::Rate(options.rate),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = server.rss_kib();
    let (steady_rate, steady_connect) = (batch.rate, analysis::summarize(&batch.connect));

    eprintln!(
        "floor: {n} sockets; {} rounds, each with a floor round",
        options.rounds
    );
    let payload = round_payload(SYMBOLS.len(), message_len);
    let mut floor = tokio::task::block_in_place(|| Floor::start(n, payload))?;
    let mut done = 1;
    let mut handed = Vec::new();
    let mut floors = Vec::new();
    for round in 0..=options.rounds {
        handed.push(
            close_and_wait(
                &exchange,
                &mut closer,
                &batch,
                n,
                &mut done,
                options.spacing,
            )
            .await?,
        );
        tokio::time::sleep(SETTLE).await;
        let floor_time = floor_round(&mut floor)?;
        if round > 0 {
            floors.push(floor_time);
        }
        tokio::time::sleep(SETTLE).await;
    }
    drop(floor);
    let recordings = batch.finish().await;
    let mut delays = analysis::round_delays(&recordings, &handed, &closer);
    drop(recordings);
    let (per_round, fanout) = summarize_rounds(&mut delays, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!(
        "connecting {n} clients at saturation ({} in flight)",
        options.in_flight
    );
    let saturated = clients::connect(
        spec(server.addr, false, capacity),
        n,
        Pace::InFlight(options.in_flight),
    )
    .await?;
    let (saturated_rate, saturated_connect) =
        (saturated.rate, analysis::summarize(&saturated.connect));
    saturated.finish().await;

    Ok(ClosesResult {
        n,
        message_len,
        rounds: per_round
            .into_iter()
            .zip(&floors)
            .map(|(fanout, &floor)| Round {
                fanout,
                floor: Some(floor),
            })
            .collect(),
        fanout,
        floor: median_duration(&floors),
        check: RoundCheck::of(&delays),
        steady_rate,
        steady_connect,
        saturated_rate,
        saturated_connect,
        rss_idle,
        rss_connected,
    })
}

/// Target (4): the close fan-out of N healthy clients in `alternations` pairs of
/// runs, first without and then with `idle` clients that never read.
pub async fn isolation(options: &Options, n: usize) -> anyhow::Result<IsolationResult> {
    eprintln!(
        "== isolation: {n} clients, {} that never read",
        options.idle
    );
    let (exchange, server, mut closer) = start(options, n).await?;
    let runs_total = 2 * options.alternations;
    let capacity = SYMBOLS.len() * (options.rounds * runs_total + 2);
    let batch = clients::connect(
        spec(server.addr, false, capacity),
        n,
        Pace::InFlight(options.in_flight),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut done = 1;
    let mut handed = vec![
        close_and_wait(
            &exchange,
            &mut closer,
            &batch,
            n,
            &mut done,
            options.spacing,
        )
        .await?,
    ];
    tokio::time::sleep(SETTLE).await;
    let mut runs = Vec::new();
    for alternation in 0..options.alternations {
        for with_idle in [false, true] {
            let mut idle = Vec::new();
            if with_idle {
                eprintln!(
                    "run {}: adding {} clients that never read",
                    alternation + 1,
                    options.idle
                );
                for _ in 0..options.idle {
                    idle.push(clients::idle_client(server.addr).await?);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let rss_kib = server.rss_kib();
            for _ in 0..options.rounds {
                handed.push(
                    close_and_wait(
                        &exchange,
                        &mut closer,
                        &batch,
                        n,
                        &mut done,
                        options.spacing,
                    )
                    .await?,
                );
                tokio::time::sleep(SETTLE).await;
            }
            runs.push((with_idle, rss_kib));
            if with_idle {
                drop(idle);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let recordings = batch.finish().await;
    let delays = analysis::round_delays(&recordings, &handed, &closer);
    drop(recordings);
    let runs = runs
        .into_iter()
        .enumerate()
        .map(|(i, (with_idle, rss_kib))| {
            let first = 1 + i * options.rounds;
            let mut all: Vec<u32> = delays.per_round[first..first + options.rounds].concat();
            IsolationRun {
                with_idle,
                fanout: analysis::summarize_micros(&mut all),
                rss_kib,
            }
        })
        .collect();
    Ok(IsolationResult {
        n,
        idle: options.idle,
        runs,
        check: RoundCheck::of(&delays),
    })
}

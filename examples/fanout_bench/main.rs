//! Fan-out benchmark: the release binary as a separate process, fed by a fake
//! exchange on a thread of its own, against N websocket clients in this process, on
//! loopback, with the floor (what the kernel alone costs) measured in the same run.
//!
//! ```sh
//! cargo build --release
//! cargo run --release --example fanout_bench -- --clients 9000                     # all three
//! cargo run --release --example fanout_bench -- --clients 9000 --scenario closes
//! cargo run --release --example fanout_bench -- --clients 9000 --scenario live
//! cargo run --release --example fanout_bench -- --clients 9000 --scenario isolation --alternations 3
//! ```
//!
//! Scenarios (each on a fresh server and a fresh fake exchange):
//! - `closes`: every round the fake closes the five coins as five frames, back to back
//!   (`--spacing-us` apart, default 0); latency runs from the moment the last close
//!   frame was handed to the fake to each client holding all five new messages. Each
//!   round is followed by a floor round, so both see the same machine. Also the
//!   connect rate (at `--rate` offered and at saturation) and RSS per connection.
//! - `live`: `?live=true` clients while the fake sends a forming update of every coin
//!   every `--forming-ms` (each its own frame) and closes a round every `--round-ms`;
//!   per update, the delay from its hand-off to the fake until each client holds it or
//!   something newer; messages, bytes and server CPU per second; the close fan-out
//!   during the load against the floor measured (quiet) before and after it.
//! - `isolation`: the close fan-out of N healthy clients in alternating runs without
//!   and with `--idle` clients that never read.
//!
//! Clients only record each message's arrival, length and first bytes; everything
//! is parsed after the run (a client parsing JSON on the same two cores would add its
//! own latency). Everything stays on 127.0.0.1, is bounded and stops by itself.

#[path = "../../tests/common/fake_exchange.rs"]
mod fake_exchange;

mod analysis;
mod clients;
mod exchange;
mod floor;
mod live;
mod report;
mod scenarios;
mod server;

use std::time::Duration;

use anyhow::{Context, bail};

/// The coins the fake trades and the server relays; every name is 7 bytes, which
/// the message heads the clients keep rely on.
pub const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub clients: Vec<usize>,
    /// Measured rounds per run (one warm-up round comes first).
    pub rounds: usize,
    /// Runs without and with the idle clients, in the isolation scenario.
    pub alternations: usize,
    /// Clients that never read, in the isolation scenario.
    pub idle: usize,
    /// Connections per second offered when measuring the connect latency.
    pub rate: f64,
    /// Connects in flight when measuring the connect rate at saturation.
    pub in_flight: usize,
    /// Pause between two coins' close frames within a round.
    pub spacing: Duration,
    /// Time between close rounds in the live scenario.
    pub round_every: Duration,
    /// How often the fake updates every coin's forming candle in the live scenario.
    pub forming_every: Duration,
    /// Send the five coins' forming updates back to back instead of spread evenly
    /// over `forming_every`.
    pub forming_together: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Closes,
    Live,
    Isolation,
}

const USAGE: &str = "usage: fanout_bench [--scenario closes,live,isolation] [--clients 9000[,N…]] \
[--rounds 10] [--alternations 3] [--idle 1000] [--rate 1000] [--in-flight 256] [--spacing-us 0] \
[--round-ms 1000] [--forming-ms 250] [--forming-together]";

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        scenarios: vec![Scenario::Closes, Scenario::Live, Scenario::Isolation],
        clients: vec![9_000],
        rounds: 10,
        alternations: 3,
        idle: 1_000,
        rate: 1_000.0,
        in_flight: 256,
        spacing: Duration::ZERO,
        round_every: Duration::from_millis(1_000),
        forming_every: Duration::from_millis(250),
        forming_together: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--scenario" => {
                options.scenarios = value()?
                    .split(',')
                    .map(|name| match name {
                        "closes" => Ok(Scenario::Closes),
                        "live" => Ok(Scenario::Live),
                        "isolation" => Ok(Scenario::Isolation),
                        other => {
                            bail!("unknown scenario {other}; expected closes, live or isolation")
                        }
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--clients" => {
                options.clients = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--rounds" => options.rounds = value()?.parse()?,
            "--alternations" => options.alternations = value()?.parse()?,
            "--idle" => options.idle = value()?.parse()?,
            "--rate" => options.rate = value()?.parse()?,
            "--in-flight" => options.in_flight = value()?.parse()?,
            "--spacing-us" => options.spacing = Duration::from_micros(value()?.parse()?),
            "--round-ms" => options.round_every = Duration::from_millis(value()?.parse()?),
            "--forming-ms" => options.forming_every = Duration::from_millis(value()?.parse()?),
            "--forming-together" => options.forming_together = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if options.clients.contains(&0) || options.rounds == 0 || options.alternations == 0 {
        bail!("--clients, --rounds and --alternations must be at least 1");
    }
    if options.rate <= 0.0 || options.in_flight == 0 || options.forming_every.is_zero() {
        bail!("--rate, --in-flight and --forming-ms must be positive");
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(floor::READER_FLAG) {
        return floor::reader(args[2].parse()?, args[3].parse()?);
    }
    let options = parse_options()?;
    raise_open_file_limit(&options)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// Raises this process's soft open-file limit to its hard limit and checks that
/// the largest scenario fits: N clients beside N floor sockets (closes, live), or
/// N + idle clients (isolation), plus a few for the fake and the metrics.
fn raise_open_file_limit(options: &Options) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let most = options.clients.iter().max().copied().unwrap_or(0);
    let needed = options
        .scenarios
        .iter()
        .map(|scenario| match scenario {
            Scenario::Closes | Scenario::Live => 2 * most,
            Scenario::Isolation => most + options.idle,
        })
        .max()
        .unwrap_or(0)
        + 200;
    if (limit as usize) < needed {
        bail!(
            "this run needs about {needed} open files but the limit (ulimit -n) is {limit}; \
             raise it or use fewer --clients"
        );
    }
    Ok(())
}

async fn run(options: Options) -> anyhow::Result<()> {
    // Starts the clock every recorded instant is measured on.
    clients::stamp(std::time::Instant::now());
    println!(
        "machine: {} cores, {}; {} rounds per run",
        std::thread::available_parallelism()?,
        memory_line(),
        options.rounds
    );
    let mut results = report::Results::default();
    for &n in &options.clients {
        for &scenario in &options.scenarios {
            let started = std::time::Instant::now();
            match scenario {
                Scenario::Closes => {
                    let result = scenarios::closes(&options, n).await?;
                    report::print_closes(&result);
                    results.closes.push(result);
                }
                Scenario::Live => {
                    let result = live::live(&options, n).await?;
                    report::print_live(&result);
                    results.live.push(result);
                }
                Scenario::Isolation => {
                    let result = scenarios::isolation(&options, n).await?;
                    report::print_isolation(&result);
                    results.isolation.push(result);
                }
            }
            eprintln!(
                "({scenario:?} with {n} clients took {:.0?})",
                started.elapsed()
            );
        }
    }
    report::print_summary(&results, &options);
    Ok(())
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

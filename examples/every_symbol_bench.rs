//! `SYMBOLS=*` against issue 23's budgets: the release binary follows about 500
//! contracts (the five majors and `C000USDT`…) of the fake exchange from a cold
//! start on its embedded store, with the default `INTERVALS` and `HISTORY_MAX`, and
//! the bench measures
//!
//! 1. its RSS once every window is full (the 1m windows fetched, every longer
//!    window seeded with one klines request per contract and interval, paced at
//!    1,200 weight a minute), again once the cold start's fetches are over, and at
//!    the end: budget 300 MiB;
//! 2. its CPU while every contract sends a forming (`x:false`) update every 250 ms,
//!    about 2,000 frames a second: budget 0.25 CPU s/s. The floor, in the same
//!    run and the same span, is a bare reader of the same stream on a thread of its
//!    own (what taking the frames off a loopback websocket costs); the idle service
//!    (each contract updating every 10 s) is measured over the same length of time
//!    in the next minute;
//! 3. close rounds: every contract's minute closes at once (the wall-clock minute's
//!    end); the time until every close is in the SQLite file (polled every 20 ms)
//!    and until each of five clients subscribed to 100 contracts each
//!    (`/?symbols=…&format=candles&limit=1`) holds its closes, each exactly once:
//!    budget 10 s.
//!
//! ```sh
//! cargo build --release && cargo run --release --example every_symbol_bench
//! ```
//!
//! Options: `--contracts N` (500), `--load-secs S` (30), `--rounds R` (3 close
//! rounds, the load and the idle span between them), `--forming-ms` (250),
//! `--intervals 1m,5m,15m,1h` and `--history-max 20` for a quicker run (passed to
//! the service as `INTERVALS` and `HISTORY_MAX`), `--utc 23:45` to run on an
//! exchange clock that starts at that time of the UTC day (a run from 23:52 closes
//! a round at midnight, when every interval closes and the day built from the
//! exchange's `4h` seeds completes). A cold start with the defaults takes about six
//! minutes of paced requests; the whole run about eleven.
//! Everything stays on 127.0.0.1, the load is bounded, and it stops by itself.

#[allow(dead_code)] // the single-file benches' helpers; this one starts from an empty store
mod common;
#[path = "../tests/common/fake_exchange.rs"]
mod fake_exchange;
#[path = "common/every_symbol/market.rs"]
mod market;
#[path = "common/every_symbol/watch.rs"]
mod watch;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fake_exchange::MINUTE;
use fake_exchange::intervals::interval_ms;
use market::{Market, minute_open, now_ms};
use watch::{CloseWatcher, FloorReader};

/// The budgets of issue 23.
const RSS_BUDGET_MIB: f64 = 300.0;
const CPU_BUDGET: f64 = 0.25;
const CLOSE_BUDGET: Duration = Duration::from_secs(10);
/// The service's defaults, which the bench uses unless told otherwise.
const DEFAULT_INTERVALS: &str = "1m,5m,15m,1h,4h,1d";
const DEFAULT_HISTORY_MAX: usize = 100;
/// Contracts per close watcher (its URL lists them all).
const PER_CLIENT: usize = 100;
/// Each contract's forming period outside the load: often enough that no contract
/// looks quiet to the service (`UPSTREAM_STALE_SECS`, 30 s).
const BACKGROUND: Duration = Duration::from_secs(10);
/// No klines request for this long after the seeds: the cold start's fetches are over.
const QUIET: Duration = Duration::from_secs(20);

struct Options {
    contracts: usize,
    load_secs: u64,
    rounds: usize,
    forming: Duration,
    intervals: Option<String>,
    history_max: Option<usize>,
    /// `HH:MM`: the fake's clock starts at the latest such time of the UTC day.
    utc: Option<(i64, i64)>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        contracts: 500,
        load_secs: 30,
        rounds: 3,
        forming: Duration::from_millis(250),
        intervals: None,
        history_max: None,
        utc: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a value after the option");
        match arg.as_str() {
            "--contracts" => options.contracts = value()?.parse()?,
            "--load-secs" => options.load_secs = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            "--forming-ms" => options.forming = Duration::from_millis(value()?.parse()?),
            "--intervals" => options.intervals = Some(value()?),
            "--history-max" => options.history_max = Some(value()?.parse()?),
            "--utc" => {
                let value = value()?;
                let (hours, minutes) = value.split_once(':').context("--utc HH:MM")?;
                options.utc = Some((hours.parse()?, minutes.parse()?));
            }
            other => bail!(
                "unknown option {other}; expected --contracts, --load-secs, --rounds, --forming-ms, --intervals, --history-max or --utc"
            ),
        }
    }
    if options.load_secs > 40 || options.rounds < 2 || options.contracts < 5 {
        bail!(
            "--load-secs at most 40 (a span fits between two minutes' closes), --rounds at least 2, --contracts at least 5"
        );
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let intervals = options
        .intervals
        .clone()
        .unwrap_or(DEFAULT_INTERVALS.to_owned());
    let window = options.history_max.unwrap_or(DEFAULT_HISTORY_MAX);
    let mut longer = Vec::new();
    for name in intervals.split(',').filter(|name| *name != "1m") {
        longer.push(interval_ms(name).with_context(|| format!("interval {name}"))?);
    }
    let symbols = market::contracts(options.contracts);
    let offset = options
        .utc
        .map_or(0, |(hours, minutes)| clock_offset(hours, minutes));
    let market = Market::start(&symbols, &longer, window, BACKGROUND, offset)?;
    if offset != 0 {
        println!(
            "the fake exchange's clock runs {} min behind the wall clock: it is {} UTC there",
            -offset / MINUTE,
            utc_time(market.now_ms())
        );
    }
    let dir = tempfile::tempdir()?;
    let mut env = vec![("SYMBOLS", "*".to_owned())];
    if let Some(intervals) = &options.intervals {
        env.push(("INTERVALS", intervals.clone()));
    }
    if let Some(history_max) = options.history_max {
        env.push(("HISTORY_MAX", history_max.to_string()));
    }
    let (server, addr) = common::start_release(&market.fake, dir.path(), &env)?;
    let pid = server.id();
    let outcome = measure(
        &options,
        &market,
        &symbols,
        &longer,
        window,
        dir.path(),
        pid,
        addr,
    )
    .await;
    common::stop(server);
    let report = outcome?;
    report.print(&options, &symbols, &intervals, window);
    Ok(())
}

/// Everything measured in one run.
struct Report {
    cold_start: ColdStart,
    windows_full: usize,
    windows: usize,
    load: Span,
    idle: Span,
    rounds: Vec<Round>,
    final_rss_kib: (u64, u64),
    /// VmRSS after the history API's check of every window, and after the load.
    checked_rss_kib: u64,
    loaded_rss_kib: u64,
    klines_during: usize,
    skipped_minutes: f64,
    /// Final frames the service read from the stream while the rounds were measured.
    closes_read: f64,
    reconnects: f64,
}

struct ColdStart {
    /// From start to the 1m windows fetched, to every seed, to the fetches' end.
    base_done: Duration,
    seeds_done: Duration,
    settled: Duration,
    /// (VmRSS, VmHWM) when every window was full, and once the fetches were over.
    full_kib: (u64, u64),
    settled_kib: (u64, u64),
    klines: usize,
    /// Minutes since 00:00 UTC when the fetches ended.
    minute_of_day: i64,
}

/// CPU over one span.
struct Span {
    seconds: f64,
    server_cpu: f64,
    floor_cpu: f64,
    bench_cpu: f64,
    /// Every other process on the machine (other builds, …).
    others_cpu: f64,
    forming_sent: u64,
    floor_frames: u64,
    server_frames: f64,
}

struct Round {
    open_time: i64,
    closes: usize,
    stored: Option<Duration>,
    clients_all: Option<Duration>,
    p50: Duration,
    p99: Duration,
    /// Client-coin pairs that got the close more than once, and not at all.
    duplicated: usize,
    missing: usize,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    options: &Options,
    market: &Market,
    symbols: &[String],
    longer: &[i64],
    window: usize,
    dir: &std::path::Path,
    pid: u32,
    addr: SocketAddr,
) -> anyhow::Result<Report> {
    let cold_start = cold_start(market, symbols, longer.len(), pid).await?;
    let (windows_full, windows) = count_full_windows(addr, symbols, longer, window).await?;
    let checked_rss_kib = watch::memory_kib(pid).0;
    println!("windows holding {window} candles (history API): {windows_full} of {windows}");

    let http = reqwest::Client::new();
    let metrics_url = format!("http://{addr}/metrics");
    let floor = FloorReader::start(market.fake.ws_url(), symbols)?;
    let mut watchers = Vec::new();
    for group in symbols.chunks(PER_CLIENT) {
        watchers.push(CloseWatcher::connect(addr, group).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while watchers.iter().map(CloseWatcher::received).sum::<usize>() < symbols.len() {
        if Instant::now() > deadline {
            bail!("the close watchers did not get their first messages");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics_before = http.get(&metrics_url).send().await?.text().await?;
    let klines_before = watch::klines_requests(&market.fake.rest_log()).len();

    let mut rounds = Vec::new();
    let mut load = None;
    let mut idle = None;
    let mut loaded_rss_kib = 0;
    for n in 0..options.rounds {
        let closing = minute_open(market.now_ms());
        let round = close_round(market, &watchers, symbols, dir, closing).await?;
        println!(
            "close round {}: stored {} , clients {} , once each: {}",
            n + 1,
            shown(round.stored),
            shown(round.clients_all),
            round.duplicated == 0 && round.missing == 0
        );
        rounds.push(round);
        // The spans run between closes: from 10 s after a minute's end.
        let start = market
            .driver
            .round(closing)
            .map_or_else(Instant::now, |r| r.handed)
            + Duration::from_secs(10);
        tokio::time::sleep_until(start.into()).await;
        let length = Duration::from_secs(options.load_secs);
        if load.is_none() {
            market.driver.set_period(options.forming);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let span = span(market, &floor, &http, &metrics_url, pid, length).await?;
            market.driver.set_period(BACKGROUND);
            println!(
                "load: server {:.3} CPU s/s, floor {:.3}, {:.0} forming frames/s",
                span.server_cpu / span.seconds,
                span.floor_cpu / span.seconds,
                span.forming_sent as f64 / span.seconds
            );
            load = Some(span);
            loaded_rss_kib = watch::memory_kib(pid).0;
        } else if idle.is_none() {
            let span = span(market, &floor, &http, &metrics_url, pid, length).await?;
            println!("idle: server {:.3} CPU s/s", span.server_cpu / span.seconds);
            idle = Some(span);
        }
    }
    let metrics_after = http.get(&metrics_url).send().await?.text().await?;
    let log = market.fake.rest_log();
    let klines_during = watch::klines_requests(&log).len() - klines_before;
    let repairs: Vec<&String> = log
        .iter()
        .filter(|entry| entry.starts_with("/fapi/v1/klines"))
        .skip(klines_before)
        .collect();
    for entry in repairs.iter().take(10) {
        println!("klines request during the measured minutes: {entry}");
    }
    let delta =
        |name: &str| watch::metric(&metrics_after, name) - watch::metric(&metrics_before, name);
    for watcher in &watchers {
        if !watcher.is_open() {
            println!("a close watcher's connection ended early");
        }
    }
    Ok(Report {
        cold_start,
        windows_full,
        windows,
        load: load.context("the load span")?,
        idle: idle.context("the idle span")?,
        rounds,
        final_rss_kib: watch::memory_kib(pid),
        checked_rss_kib,
        loaded_rss_kib,
        klines_during,
        skipped_minutes: delta("candlecast_upstream_skipped_minutes_total"),
        closes_read: delta("candlecast_upstream_closed_candles_total"),
        reconnects: delta("candlecast_upstream_reconnects_total"),
    })
}

/// Waits for the cold start: the 1m windows, every longer window's seed, then no
/// klines request for [`QUIET`]; notes the RSS at the last two.
async fn cold_start(
    market: &Market,
    symbols: &[String],
    longer: usize,
    pid: u32,
) -> anyhow::Result<ColdStart> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(40 * 60);
    let (mut base_done, mut seeds_done, mut full_kib) = (None, None, (0, 0));
    let (mut requests, mut last_request) = (0, Instant::now());
    let mut progress = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = watch::klines_requests(&market.fake.rest_log());
        if log.len() > requests {
            (requests, last_request) = (log.len(), Instant::now());
        }
        let asked: HashSet<&(String, String)> = log.iter().collect();
        let base = asked.iter().filter(|(_, i)| i == "1m").count();
        let seeds = asked.len() - base;
        if base_done.is_none() && base >= symbols.len() {
            base_done = Some(started.elapsed());
        }
        if seeds_done.is_none() && seeds >= symbols.len() * longer {
            // The last seed was requested: wait for its answer to be applied.
            tokio::time::sleep(Duration::from_secs(2)).await;
            seeds_done = Some(started.elapsed());
            full_kib = watch::memory_kib(pid);
            println!(
                "every window seeded after {:.0} s: VmRSS {:.1} MiB",
                started.elapsed().as_secs_f64(),
                mib(full_kib.0)
            );
        }
        if let Some(seeds_done) = seeds_done
            && last_request.elapsed() >= QUIET
        {
            let settled_kib = watch::memory_kib(pid);
            return Ok(ColdStart {
                base_done: base_done.unwrap_or_default(),
                seeds_done,
                settled: last_request.duration_since(started),
                full_kib,
                settled_kib,
                klines: requests,
                minute_of_day: (market.now_ms() - QUIET.as_millis() as i64)
                    .rem_euclid(1_440 * MINUTE)
                    / MINUTE,
            });
        }
        if progress.elapsed() >= Duration::from_secs(30) {
            progress = Instant::now();
            println!(
                "{:>4.0} s: 1m windows {base}/{}, seeds {seeds}/{}, {requests} klines requests, VmRSS {:.1} MiB",
                started.elapsed().as_secs_f64(),
                symbols.len(),
                symbols.len() * longer,
                mib(watch::memory_kib(pid).0)
            );
        }
        if Instant::now() > deadline {
            bail!("the cold start did not end within 40 minutes");
        }
    }
}

/// Asks the history API for `window` candles of every contract at every interval;
/// returns how many answered that many, and how many were asked.
async fn count_full_windows(
    addr: SocketAddr,
    symbols: &[String],
    longer: &[i64],
    window: usize,
) -> anyhow::Result<(usize, usize)> {
    let client = &reqwest::Client::new();
    let names: Vec<&str> = [
        "1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "1w",
    ]
    .into_iter()
    .filter(|name| *name == "1m" || longer.contains(&interval_ms(name).unwrap_or(0)))
    .collect();
    let urls: Vec<String> = symbols
        .iter()
        .flat_map(|symbol| {
            names.iter().map(move |interval| {
                format!("http://{addr}/api/v1/candles/{symbol}?interval={interval}&limit={window}")
            })
        })
        .collect();
    let mut full = 0;
    for batch in urls.chunks(8) {
        let answers = futures_util::future::join_all(batch.iter().map(|url| async move {
            let body: serde_json::Value = client.get(url).send().await?.json().await?;
            Ok::<_, anyhow::Error>(body["candles"].as_array().map_or(0, Vec::len))
        }))
        .await;
        for held in answers {
            if held? >= window {
                full += 1;
            }
        }
    }
    Ok((full, urls.len()))
}

/// Waits for the close round of the minute opened at `closing` and measures it.
async fn close_round(
    market: &Market,
    watchers: &[CloseWatcher],
    symbols: &[String],
    dir: &std::path::Path,
    closing: i64,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + Duration::from_secs(75);
    let round = loop {
        if let Some(round) = market.driver.round(closing) {
            break round;
        }
        if Instant::now() > deadline {
            bail!("no close round for the minute opened at {closing}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let timeout = Duration::from_secs(30);
    let stored = watch::stored_at(
        dir.join("data").join("candlecast.sqlite3"),
        symbols.to_vec(),
        closing,
        Duration::from_millis(20),
        timeout,
    );
    let clients = async {
        let wanted: usize = watchers.iter().map(|w| w.symbols.len()).sum();
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let got: usize = watchers.iter().map(|w| w.closes_of(closing).len()).sum();
            if got >= wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A second copy would come right behind the first.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let (stored, ()) = tokio::join!(stored, clients);
    let mut latencies = Vec::new();
    let (mut duplicated, mut missing) = (0, 0);
    for watcher in watchers {
        let closes = watcher.closes_of(closing);
        for symbol in &watcher.symbols {
            match closes.get(symbol) {
                Some((count, at)) => {
                    latencies.push(at.saturating_duration_since(round.handed));
                    duplicated += usize::from(*count > 1);
                }
                None => missing += 1,
            }
        }
    }
    let mut slowest: Vec<(Duration, &String)> = Vec::new();
    for watcher in watchers {
        for (symbol, (_, at)) in watcher.closes_of(closing) {
            let latency = at.saturating_duration_since(round.handed);
            if latency > Duration::from_secs(1) {
                slowest.push((
                    latency,
                    watcher
                        .symbols
                        .iter()
                        .find(|s| **s == symbol)
                        .expect("its own"),
                ));
            }
        }
    }
    slowest.sort();
    for (latency, symbol) in slowest.iter().rev().take(5) {
        println!(
            "  {symbol}: its close reached its client after {:.0} ms",
            ms(*latency)
        );
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Ok(Round {
        open_time: closing,
        closes: round.closes,
        stored: stored?.map(|at| at.saturating_duration_since(round.handed)),
        clients_all: (missing == 0).then(|| at(1.0)),
        p50: at(0.5),
        p99: at(0.99),
        duplicated,
        missing,
    })
}

/// The server's, the floor reader's and this process's CPU over `length`.
async fn span(
    market: &Market,
    floor: &FloorReader,
    http: &reqwest::Client,
    metrics_url: &str,
    pid: u32,
    length: Duration,
) -> anyhow::Result<Span> {
    let frames_before = watch::metric(
        &http.get(metrics_url).send().await?.text().await?,
        "candlecast_upstream_frames_total",
    );
    let bench = std::process::id();
    let cpu = || {
        (
            common::cpu_seconds(pid),
            watch::thread_cpu_seconds(floor.tid),
            common::cpu_seconds(bench),
            watch::machine_busy_seconds(),
        )
    };
    let (forming, floor_frames) = (market.driver.forming_sent(), floor.frames());
    let before = cpu();
    let started = Instant::now();
    tokio::time::sleep(length).await;
    let after = cpu();
    let seconds = started.elapsed().as_secs_f64();
    let (forming, floor_frames) = (
        market.driver.forming_sent() - forming,
        floor.frames() - floor_frames,
    );
    let frames_after = watch::metric(
        &http.get(metrics_url).send().await?.text().await?,
        "candlecast_upstream_frames_total",
    );
    Ok(Span {
        seconds,
        server_cpu: after.0 - before.0,
        floor_cpu: after.1 - before.1,
        bench_cpu: (after.2 - before.2) - (after.1 - before.1),
        others_cpu: (after.3 - before.3) - (after.0 - before.0) - (after.2 - before.2),
        forming_sent: forming,
        floor_frames,
        server_frames: frames_after - frames_before,
    })
}

impl Report {
    fn print(&self, options: &Options, symbols: &[String], intervals: &str, window: usize) {
        let contracts = symbols.len();
        let cold = &self.cold_start;
        let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
        println!();
        println!(
            "{contracts} contracts, SYMBOLS=*, INTERVALS={intervals}, HISTORY_MAX={window}, SQLite, release binary; {} cores",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        println!(
            "cold start: 1m windows after {:.0} s, every window seeded after {:.0} s, fetches over after {:.0} s ({} klines requests; started {} minutes into the UTC day)",
            cold.base_done.as_secs_f64(),
            cold.seeds_done.as_secs_f64(),
            cold.settled.as_secs_f64(),
            cold.klines,
            cold.minute_of_day
        );
        println!("| figure | measured | budget | |");
        println!("| --- | --- | --- | --- |");
        let rss = [cold.full_kib.0, cold.settled_kib.0, self.final_rss_kib.0]
            .into_iter()
            .max()
            .unwrap_or(0);
        for (label, (rss_kib, hwm_kib)) in [
            ("RSS, every window seeded", cold.full_kib),
            ("RSS, cold start's fetches over", cold.settled_kib),
            (
                "RSS at the end (after the load and rounds)",
                self.final_rss_kib,
            ),
        ] {
            println!(
                "| {label} | {:.1} MiB (VmHWM {:.1}); {:.0} KiB per contract | ≤ {RSS_BUDGET_MIB:.0} MiB | {} |",
                mib(rss_kib),
                mib(hwm_kib),
                rss_kib as f64 / contracts as f64,
                verdict(mib(rss_kib) <= RSS_BUDGET_MIB)
            );
        }
        println!(
            "| RSS along the run: seeded / fetches over / after the history API read every window / after the load / end | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} MiB | | |",
            mib(cold.full_kib.0),
            mib(cold.settled_kib.0),
            mib(self.checked_rss_kib),
            mib(self.loaded_rss_kib),
            mib(self.final_rss_kib.0)
        );
        println!(
            "| windows full ({window} candles) | {} of {} | all | {} |",
            self.windows_full,
            self.windows,
            verdict(self.windows_full == self.windows)
        );
        let load = &self.load;
        let per_second = load.server_cpu / load.seconds;
        println!(
            "| server CPU, forming every {} ms ({:.0} frames/s; the server read {:.0}/s) | {per_second:.3} CPU s/s; {:.2}x the floor, {:.2}x idle | ≤ {CPU_BUDGET} | {} |",
            options.forming.as_millis(),
            load.forming_sent as f64 / load.seconds,
            load.server_frames / load.seconds,
            per_second / (load.floor_cpu / load.seconds),
            per_second / (self.idle.server_cpu / self.idle.seconds).max(1e-9),
            verdict(per_second <= CPU_BUDGET)
        );
        println!(
            "| floor: a bare websocket reader of the same frames ({:.0}/s) | {:.3} CPU s/s | | |",
            load.floor_frames as f64 / load.seconds,
            load.floor_cpu / load.seconds
        );
        println!(
            "| idle server (forming every {} s), same length | {:.3} CPU s/s | | |",
            BACKGROUND.as_secs(),
            self.idle.server_cpu / self.idle.seconds
        );
        println!(
            "| bench: fake, driver and clients during the load | {:.3} CPU s/s | | |",
            load.bench_cpu / load.seconds
        );
        println!(
            "| other processes on the machine during the load / idle span | {:.3} / {:.3} CPU s/s | | |",
            load.others_cpu / load.seconds,
            self.idle.others_cpu / self.idle.seconds
        );
        for (n, round) in self.rounds.iter().enumerate() {
            let closing = utc_time(round.open_time + MINUTE);
            println!(
                "| close round {} ({} closes at {closing} UTC): all stored / all {} clients hold theirs (p50, p99) | {} / {} ({:.0}, {:.0} ms); {} duplicated, {} missing | ≤ 10 s, each once | {} |",
                n + 1,
                round.closes,
                contracts.div_ceil(PER_CLIENT),
                shown(round.stored),
                shown(round.clients_all),
                ms(round.p50),
                ms(round.p99),
                round.duplicated,
                round.missing,
                verdict(
                    round.stored.is_some_and(|d| d <= CLOSE_BUDGET)
                        && round.clients_all.is_some_and(|d| d <= CLOSE_BUDGET)
                        && round.duplicated == 0
                        && round.missing == 0
                )
            );
        }
        println!(
            "during the measured minutes: the service read {:.0} of the {} final frames sent; {} klines requests reached the exchange, {:.0} minutes were repaired as skipped, {:.0} upstream reconnects",
            self.closes_read,
            self.rounds.iter().map(|r| r.closes).sum::<usize>(),
            self.klines_during,
            self.skipped_minutes,
            self.reconnects
        );
        println!(
            "RSS verdict over all three readings: {:.1} MiB, {}",
            mib(rss),
            verdict(mib(rss) <= RSS_BUDGET_MIB)
        );
    }
}

/// The fake's clock offset (ms, whole minutes, at most 0) that makes its clock read
/// the latest `hours:minutes` UTC not after now.
fn clock_offset(hours: i64, minutes: i64) -> i64 {
    const DAY: i64 = 1_440 * MINUTE;
    let now = minute_open(now_ms());
    let mut target = now.div_euclid(DAY) * DAY + (hours * 60 + minutes) * MINUTE;
    if target > now {
        target -= DAY;
    }
    target - now
}

/// `HH:MM` of `ms` since the epoch, UTC.
fn utc_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(String::new(), |t| t.format("%H:%M").to_string())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn shown(duration: Option<Duration>) -> String {
    duration.map_or("not within 30 s".to_owned(), |d| format!("{:.0} ms", ms(d)))
}

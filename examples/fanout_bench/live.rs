//! The live scenario: `?live=true` clients while the fake updates every coin's
//! forming candle at full rate and closes rounds, with the floor measured (quiet)
//! before and after the load.

use std::time::{Duration, Instant};

use crate::analysis::{self, FormingDelays, Summary};
use crate::clients::{self, Pace, Recording, stamp};
use crate::exchange::{self, LoadPlan};
use crate::floor::{Floor, round_payload};
use crate::scenarios::{
    ROUND_TIMEOUT, Round, RoundCheck, SETTLE, floor_round, median_duration, spec, start,
    summarize_rounds,
};
use crate::server::Rates;
use crate::{Options, SYMBOLS};

/// What the live scenario measured.
pub struct LiveResult {
    pub n: usize,
    pub forming: Summary,
    pub forming_samples: usize,
    /// (update, client) pairs never held.
    pub forming_missed: usize,
    pub unreadable: usize,
    /// Forming updates the fake sent per second (all coins).
    pub updates_sent: f64,
    pub rates: Rates,
    /// Messages clients recorded per second in the measured window, as a check.
    pub received: f64,
    pub rounds: Vec<Round>,
    pub fanout: Summary,
    pub floor: Duration,
    pub check: RoundCheck,
}

/// Target (2): `?live=true` clients while every coin's forming candle updates every
/// `forming_every` and a round closes every `round_every`; the floor is measured
/// (quiet) before and after the load.
pub async fn live(options: &Options, n: usize) -> anyhow::Result<LiveResult> {
    eprintln!("== live: {n} clients with live=true");
    let (exchange, server, mut closer) = start(options, n).await?;
    let message_len = clients::sample_message_len(server.addr).await?;
    let settle = Duration::from_secs(1);
    let load = settle + options.round_every * options.rounds as u32;
    let updates_per_client =
        SYMBOLS.len() as f64 * load.as_secs_f64() / options.forming_every.as_secs_f64();
    let capacity = updates_per_client.ceil() as usize + SYMBOLS.len() * (options.rounds + 2) + 16;

    eprintln!("connecting {n} live clients");
    let batch = clients::connect(
        spec(server.addr, true, capacity),
        n,
        Pace::InFlight(options.in_flight),
    )
    .await?;
    let payload = round_payload(SYMBOLS.len(), message_len);
    let mut floor = tokio::task::block_in_place(|| Floor::start(n, payload))?;
    let mut floors = Vec::new();
    for _ in 0..options.rounds.div_ceil(2) {
        floors.push(floor_round(&mut floor)?);
        tokio::time::sleep(SETTLE).await;
    }

    // A warm-up round, held by every client: the closed candles after which the
    // load's forming candles open.
    let (newest, warm_up) = closer.close_round(&exchange.fake, options.spacing);
    batch
        .progress
        .wait_for(2 * (n * SYMBOLS.len()) as u64, ROUND_TIMEOUT)
        .await?;
    tokio::time::sleep(SETTLE).await;

    eprintln!(
        "load: forming every {:?} per coin, a close round every {:?}, {} rounds",
        options.forming_every, options.round_every, options.rounds
    );
    let start = Instant::now() + Duration::from_millis(50);
    let plan = LoadPlan {
        forming_every: options.forming_every,
        together: options.forming_together,
        round_every: options.round_every,
        rounds: options.rounds,
        spacing: options.spacing,
        start,
        measure_from: start + settle,
    };
    let (measure_from, measure_to) = (plan.measure_from, plan.measure_to());
    let load = exchange::run_load(&exchange, plan, closer, newest);
    let sampling = async {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = server.sample().await?;
        tokio::time::sleep_until(measure_to.into()).await;
        anyhow::Ok((before, server.sample().await?))
    };
    let (log, samples) = tokio::join!(load, sampling);
    let (mut log, (before, after)) = (log?, samples?);
    log.rounds.insert(0, warm_up);

    // Throttled updates go out on a trailing edge, and a loaded server may be
    // behind: let the last ones arrive.
    batch
        .progress
        .wait_quiet(Duration::from_millis(500), ROUND_TIMEOUT)
        .await;
    for _ in 0..options.rounds / 2 {
        floors.push(floor_round(&mut floor)?);
        tokio::time::sleep(SETTLE).await;
    }
    drop(floor);
    let recordings = batch.finish().await;

    let (from, to) = (stamp(measure_from), stamp(measure_to));
    let FormingDelays {
        mut delays,
        missed,
        unreadable,
    } = analysis::forming_delays(&recordings, &log, from, to);
    let received = received_between(&recordings, from, to);
    let mut rounds = analysis::round_delays(&recordings, &log.rounds, &log.closer);
    let (per_round, fanout) = summarize_rounds(&mut rounds, 1);
    // What the forming load put in the close rounds' way: forming messages that
    // reached clients while a round fanned out (until its p99).
    let spans: Vec<u32> = per_round.iter().map(|r| (r.p99 * 1000.0) as u32).collect();
    let during = analysis::forming_during_rounds(&recordings, &log.rounds[1..], &spans);
    drop(recordings);
    let per_client: Vec<String> = during
        .iter()
        .map(|count| format!("{:.2}", *count as f64 / n as f64))
        .collect();
    eprintln!(
        "forming messages received during each close round's fan-out, per client: {}",
        per_client.join(" ")
    );
    let window = (measure_to - measure_from).as_secs_f64();
    let sent: usize = log.updates.iter().map(Vec::len).sum();
    Ok(LiveResult {
        n,
        forming_samples: delays.len(),
        forming: analysis::summarize_micros(&mut delays),
        forming_missed: missed,
        unreadable,
        updates_sent: sent as f64 / (window + settle.as_secs_f64()),
        rates: before.rates_to(&after),
        received: received as f64 / window,
        rounds: per_round
            .into_iter()
            .map(|fanout| Round {
                fanout,
                floor: None,
            })
            .collect(),
        fanout,
        floor: median_duration(&floors),
        check: RoundCheck::of(&rounds),
    })
}

fn received_between(recordings: &[Recording], from: u32, to: u32) -> usize {
    recordings
        .iter()
        .map(|r| r.times.iter().filter(|t| (from..to).contains(t)).count())
        .sum()
}

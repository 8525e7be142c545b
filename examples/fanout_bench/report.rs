//! What the bench prints: each scenario's rounds as it finishes, then a summary of
//! the five targets as markdown table lines, ready for the README.

use std::time::Duration;

use crate::Options;
use crate::analysis::median;
use crate::live::LiveResult;
use crate::scenarios::{ClosesResult, IsolationResult, Round, RoundCheck};

/// Every scenario's results, for the summary.
#[derive(Default)]
pub struct Results {
    pub closes: Vec<ClosesResult>,
    pub live: Vec<LiveResult>,
    pub isolation: Vec<IsolationResult>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Each round's p99 over the run's median floor.
fn ratios(rounds: &[Round], floor: Duration) -> Vec<f64> {
    rounds.iter().map(|r| r.fanout.p99 / ms(floor)).collect()
}

fn print_rounds(rounds: &[Round], floor: Duration) {
    println!("| round | fan-out p50 / p99 / max | floor | p99 / floor |");
    println!("| --- | --- | --- | --- |");
    for (i, round) in rounds.iter().enumerate() {
        let floor_cell = round
            .floor
            .map_or("(median)".to_owned(), |f| format!("{:.1} ms", ms(f)));
        println!(
            "| {} | {} | {floor_cell} | {:.2}x |",
            i + 1,
            round.fanout,
            round.fanout.p99 / ms(floor)
        );
    }
}

fn warn_check(check: &RoundCheck) {
    if check.missed > 0 {
        println!(
            "({} times a client never held a round; those are left out)",
            check.missed
        );
    }
    if check.extra > 0 {
        println!(
            "({} window messages repeated a round the client held: the server republished a window)",
            check.extra
        );
    }
}

pub fn print_closes(r: &ClosesResult) {
    println!();
    println!(
        "### closes: {} clients, {}-byte messages, five closes as five frames",
        r.n, r.message_len
    );
    print_rounds(&r.rounds, r.floor);
    println!(
        "median p99 / floor {:.2}x; floor median {:.1} ms; all rounds {}",
        median(&ratios(&r.rounds, r.floor)),
        ms(r.floor),
        r.fanout
    );
    warn_check(&r.check);
    println!();
    println!(
        "| clients | connect+snapshot @offered: rate, p50/p99/max | @saturation: rate, p50/p99/max |"
    );
    println!("| --- | --- | --- |");
    println!(
        "| {} | {:.0}/s, {} | {:.0}/s, {} |",
        r.n, r.steady_rate, r.steady_connect, r.saturated_rate, r.saturated_connect
    );
    println!();
    println!("| clients | server RSS idle | RSS connected | per connection |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| {} | {:.1} MiB | {:.1} MiB | {:.1} KB |",
        r.n,
        r.rss_idle as f64 / 1024.0,
        r.rss_connected as f64 / 1024.0,
        per_connection_kb(r)
    );
}

fn per_connection_kb(r: &ClosesResult) -> f64 {
    r.rss_connected.saturating_sub(r.rss_idle) as f64 * 1024.0 / r.n as f64 / 1000.0
}

pub fn print_live(r: &LiveResult) {
    println!();
    println!("### live: {} clients with live=true", r.n);
    println!(
        "forming updates sent by the fake: {:.1}/s; delay until each client holds each \
         update or a newer one: {} ({} samples, {} never held, {} unreadable)",
        r.updates_sent, r.forming, r.forming_samples, r.forming_missed, r.unreadable
    );
    println!(
        "delivered (server counters): {:.0} messages/s, {:.2} MB/s; clients recorded {:.0} \
         messages/s; CPU seconds per second: server {:.2}, bench (clients + fake) {:.2}",
        r.rates.messages,
        r.rates.bytes / 1e6,
        r.received,
        r.rates.server_cpu,
        r.rates.bench_cpu
    );
    println!("close fan-out during the load, against the floor measured before and after it:");
    print_rounds(&r.rounds, r.floor);
    println!(
        "median p99 / floor {:.2}x; floor median {:.1} ms; all rounds {}",
        median(&ratios(&r.rounds, r.floor)),
        ms(r.floor),
        r.fanout
    );
    warn_check(&r.check);
}

/// Median p99 without and with the idle clients, and RSS per idle client (KB).
fn isolation_medians(r: &IsolationResult) -> (f64, f64, f64) {
    let p99 = |with: bool| {
        let values: Vec<f64> = r
            .runs
            .iter()
            .filter(|run| run.with_idle == with)
            .map(|run| run.fanout.p99)
            .collect();
        median(&values)
    };
    // The first pair only: later ones start from memory the allocator kept.
    let per_idle = match &r.runs[..] {
        [without, with, ..] => {
            with.rss_kib.saturating_sub(without.rss_kib) as f64 * 1024.0
                / r.idle.max(1) as f64
                / 1000.0
        }
        _ => 0.0,
    };
    (p99(false), p99(true), per_idle)
}

pub fn print_isolation(r: &IsolationResult) {
    println!();
    println!(
        "### isolation: {} clients, runs alternating without and with {} that never read",
        r.n, r.idle
    );
    println!("| run | never-reading clients | fan-out p50 / p99 / max | server RSS |");
    println!("| --- | --- | --- | --- |");
    for (i, run) in r.runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.1} MiB |",
            i / 2 + 1,
            if run.with_idle { r.idle } else { 0 },
            run.fanout,
            run.rss_kib as f64 / 1024.0
        );
    }
    let (without, with, per_idle) = isolation_medians(r);
    println!(
        "median p99 without / with: {without:.1} / {with:.1} ms ({:+.0}%); RSS per never-reading client {per_idle:.1} KB (first run)",
        (with / without - 1.0) * 100.0
    );
    warn_check(&r.check);
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

pub fn print_summary(results: &Results, options: &Options) {
    println!();
    println!(
        "## Summary ({} rounds per run; ratios to the floor measured in the same run)",
        options.rounds
    );
    println!();
    println!("| target | clients | measured | goal | |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &results.closes {
        let ratios = ratios(&r.rounds, r.floor);
        let ratio = median(&ratios);
        let (low, high) = ratios
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "| (1) close fan-out p99 / floor, five closes as five frames | {} | {ratio:.2}x median \
             (rounds {low:.2}–{high:.2}x; p99 {:.1} ms, floor {:.1} ms) | ≤ 1.1x | {} |",
            r.n,
            median(&r.rounds.iter().map(|x| x.fanout.p99).collect::<Vec<_>>()),
            ms(r.floor),
            verdict(ratio <= 1.1)
        );
    }
    for r in &results.live {
        println!(
            "| (2) forming update held (or newer), p50 / p99 / max | {} | {} | p99 ≤ 500 ms | {} |",
            r.n,
            r.forming,
            verdict(r.forming.p99 <= 500.0 && r.forming_missed == 0)
        );
        println!(
            "| (2) delivered under the live load; server CPU | {} | {:.0} messages/s, {:.2} MB/s; \
             {:.2} CPU s/s | report | |",
            r.n,
            r.rates.messages,
            r.rates.bytes / 1e6,
            r.rates.server_cpu
        );
        let ratio = median(&ratios(&r.rounds, r.floor));
        println!(
            "| (2) close fan-out p99 / floor under the live load | {} | {ratio:.2}x median \
             (p99 {:.1} ms, floor {:.1} ms) | ≤ 1.3x | {} |",
            r.n,
            median(&r.rounds.iter().map(|x| x.fanout.p99).collect::<Vec<_>>()),
            ms(r.floor),
            verdict(ratio <= 1.3)
        );
    }
    for r in &results.closes {
        let per = per_connection_kb(r);
        println!(
            "| (3) RSS per idle connection | {} | {per:.1} KB | ≤ 4 KB | {} |",
            r.n,
            verdict(per <= 4.0)
        );
    }
    for r in &results.isolation {
        let (without, with, _) = isolation_medians(r);
        let change = (with / without - 1.0) * 100.0;
        println!(
            "| (4) never-reading clients' effect on fan-out p99 (median of {} alternations) | {} + {} \
             | {change:+.0}% ({without:.1} → {with:.1} ms) | ≤ +10% | {} |",
            r.runs.len() / 2,
            r.n,
            r.idle,
            verdict(change <= 10.0)
        );
    }
    for r in &results.closes {
        println!(
            "| (5) connects/s at saturation; p99 at {:.0}/s offered | {} | {:.0}/s; {:.1} ms | \
             ≥ 5000/s; ≤ 50 ms | {} |",
            options.rate,
            r.n,
            r.saturated_rate,
            r.steady_connect.p99,
            verdict(r.saturated_rate >= 5000.0 && r.steady_connect.p99 <= 50.0)
        );
    }
}

//! The backfill's report on standard output: what it will fetch, up front, and
//! what it did, at the end. Plain lines, one symbol each, for people and scripts.

use std::fmt::Write;
use std::time::Duration;

use super::WEIGHT_PER_MINUTE;
use super::args::rfc3339_ms;
use super::fetch::{Outcome, Tally};
use super::plan::{Span, SymbolPlan};
use super::progress::human;

/// Holes listed per symbol; the rest are summed up in one line.
const HOLES_LISTED: usize = 20;

/// The opening lines: the range, the interval and the store.
pub fn header(interval: &str, span: &Span, requested_end: i64, store: &str) -> String {
    let mut text = format!(
        "Backfill of {interval} candles opening in [{}, {}): {} per symbol",
        rfc3339_ms(span.first),
        rfc3339_ms(span.end),
        span.len()
    );
    if span.end < requested_end {
        text.push_str(" (later ones have not closed on the exchange yet)");
    }
    let _ = write!(text, "\nStore: {store}");
    text
}

/// Per symbol, what the store holds and the holes to fetch; then the total.
pub fn plan(plans: &[SymbolPlan]) -> String {
    let mut text = String::new();
    let (mut missing, mut requests, mut weight) = (0, 0, 0);
    for plan in plans {
        let in_range = plan.span.len();
        if plan.holes.is_empty() {
            let _ = writeln!(
                text,
                "{}: {in_range} candles in range, all stored",
                plan.symbol
            );
            continue;
        }
        let _ = writeln!(
            text,
            "{}: {in_range} candles in range, {} stored, {} to fetch in {} {}:",
            plan.symbol,
            plan.present,
            plan.missing(),
            plan.holes.len(),
            if plan.holes.len() == 1 {
                "range"
            } else {
                "ranges"
            }
        );
        let step = plan.span.step;
        for hole in plan.holes.iter().take(HOLES_LISTED) {
            let _ = writeln!(
                text,
                "  [{}, {}) {}",
                rfc3339_ms(hole.start),
                rfc3339_ms(hole.end),
                candles((hole.end - hole.start) / step)
            );
        }
        if let Some(rest) = plan
            .holes
            .get(HOLES_LISTED..)
            .filter(|rest| !rest.is_empty())
        {
            let candles: i64 = rest.iter().map(|h| (h.end - h.start) / step).sum();
            let _ = writeln!(
                text,
                "  … and {} more ranges, {candles} candles",
                rest.len()
            );
        }
        let (r, w) = plan.estimate();
        missing += plan.missing();
        requests += r;
        weight += w;
    }
    if missing == 0 {
        text.push_str("Nothing to fetch: the store holds every candle of the range.");
    } else {
        let seconds = weight as f64 * 60.0 / f64::from(WEIGHT_PER_MINUTE);
        let _ = write!(
            text,
            "To fetch: {missing} candles, at least {} (weight {weight}): about {} at {WEIGHT_PER_MINUTE} weight a minute",
            counted(requests, "request"),
            human(Duration::from_secs_f64(seconds))
        );
    }
    text
}

/// `1 candle`, `2 candles`.
fn candles(n: i64) -> String {
    counted(n.unsigned_abs(), "candle")
}

/// `1 request`, `2 requests`.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Per symbol, what was fetched, stored and already there, and how it ended.
pub fn summary(results: &[(&SymbolPlan, Outcome, Tally)], took: Duration) -> String {
    let mut text = String::new();
    let mut stored = 0;
    for (plan, outcome, tally) in results {
        stored += tally.stored;
        let _ = write!(
            text,
            "{}: fetched {}, stored {}, already present {}: ",
            plan.symbol, tally.fetched, tally.stored, plan.present
        );
        let left = plan.missing() - tally.stored - tally.unavailable;
        match outcome {
            Outcome::Complete => text.push_str("complete"),
            Outcome::Interrupted => {
                let _ = write!(text, "interrupted, {left} still missing");
            }
            Outcome::Refused(why) => {
                let _ = write!(text, "failed: the exchange refuses {}: {why}", plan.symbol);
            }
            Outcome::StoreFailed(why) => {
                let _ = write!(text, "failed: the store did not take a page: {why}");
            }
        }
        if tally.unavailable > 0 {
            let _ = write!(
                text,
                " (the exchange has no candle for {} of the missing open times)",
                tally.unavailable
            );
        }
        text.push('\n');
    }
    let _ = write!(text, "Stored {stored} candles in {}.", human(took));
    text
}

//! After a run: which message each recorded head was, when each client held each
//! round and each forming update, and the percentiles of those delays. All times
//! are microseconds on the [`crate::clients::stamp`] clock.

use std::time::Duration;

use crate::SYMBOLS;
use crate::clients::Recording;
use crate::exchange::{LoadLog, update_of};

/// What a recorded message was.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A coin's window (`{"coin":…,"values":…}`): the snapshot or a round's close.
    Window,
    /// A forming candle, with its close price.
    Forming(f64),
    Other,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The coin (index into [`SYMBOLS`]) and kind of the message whose head is `head`.
fn classify(head: &[u8]) -> Option<(usize, Kind)> {
    let rest = head.strip_prefix(br#"{"coin":""#)?;
    let coin = SYMBOLS
        .iter()
        .position(|s| rest.starts_with(s.as_bytes()))?;
    let rest = &rest[SYMBOLS[coin].len()..];
    if rest.starts_with(br#"","values":"#) {
        return Some((coin, Kind::Window));
    }
    if find(rest, br#""forming":"#).is_some() {
        // A close cut off by the head reads as NaN: an unreadable update.
        let close = find(rest, br#""close":"#)
            .and_then(|at| {
                let number = &rest[at + br#""close":"#.len()..];
                let end = number.iter().position(|&b| b == b',' || b == b'}')?;
                std::str::from_utf8(&number[..end]).ok()?.parse().ok()
            })
            .unwrap_or(f64::NAN);
        return Some((coin, Kind::Forming(close)));
    }
    Some((coin, Kind::Other))
}

/// When a round of closes was handed to the fake, on the [`crate::clients::stamp`]
/// clock: its first frame (where the round begins) and its last (where its latency
/// is measured from).
#[derive(Debug, Clone, Copy)]
pub struct Handed {
    pub first: u32,
    pub last: u32,
}

/// Per round and coin, when the client first got that coin's window message after
/// the round began (before the next one began), and how many window messages it got
/// besides those and its snapshot.
fn window_arrivals(recording: &Recording, rounds: &[Handed]) -> (Vec<[Option<u32>; 5]>, usize) {
    let mut arrivals = vec![[None; 5]; rounds.len()];
    let mut extra = 0;
    for i in 0..recording.len() {
        let Some((coin, Kind::Window)) = classify(recording.head(i)) else {
            continue;
        };
        let at = recording.times[i];
        let round = rounds.partition_point(|r| r.first <= at);
        if round == 0 {
            continue; // the snapshot
        }
        match &mut arrivals[round - 1][coin] {
            slot @ None => *slot = Some(at),
            Some(_) => extra += 1,
        }
    }
    (arrivals, extra)
}

/// Per round, every client's delay from the round's last close frame to holding all
/// five coins' new window messages.
pub struct RoundDelays {
    pub per_round: Vec<Vec<u32>>,
    /// (client, round) pairs where the client never held the round.
    pub missed: usize,
    /// Window messages beyond one per coin per round (none is expected).
    pub extra: usize,
}

pub fn round_delays(recordings: &[Recording], rounds: &[Handed]) -> RoundDelays {
    let mut delays = RoundDelays {
        per_round: vec![Vec::with_capacity(recordings.len()); rounds.len()],
        missed: 0,
        extra: 0,
    };
    for recording in recordings {
        let (arrivals, extra) = window_arrivals(recording, rounds);
        delays.extra += extra;
        for (k, coins) in arrivals.iter().enumerate() {
            match coins.iter().copied().collect::<Option<Vec<u32>>>() {
                Some(times) => {
                    let held = times.into_iter().max().expect("five coins");
                    delays.per_round[k].push(held.saturating_sub(rounds[k].last));
                }
                None => delays.missed += 1,
            }
        }
    }
    delays
}

/// The delays of the forming updates handed in `[from, to)`: per update and client,
/// from the hand-off to the client holding that update or a newer one (a later
/// forming update of the coin, or the close of its candle).
pub struct FormingDelays {
    pub delays: Vec<u32>,
    /// (update, client) pairs never held by the end of the run.
    pub missed: usize,
    /// Forming messages whose close said no update the fake sent.
    pub unreadable: usize,
}

pub fn forming_delays(
    recordings: &[Recording],
    log: &LoadLog,
    from: u32,
    to: u32,
) -> FormingDelays {
    let mut result = FormingDelays {
        delays: Vec::new(),
        missed: 0,
        unreadable: 0,
    };
    for recording in recordings {
        // Per coin: (arrival, how many of the coin's updates the message covers).
        let mut events: Vec<Vec<(u32, usize)>> = vec![Vec::new(); SYMBOLS.len()];
        for i in 0..recording.len() {
            if let Some((coin, Kind::Forming(close))) = classify(recording.head(i)) {
                let seq = update_of(close, log.bases[coin]) as usize;
                if seq == 0 || seq > log.updates[coin].len() {
                    result.unreadable += 1;
                    continue;
                }
                events[coin].push((recording.times[i], seq));
            }
        }
        // A round's close covers every update handed before the round began.
        let (arrivals, _) = window_arrivals(recording, &log.rounds);
        for (round, coins) in log.rounds.iter().zip(&arrivals) {
            for (coin, arrived) in coins.iter().enumerate() {
                if let Some(arrived) = *arrived {
                    let updates = &log.updates[coin];
                    let covered = updates.partition_point(|&(_, handed)| handed < round.first);
                    events[coin].push((arrived, covered));
                }
            }
        }
        for (coin, updates) in log.updates.iter().enumerate() {
            let events = &mut events[coin];
            events.sort_unstable();
            let mut held = 0;
            for &(arrived, covers) in events.iter() {
                while held < covers {
                    let handed = updates[held].1;
                    if (from..to).contains(&handed) {
                        result.delays.push(arrived.saturating_sub(handed));
                    }
                    held += 1;
                }
            }
            result.missed += updates[held..]
                .iter()
                .filter(|(_, handed)| (from..to).contains(handed))
                .count();
        }
    }
    result
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1} / {:.1} ms", self.p50, self.p99, self.max)
    }
}

/// Percentiles of microsecond samples (all zero if there are none).
pub fn summarize_micros(samples: &mut [u32]) -> Summary {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[index]) / 1000.0
    };
    Summary {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// Percentiles of durations.
pub fn summarize(samples: &[Duration]) -> Summary {
    let mut micros: Vec<u32> = samples
        .iter()
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    summarize_micros(&mut micros)
}

/// The median of `values` (0 if empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_windows_from_forming_candles() {
        assert_eq!(
            classify(br#"{"coin":"ETHUSDT","values":[3000.5,"#),
            Some((2, Kind::Window))
        );
        let forming = br#"{"coin":"XRPUSDT","interval":"1m","forming":{"open_time":1,"close_time":2,"open":2.1,"high":2.1,"low":2.0003,"close":2.0003,"volume":3.0"#;
        assert_eq!(classify(forming), Some((4, Kind::Forming(2.0003))));
    }
}

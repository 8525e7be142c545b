//! After a run: which message each recorded head was, when each client held each
//! round and each forming update, and the percentiles of those delays. All times
//! are microseconds on the [`crate::clients::stamp`] clock.

use std::time::Duration;

use crate::SYMBOLS;
use crate::clients::Recording;
use crate::exchange::{Closer, LoadLog, update_of};

/// What a recorded message was.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A coin's window (`{"coin":…,"values":[…`): the snapshot or a round's close,
    /// with its newest close price.
    Window(f64),
    /// A forming candle, with its close price.
    Forming(f64),
    Other,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The number at the start of `bytes`, up to `,`, `]` or `}`; NaN if there is none
/// (a price cut off by the head is unreadable).
fn number_at(bytes: &[u8]) -> f64 {
    bytes
        .iter()
        .position(|&b| matches!(b, b',' | b']' | b'}'))
        .and_then(|end| std::str::from_utf8(&bytes[..end]).ok()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The coin (index into [`SYMBOLS`]) and kind of the message whose head is `head`.
fn classify(head: &[u8]) -> Option<(usize, Kind)> {
    let rest = head.strip_prefix(br#"{"coin":""#)?;
    let coin = SYMBOLS
        .iter()
        .position(|s| rest.starts_with(s.as_bytes()))?;
    let rest = &rest[SYMBOLS[coin].len()..];
    if let Some(values) = rest.strip_prefix(br#"","values":["#) {
        return Some((coin, Kind::Window(number_at(values))));
    }
    if find(rest, br#""forming":"#).is_some() {
        let close = find(rest, br#""close":"#)
            .map_or(f64::NAN, |at| number_at(&rest[at + br#""close":"#.len()..]));
        return Some((coin, Kind::Forming(close)));
    }
    Some((coin, Kind::Other))
}

/// A round of closes: its number ([`Closer`]) and when it was handed to the fake, on
/// the [`crate::clients::stamp`] clock: its first frame and its last (where its
/// latency is measured from).
#[derive(Debug, Clone, Copy)]
pub struct Handed {
    pub number: u64,
    pub first: u32,
    pub last: u32,
}

/// Per round (of `rounds`, in order) and coin, when the client first held that
/// round's close of the coin: its window message of that round or of a later one (a
/// client that fell behind gets only the newest). Also how many window messages
/// repeated a round the client already held.
fn window_arrivals(
    recording: &Recording,
    rounds: &[Handed],
    closer: &Closer,
) -> (Vec<[Option<u32>; 5]>, usize) {
    let mut arrivals = vec![[None; 5]; rounds.len()];
    let mut newest = [0u64; 5];
    let mut extra = 0;
    for i in 0..recording.len() {
        let Some((coin, Kind::Window(close))) = classify(recording.head(i)) else {
            continue;
        };
        let round = closer.round_of(coin, close);
        if round == newest[coin] && round > 0 {
            extra += 1;
        }
        if round <= newest[coin] {
            continue;
        }
        let from = rounds.partition_point(|r| r.number <= newest[coin]);
        let to = rounds.partition_point(|r| r.number <= round);
        for held in &mut arrivals[from..to] {
            held[coin] = Some(recording.times[i]);
        }
        newest[coin] = round;
    }
    (arrivals, extra)
}

/// Per round, every client's delay from the round's last close frame to holding all
/// five coins' new window messages.
pub struct RoundDelays {
    pub per_round: Vec<Vec<u32>>,
    /// (client, round) pairs where the client never held the round.
    pub missed: usize,
    /// Window messages repeating a round the client held (none is expected).
    pub extra: usize,
}

pub fn round_delays(recordings: &[Recording], rounds: &[Handed], closer: &Closer) -> RoundDelays {
    let mut delays = RoundDelays {
        per_round: vec![Vec::with_capacity(recordings.len()); rounds.len()],
        missed: 0,
        extra: 0,
    };
    for recording in recordings {
        let (arrivals, extra) = window_arrivals(recording, rounds, closer);
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

/// Per round, the forming messages clients received while it fanned out: from its
/// first close frame's hand-off until `spans[k]` (µs) after its last. A close round
/// that forming writes never cut into counts none.
pub fn forming_during_rounds(
    recordings: &[Recording],
    rounds: &[Handed],
    spans: &[u32],
) -> Vec<usize> {
    rounds
        .iter()
        .zip(spans)
        .map(|(round, span)| {
            let window = round.first..round.last.saturating_add(*span);
            recordings
                .iter()
                .map(|r| {
                    (0..r.len())
                        .filter(|&i| window.contains(&r.times[i]))
                        .filter(|&i| matches!(classify(r.head(i)), Some((_, Kind::Forming(_)))))
                        .count()
                })
                .sum()
        })
        .collect()
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
                let seq = update_of(close, log.forming_bases[coin]) as usize;
                if seq == 0 || seq > log.updates[coin].len() {
                    result.unreadable += 1;
                    continue;
                }
                events[coin].push((recording.times[i], seq));
            }
        }
        // A round's close covers every update handed before the round began.
        let (arrivals, _) = window_arrivals(recording, &log.rounds, &log.closer);
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
            classify(br#"{"coin":"ETHUSDT","values":[3000.05,"#),
            Some((2, Kind::Window(3000.05)))
        );
        let cut_off = classify(br#"{"coin":"ETHUSDT","values":[3000.0"#);
        assert!(matches!(cut_off, Some((2, Kind::Window(close))) if close.is_nan()));
        let forming = br#"{"coin":"XRPUSDT","interval":"1m","forming":{"open_time":1,"close_time":2,"open":2.1,"high":2.1,"low":2.0003,"close":2.0003,"volume":3.0"#;
        assert_eq!(classify(forming), Some((4, Kind::Forming(2.0003))));
    }

    /// The window message of `coin` showing round `round` of a closer based at 100.
    fn window(coin: &str, round: u64) -> Vec<u8> {
        format!(
            r#"{{"coin":"{coin}","values":[{},99.5]"#,
            100.0 + round as f64 * 0.01
        )
        .into_bytes()
    }

    #[test]
    fn a_client_that_fell_behind_holds_the_round_it_skipped_with_the_newer_one() {
        let closer = Closer::with_bases(vec![100.0; SYMBOLS.len()]);
        let rounds: Vec<Handed> = (2..=4)
            .map(|number| Handed {
                number,
                first: number as u32 * 1000,
                last: number as u32 * 1000 + 10,
            })
            .collect();
        let mut recording = Recording::with_capacity(48, 32);
        // The snapshot shows round 1; then round 2, round 4 (3 folded into it) and
        // round 4 again.
        for (at, round) in [(500, 1), (2100, 2), (4200, 4), (4300, 4)] {
            for coin in SYMBOLS {
                recording.push(at, &window(coin, round));
            }
        }
        let delays = round_delays(&[recording], &rounds, &closer);
        assert_eq!(delays.per_round, vec![vec![90], vec![1190], vec![190]]);
        assert_eq!((delays.missed, delays.extra), (0, SYMBOLS.len()));
    }
}

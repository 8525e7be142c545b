//! The answers of bots' polls (`klines` with neither `startTime` nor `endTime`),
//! shared by every request for the same rows until a close or a forming update
//! changes them.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::candle::Notation;

/// Poll answers kept before the cache starts over.
const POLL_CACHE_SIZE: usize = 1024;

/// What identifies the closed rows of a poll: the request and the closes it shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PollKey {
    pub(super) position: usize,
    pub(super) interval: String,
    pub(super) limit: usize,
    pub(super) current: i64,
    pub(super) closed_version: u64,
    /// How the symbol's decimals are written, which may still be learned.
    pub(super) notation: Notation,
}

/// A poll's answer: its closed rows built once per close, the whole answer once
/// per forming update.
#[derive(Debug, Clone)]
pub(super) struct PollAnswer {
    pub(super) closed: Bytes,
    /// Whether the rows reach the bucket still forming (its row goes last).
    pub(super) reaches_forming: bool,
    pub(super) forming_version: u64,
    pub(super) whole: Bytes,
}

/// Poll answers (no `startTime`, no `endTime`) shared by every request for the
/// same rows: a forming update re-encodes one row, never the closed ones.
#[derive(Default)]
pub(super) struct PollCache {
    answers: Mutex<HashMap<PollKey, PollAnswer>>,
}

impl PollCache {
    pub(super) fn get(&self, key: &PollKey) -> Option<PollAnswer> {
        self.answers.lock().expect("poll lock").get(key).cloned()
    }

    pub(super) fn put(&self, key: PollKey, rows: PollAnswer) {
        let mut answers = self.answers.lock().expect("poll lock");
        if answers.len() >= POLL_CACHE_SIZE {
            answers.clear();
        }
        answers.insert(key, rows);
    }
}

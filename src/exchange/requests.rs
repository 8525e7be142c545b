//! The control messages of one stream connection (Binance USD-M docs, "Websocket
//! Market Streams", "Live Subscribing/Unsubscribing to streams"): `SUBSCRIBE` and
//! `UNSUBSCRIBE` requests in batches, sent no faster than half Binance's limit of
//! incoming messages, each matched by its id with the answer, `{"result":null,"id":N}`
//! or `{"error":{"code":C,"msg":"…"},"id":N}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Binance: "A single connection can listen to a maximum of 1024 streams."
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Streams named in a connection's URL (`?streams=a/b/…`); the others are subscribed
/// by message, so the request line stays short however many a connection carries
/// (Binance refuses a handshake whose URL is too long).
pub(super) const URL_STREAMS: usize = 10;
/// Streams per `SUBSCRIBE` or `UNSUBSCRIBE` message. Binance documents no limit;
/// 100 keeps a message near 2 KB, and a full connection needs 11 of them.
pub(super) const STREAMS_PER_REQUEST: usize = 100;
/// At most 5 control messages a second on one connection: half Binance's "limit of
/// 10 incoming messages per second" (pings and pongs count too), beyond which it
/// drops the connection.
pub(super) const REQUEST_GAP: Duration = Duration::from_millis(200);
/// A request still unanswered after this long means the connection is not listening.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Request ids, unique in the process, so an answer can never be taken for another
/// connection's.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a control message asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Subscribe,
    Unsubscribe,
}

impl Method {
    /// Binance's name of the method.
    pub(super) fn name(self) -> &'static str {
        match self {
            Method::Subscribe => "SUBSCRIBE",
            Method::Unsubscribe => "UNSUBSCRIBE",
        }
    }
}

/// One control message: a method and the symbols whose streams it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) method: Method,
    /// Symbols as followed (upper case); the message names their streams.
    pub(super) symbols: Vec<String>,
}

/// How the exchange answered one of our requests.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Accepted(Request),
    /// Refused, with Binance's error code and message.
    Refused(Request, i64, String),
}

/// A request sent and not answered yet.
#[derive(Debug)]
struct Pending {
    request: Request,
    deadline: Instant,
}

/// One connection's control messages: those waiting for their turn and those sent
/// and not answered yet.
#[derive(Debug)]
pub(super) struct Requests {
    /// `@kline_1m`: a symbol's stream is its lower-case name with this suffix.
    suffix: String,
    queue: VecDeque<Request>,
    /// By id; ids grow with sending time, so the first has the earliest deadline.
    pending: BTreeMap<u64, Pending>,
    last_sent: Option<Instant>,
}

#[derive(Deserialize)]
struct AnswerFrame {
    id: Option<u64>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
    msg: String,
}

impl Requests {
    /// No requests yet, for streams named `{symbol}{suffix}` (`suffix`: `@kline_1m`).
    pub(super) fn new(suffix: String) -> Self {
        Self {
            suffix,
            queue: VecDeque::new(),
            pending: BTreeMap::new(),
            last_sent: None,
        }
    }

    /// `symbol`'s stream name: `btcusdt@kline_1m`.
    pub(super) fn stream(&self, symbol: &str) -> String {
        format!("{}{}", symbol.to_lowercase(), self.suffix)
    }

    /// Queues `method` for `symbols`, [`STREAMS_PER_REQUEST`] to a message.
    pub(super) fn push(&mut self, method: Method, symbols: &[String]) {
        for chunk in symbols.chunks(STREAMS_PER_REQUEST) {
            self.queue.push_back(Request {
                method,
                symbols: chunk.to_vec(),
            });
        }
    }

    /// Nothing queued and nothing unanswered.
    pub(super) fn idle(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }

    /// When the next queued message may be sent, if one is queued.
    pub(super) fn send_at(&self) -> Option<Instant> {
        self.queue.front()?;
        Some(
            self.last_sent
                .map_or_else(Instant::now, |sent| sent + REQUEST_GAP),
        )
    }

    /// Takes the next queued message, to be sent at `now`: its id and its JSON text.
    pub(super) fn take_next(&mut self, now: Instant) -> Option<(u64, String)> {
        let request = self.queue.pop_front()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let params: Vec<String> = request.symbols.iter().map(|s| self.stream(s)).collect();
        let params = serde_json::to_string(&params).expect("strings serialize");
        // Binance's own key order.
        let text = format!(
            r#"{{"method":"{}","params":{params},"id":{id}}}"#,
            request.method.name()
        );
        self.last_sent = Some(now);
        self.pending.insert(
            id,
            Pending {
                request,
                deadline: now + ANSWER_TIMEOUT,
            },
        );
        Some((id, text))
    }

    /// The oldest unanswered request's id and when it is overdue.
    pub(super) fn deadline(&self) -> Option<(u64, Instant)> {
        self.pending
            .first_key_value()
            .map(|(id, pending)| (*id, pending.deadline))
    }

    /// Whether request `id` was sent and not answered yet.
    pub(super) fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Forgets an unanswered request (the connection is given up); returns it.
    pub(super) fn give_up(&mut self, id: u64) -> Option<Request> {
        self.pending.remove(&id).map(|pending| pending.request)
    }

    /// Reads `text` as the answer to one of our unanswered requests; `None` when it
    /// is no answer, or answers a request this connection did not send.
    pub(super) fn answer(&mut self, text: &str) -> Option<Answer> {
        // Kline events, nearly every frame, open with their stream's name.
        if text.starts_with(r#"{"stream""#) {
            return None;
        }
        let frame: AnswerFrame = serde_json::from_str(text).ok()?;
        let pending = self.pending.remove(&frame.id?)?;
        Some(match frame.error {
            None => Answer::Accepted(pending.request),
            Some(error) => Answer::Refused(pending.request, error.code, error.msg),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("C{i}USDT")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_go_in_batches_at_most_five_a_second() {
        let mut requests = Requests::new("@kline_1m".into());
        requests.push(Method::Subscribe, &symbols(250));
        let start = Instant::now();
        let mut sent = Vec::new();
        while let Some(at) = requests.send_at() {
            tokio::time::sleep_until(at).await;
            let (id, text) = requests.take_next(Instant::now()).unwrap();
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(message["method"], "SUBSCRIBE");
            assert_eq!(message["id"], id);
            sent.push((
                start.elapsed().as_millis(),
                message["params"].as_array().unwrap().len(),
            ));
        }
        assert_eq!(sent, [(0, 100), (200, 100), (400, 50)]);
        assert!(!requests.idle(), "three answers outstanding");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_matched_by_id_and_others_left_alone() {
        let mut requests = Requests::new("@kline_1m".into());
        requests.push(Method::Subscribe, &["BTCUSDT".into()]);
        requests.push(Method::Unsubscribe, &["ETHUSDT".into()]);
        let (first, text) = requests.take_next(Instant::now()).unwrap();
        assert_eq!(
            text,
            format!(r#"{{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":{first}}}"#)
        );
        let (second, _) = requests.take_next(Instant::now()).unwrap();
        assert_eq!(
            requests.deadline(),
            Some((first, Instant::now() + ANSWER_TIMEOUT))
        );
        // Not ours, or no answer at all.
        assert_eq!(requests.answer(r#"{"result":null,"id":0}"#), None);
        assert_eq!(
            requests.answer(r#"{"stream":"btcusdt@kline_1m","data":{}}"#),
            None
        );
        assert_eq!(requests.answer("not json"), None);
        assert_eq!(
            requests.answer(&format!(
                r#"{{"error":{{"code":2,"msg":"Invalid request: too many streams"}},"id":{second}}}"#
            )),
            Some(Answer::Refused(
                Request {
                    method: Method::Unsubscribe,
                    symbols: vec!["ETHUSDT".into()]
                },
                2,
                "Invalid request: too many streams".into()
            ))
        );
        assert_eq!(
            requests.answer(&format!(r#"{{"result":null,"id":{first}}}"#)),
            Some(Answer::Accepted(Request {
                method: Method::Subscribe,
                symbols: vec!["BTCUSDT".into()]
            }))
        );
        assert!(requests.idle());
        // An answer comes once.
        assert_eq!(
            requests.answer(&format!(r#"{{"result":null,"id":{first}}}"#)),
            None
        );
    }
}

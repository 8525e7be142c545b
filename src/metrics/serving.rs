//! The HTTP server's metrics: connections before any upgrade, refused handshakes,
//! the view cache and `since` resumes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of `upgrades_refused`: what a websocket handshake lacked.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Label of `resumes`: where a `since` resume was served from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `memory` (the window reached back far enough) or `store`.
    pub source: &'static str,
}

/// The HTTP server's metrics, registered with the others.
#[derive(Debug)]
pub struct ServingMetrics {
    /// `http_connections_open`: HTTP connections open now, before any upgrade.
    pub http_connections_open: Gauge,
    /// `http_connections_refused`: connections answered 503 because too many HTTP
    /// connections were open, or the process was out of file descriptors.
    pub http_connections_refused: Counter,
    /// `accept_errors`: failed accepts (e.g. too many open files).
    pub accept_errors: Counter,
    /// `proxy_headers_refused{reason}`: connections closed for their PROXY protocol
    /// header: `missing`, `invalid`, `version` (not the one `PROXY_PROTOCOL` names),
    /// `unexpected` (sent while `PROXY_PROTOCOL=off`).
    pub proxy_headers_refused: Family<ReasonLabel, Counter>,
    /// `upgrades_refused{reason}`: requests with `Upgrade: websocket` that were not a
    /// valid handshake, by what they lacked.
    pub upgrades_refused: Family<ReasonLabel, Counter>,
    /// `cached_views`: distinct non-default views whose messages are kept (set when scraped).
    pub cached_views: Gauge,
    /// `resumes{source}`: coins resumed with `?since=`, from memory or the store.
    pub resumes: Family<SourceLabel, Counter>,
    /// `http_refused{reason}`: 5xx answers the service decided on (`max_connections`,
    /// `too_many_reads`, `store_unavailable`, `not_ready`), not failures of it.
    pub http_refused: Family<ReasonLabel, Counter>,
}

impl ServingMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            http_connections_open: Gauge::default(),
            http_connections_refused: Counter::default(),
            accept_errors: Counter::default(),
            proxy_headers_refused: Family::default(),
            upgrades_refused: Family::default(),
            cached_views: Gauge::default(),
            resumes: Family::default(),
            http_refused: Family::default(),
        };
        let m = &metrics;
        registry.register(
            "http_connections_open",
            "HTTP connections open before any upgrade",
            m.http_connections_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections answered 503 at the HTTP connection cap or out of descriptors",
            m.http_connections_refused.clone(),
        );
        registry.register("accept_errors", "Failed accepts", m.accept_errors.clone());
        registry.register(
            "proxy_headers_refused",
            "Connections closed for their PROXY protocol header, by reason",
            m.proxy_headers_refused.clone(),
        );
        registry.register(
            "upgrades_refused",
            "Invalid websocket handshakes, by what they lacked",
            m.upgrades_refused.clone(),
        );
        registry.register(
            "cached_views",
            "Distinct non-default views whose messages are kept",
            m.cached_views.clone(),
        );
        registry.register(
            "resumes",
            "Coins resumed with ?since=, by where the candles came from",
            m.resumes.clone(),
        );
        registry.register(
            "http_refused",
            "5xx answers the service decided on, by reason (not failures of the service)",
            m.http_refused.clone(),
        );
        metrics
    }
}

//! The request log: which answers are failures of the service. A 5xx the service
//! chose to give (a refusal at a limit, a store that does not answer, readiness
//! failing) is counted, and logged where it was decided ([`super::quiet`] sums up
//! floods of them); any other 5xx (a handler's panic, an unexpected error) is
//! logged here, once, at ERROR, with the request and its cause.
//!
//! tower-http's default classifier calls every 5xx a failure and logs each at
//! ERROR: 50 upgrades refused at `MAX_CONNECTIONS` wrote 50 ERROR lines beside the
//! summary. Here the response itself says whether it was decided: [`Refused`] in its
//! extensions.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos,
};
use tower_http::trace::{
    DefaultMakeSpan, DefaultOnBodyChunk, DefaultOnEos, DefaultOnRequest, DefaultOnResponse,
    OnFailure, TraceLayer,
};
use tracing::{Span, error};

use crate::metrics::{Metrics, ReasonLabel};

/// Marks a 5xx answer the service decided on, with the reason counted in the
/// `http_refused{reason}` metric: not a failure of the service, so the request log
/// does not log it (whoever decided it logs it, summed up when it floods).
#[derive(Debug, Clone, Copy)]
pub struct Refused(pub &'static str);

impl Refused {
    /// `response` marked as decided for `self`'s reason.
    pub fn mark(self, mut response: Response<Body>) -> Response<Body> {
        response.extensions_mut().insert(self);
        response
    }
}

/// The cause of an unexpected 5xx, for the one ERROR line the request log writes.
#[derive(Debug, Clone)]
pub struct Cause(pub Arc<str>);

/// The HTTP layers that log the service's own failures: a handler's panic becomes
/// a 500 with its message as the [`Cause`], and every 5xx not [`Refused`] is logged
/// once at ERROR. Apply with `Router::layer`, outermost.
pub type RequestLog = TraceLayer<
    Failures,
    DefaultMakeSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    LogFailure,
>;

/// The request log, counting refusals in `metrics`.
pub fn request_log(metrics: Arc<Metrics>) -> RequestLog {
    TraceLayer::new(Failures { metrics }).on_failure(LogFailure)
}

/// What a handler's panic carries.
type Panic = Box<dyn Any + Send + 'static>;

/// Turns a handler's panic into a 500 that the request log reports; apply inside
/// [`request_log`].
pub fn catch_panics() -> CatchPanicLayer<fn(Panic) -> Response<Body>> {
    CatchPanicLayer::custom(panic_response)
}

fn panic_response(panic: Panic) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    let body = Json(json!({"error": "internal server error"}));
    let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
    let cause = format!("the handler panicked: {message}");
    response.extensions_mut().insert(Cause(cause.into()));
    response
}

/// Makes one [`Classify`] per request.
#[derive(Clone)]
pub struct Failures {
    metrics: Arc<Metrics>,
}

impl MakeClassifier for Failures {
    type Classifier = Classify;
    type FailureClass = Failure;
    type ClassifyEos = NeverClassifyEos<Failure>;

    fn make_classifier<B>(&self, request: &Request<B>) -> Classify {
        Classify {
            method: request.method().clone(),
            uri: request.uri().clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// Classifies one request's answer; holds the request's method and path for the
/// ERROR line (the request span is at DEBUG, off under the default `RUST_LOG`).
#[derive(Clone)]
pub struct Classify {
    method: Method,
    uri: Uri,
    metrics: Arc<Metrics>,
}

/// A failure of the service: what was asked, what it got, and why.
pub struct Failure {
    method: Method,
    uri: Uri,
    status: Option<StatusCode>,
    cause: Option<Arc<str>>,
}

impl ClassifyResponse for Classify {
    type FailureClass = Failure;
    type ClassifyEos = NeverClassifyEos<Failure>;

    fn classify_response<B>(
        self,
        response: &Response<B>,
    ) -> ClassifiedResponse<Failure, NeverClassifyEos<Failure>> {
        let status = response.status();
        if let Some(Refused(reason)) = response.extensions().get::<Refused>() {
            let label = ReasonLabel { reason };
            self.metrics
                .serving
                .http_refused
                .get_or_create(&label)
                .inc();
            return ClassifiedResponse::Ready(Ok(()));
        }
        if !status.is_server_error() {
            return ClassifiedResponse::Ready(Ok(()));
        }
        let cause = response
            .extensions()
            .get::<Cause>()
            .map(|c| Arc::clone(&c.0));
        ClassifiedResponse::Ready(Err(Failure {
            method: self.method,
            uri: self.uri,
            status: Some(status),
            cause,
        }))
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> Failure {
        Failure {
            method: self.method,
            uri: self.uri,
            status: None,
            cause: Some(error.to_string().into()),
        }
    }
}

/// Logs a [`Failure`] at ERROR, once per request.
#[derive(Debug, Clone, Copy)]
pub struct LogFailure;

impl OnFailure<Failure> for LogFailure {
    fn on_failure(&mut self, failure: Failure, latency: Duration, _span: &Span) {
        let Failure {
            method,
            uri,
            status,
            cause,
        } = failure;
        error!(
            %method,
            path = %uri.path(),
            status = status.map(|s| s.as_u16()),
            cause = cause.as_deref().unwrap_or("none given"),
            latency_ms = latency.as_millis() as u64,
            "request failed"
        );
    }
}

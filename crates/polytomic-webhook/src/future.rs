//! [`DeliveryFuture`]: the response future, which closes the delivery's span with its outcome
//! and emits its metrics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use polytomic_webhook_core::check::CheckFuture;
pub(crate) use polytomic_webhook_core::check::close_connection;
use polytomic_webhook_core::response::{ResponseBody, ResponseFuture};
use polytomic_webhook_decompression::DecompressionInfo;
use polytomic_webhook_event::BatchObserver;
use tracing::Span;

use crate::drain::Drain;
use crate::metrics::{InFlight, Outcome, Webhook};

pin_project! {
    /// Response future of [`PolytomicWebhook`](crate::PolytomicWebhook).
    ///
    /// Runs the inner service inside the delivery's `polytomic_webhook.delivery` span and,
    /// when the response is ready, records the outcome, status, latency and body sizes on it
    /// and logs one event: `info` for an accepted or ignored delivery, `warn` otherwise. The
    /// same outcome goes to the [`metrics`](crate::metrics); the delivery counts as in flight
    /// from the call until this future completes or is dropped.
    ///
    /// For a request refused before its body was read, it first reads that body to its end
    /// (bounded, discarded; `B` is the request body type), so an HTTP/1.1 client still sending
    /// it gets the answer rather than a reset connection. A body that stops arriving for about
    /// a second is given up: the refusal is answered with `Connection: close`. That wait uses
    /// tokio's timer, so poll this future on a tokio runtime with its time driver enabled (as
    /// `#[tokio::main]` and every server runtime have).
    #[derive(Debug)]
    pub struct DeliveryFuture<F, B> {
        #[pin]
        inner: CheckFuture<F, B>,
        span: Span,
        started: Instant,
        info: Option<DecompressionInfo>,
        in_flight: Option<InFlight>,
    }
}

impl<F, B> DeliveryFuture<F, B> {
    pub(crate) fn new(
        inner: ResponseFuture<F>,
        drain: Drain<B>,
        span: Span,
        started: Instant,
        info: Option<DecompressionInfo>,
    ) -> Self {
        Self {
            inner: CheckFuture::new(inner, drain),
            span,
            started,
            info,
            in_flight: Some(InFlight::start(Webhook::Batch)),
        }
    }
}

impl<F, B, ResBody, E> Future for DeliveryFuture<F, B>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        finish(
            this.span,
            Webhook::Batch,
            *this.started,
            this.info.as_ref(),
            &result,
        );
        this.in_flight.take();
        Poll::Ready(result)
    }
}

/// Gives the request a [`BatchObserver`] that records the accepted batch on the delivery's span:
/// this crate declares that span's fields, so it alone writes them, whichever reader (the
/// extractor or `event::read`) parses the body.
pub(crate) fn observe_batch<B>(request: &mut Request<B>, span: &Span) {
    if span.is_disabled() {
        return;
    }
    let span = span.clone();
    request
        .extensions_mut()
        .insert(BatchObserver::new(move |batch| {
            span.record("sync_id", batch.sync_id.as_str());
            span.record("sync_name", batch.sync_name);
            span.record("record_count", batch.record_count);
        }));
}

/// Records a delivery's outcome, status, latency and body sizes on its span, logs the one event
/// that closes it (`info` for an accepted or ignored delivery, `warn` otherwise), and emits the
/// same outcome as [`metrics`](crate::metrics). Shared by both composed layers, so their log
/// lines and metrics read alike.
pub(crate) fn finish<B, E>(
    span: &Span,
    webhook: Webhook,
    started: Instant,
    info: Option<&DecompressionInfo>,
    result: &Result<Response<B>, E>,
) {
    let _entered = span.enter();
    let stats = info.map(DecompressionInfo::stats);
    if let (Some(info), Some(stats)) = (info, stats) {
        span.record("content_coding", info.coding());
        span.record("compressed_bytes", stats.compressed_bytes());
        span.record("decompressed_bytes", stats.decoded_bytes());
    }
    let elapsed = started.elapsed();
    span.record("latency_ms", rounded_ms(elapsed));
    // The fields go on the span only: the event prints the span's fields already, so giving it
    // the same ones would print each twice.
    let outcome = match result {
        Ok(response) => {
            let outcome = Outcome::of(response);
            span.record("status", response.status().as_u16());
            span.record("outcome", outcome.log_name());
            if response.status().is_success() {
                tracing::info!("webhook delivery accepted");
            } else {
                tracing::warn!("webhook delivery rejected");
            }
            outcome
        }
        Err(_) => {
            span.record("outcome", "service_error");
            tracing::warn!("the webhook handler failed without a response");
            Outcome::HandlerError(None)
        }
    };
    outcome.emit(webhook, stats, elapsed);
}

/// Milliseconds to two decimals (10 µs): finer digits are noise in a log line, and a raw
/// `f64` prints as `0.5357069999999999`.
fn rounded_ms(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_logged_to_two_decimals() {
        let logged = |nanos| format!("{:?}", rounded_ms(Duration::from_nanos(nanos)));
        assert_eq!(logged(535_707), "0.54");
        assert_eq!(logged(1_234_567_890), "1234.57");
        assert_eq!(logged(4_999), "0.0");
    }
}

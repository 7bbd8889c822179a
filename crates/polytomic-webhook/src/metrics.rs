//! Delivery metrics, emitted through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The layer emits these whether or not anything collects them: until the application installs
//! a recorder, each emission costs a check of one global and nothing else. Install one (for
//! Prometheus, `prometheus_recorder` with the `prometheus` feature) and they appear:
//!
//! | name | type | labels |
//! |---|---|---|
//! | [`DELIVERIES_TOTAL`] | counter | `webhook`, `outcome`, `code` |
//! | [`RECORDS_TOTAL`] | counter | `result` |
//! | [`SINK_RECORDS_TOTAL`] | counter | `result` |
//! | [`BODY_BYTES_TOTAL`] | counter | `webhook`, `stage` |
//! | [`DELIVERY_DURATION_SECONDS`] | histogram | `webhook`, `outcome` |
//! | [`IN_FLIGHT`] | gauge | `webhook` |
//! | [`BUILD_INFO`] | gauge, always 1 | `version` |
//!
//! `webhook` is `batch` for `sync.records` deliveries ([`PolytomicWebhookLayer`]) and `events`
//! for the organisation Events webhook ([`PolytomicOrgEventsLayer`]). [`describe`] (which
//! `install_prometheus_recorder` calls) also registers every series above, at zero
//! ([`BUILD_INFO`] at 1), each `outcome` with the codes an alert is likely to name
//! (`invalid_token`, `invalid_signature`, `overloaded`), so a scrape before the first delivery
//! already lists the series an alert reads.
//!
//! [`PolytomicWebhookLayer`]: crate::PolytomicWebhookLayer
//! [`PolytomicOrgEventsLayer`]: crate::PolytomicOrgEventsLayer
//!
//! `outcome` is one of `accepted`, `refused`, `ignored`, `handler_error` or `panicked`; `code`
//! is the answer's problem code, or `none`. An Events delivery that [`DedupLayer`](crate::dedup::DedupLayer) answers as a
//! duplicate counts as `ignored` (code `none`): acknowledged without reaching the handler. Every label value is one of a fixed set chosen by
//! the program, never text from a request, so the number of series stays small.

use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use http::Response;
use polytomic_webhook_core::ProblemCode;
use polytomic_webhook_core::body::BodyStats;
use polytomic_webhook_event::rejection::IgnoredEvent;
use polytomic_webhook_event::{Ack, Stored};

use crate::dedup::DuplicateEvent;

/// The handle that renders a Prometheus recorder's text (re-exported from
/// `metrics-exporter-prometheus`).
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub use metrics_exporter_prometheus::PrometheusHandle;

/// Deliveries answered, by `outcome` and problem `code` (counter).
pub const DELIVERIES_TOTAL: &str = "polytomic_webhook_deliveries_total";
/// Records in the batches acknowledged, by `result` (counter): answers that carry an [`Ack`]
/// extension, as `Ack` and the answer of `polytomic-webhook-store` do.
pub const RECORDS_TOTAL: &str = "polytomic_webhook_records_total";
/// What a sink did with the records of the batches it kept, by `result`: `stored`,
/// `unchanged` or `superseded` (counter), from the [`Stored`] counts the answer carries (the
/// answer of `polytomic-webhook-store` does).
pub const SINK_RECORDS_TOTAL: &str = "polytomic_webhook_sink_records_total";
/// Request body bytes, by `stage`: `compressed` as received, `decompressed` as decoded
/// (counter).
pub const BODY_BYTES_TOTAL: &str = "polytomic_webhook_body_bytes_total";
/// Time from a delivery's arrival to its answer, by `outcome` (histogram, seconds).
pub const DELIVERY_DURATION_SECONDS: &str = "polytomic_webhook_delivery_duration_seconds";
/// Deliveries being handled right now, by `webhook` (gauge).
pub const IN_FLIGHT: &str = "polytomic_webhook_in_flight";
/// Always 1, with the crate's `version` as a label (gauge): which build a receiver runs.
pub const BUILD_INFO: &str = "polytomic_webhook_build_info";

/// Which webhook a delivery came through: the `webhook` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Webhook {
    /// `sync.records` batches, through `PolytomicWebhookLayer`.
    Batch,
    /// The organisation Events webhook, through `PolytomicOrgEventsLayer`.
    Events,
}

impl Webhook {
    const ALL: [Self; 2] = [Self::Batch, Self::Events];

    fn label(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Events => "events",
        }
    }
}

/// Every `outcome` label value.
const OUTCOMES: [&str; 5] = [
    "accepted",
    "refused",
    "ignored",
    "handler_error",
    "panicked",
];

/// The problem `code` of the answer to a handler that panicked (see [`handler_panicked`]).
///
/// [`handler_panicked`]: crate::handler_panicked
pub const HANDLER_PANICKED: &str = "handler_panicked";

/// The bucket bounds, in seconds, that `prometheus_recorder` (feature `prometheus`) gives
/// [`DELIVERY_DURATION_SECONDS`]: a batch of a hundred records takes about a millisecond, a
/// bomb refused at its limit a few tens, and the body deadline is 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers the metrics' descriptions and units with the installed recorder, which shows
/// them (Prometheus as `# HELP` lines), and every series of the [module docs](self) at zero
/// (with [`BUILD_INFO`] at 1), so the first scrape lists them. Call it once, after installing
/// the recorder.
///
/// ```
/// use polytomic_webhook::metrics::{describe, prometheus_recorder};
/// use polytomic_webhook::testing::prometheus_value;
///
/// let recorder = prometheus_recorder();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, describe);
/// let text = handle.render();
/// let idle = r#"polytomic_webhook_in_flight{webhook="events"}"#;
/// assert_eq!(prometheus_value(&text, idle), Some(0.0));
/// ```
pub fn describe() {
    describe_descriptions();
    register_at_zero();
}

/// The `# HELP` lines.
fn describe_descriptions() {
    describe_counter!(
        DELIVERIES_TOTAL,
        Unit::Count,
        "Webhook deliveries answered, by outcome and problem code."
    );
    describe_counter!(
        RECORDS_TOTAL,
        Unit::Count,
        "Records in the webhook batches answered, by result."
    );
    describe_counter!(
        SINK_RECORDS_TOTAL,
        Unit::Count,
        "Records of acknowledged webhook batches a sink stored, or skipped as unchanged or superseded."
    );
    describe_counter!(
        BODY_BYTES_TOTAL,
        Unit::Bytes,
        "Webhook request body bytes, as received (compressed) and as decoded (decompressed)."
    );
    describe_histogram!(
        DELIVERY_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a webhook delivery's arrival to its answer, by outcome."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Webhook deliveries being handled now."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label is the polytomic-webhook crate's."
    );
}

/// Every series at zero: a counter, gauge or histogram is listed once registered, so alerts on
/// an idle receiver have data rather than none.
fn register_at_zero() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for webhook in Webhook::ALL {
        let label = webhook.label();
        let refusal = match webhook {
            Webhook::Batch => "invalid_token",
            Webhook::Events => "invalid_signature",
        };
        for (outcome, code) in [
            ("accepted", "none"),
            ("ignored", "none"),
            ("refused", refusal),
            ("refused", crate::limit::OVERLOADED),
            ("handler_error", "none"),
            ("panicked", HANDLER_PANICKED),
        ] {
            counter!(DELIVERIES_TOTAL, "webhook" => label, "outcome" => outcome, "code" => code)
                .absolute(0);
        }
        for outcome in OUTCOMES {
            // Registering is enough: the histogram is rendered with empty buckets.
            let _ = histogram!(DELIVERY_DURATION_SECONDS, "webhook" => label, "outcome" => outcome);
        }
        for stage in ["compressed", "decompressed"] {
            counter!(BODY_BYTES_TOTAL, "webhook" => label, "stage" => stage).absolute(0);
        }
        gauge!(IN_FLIGHT, "webhook" => label).increment(0.0);
    }
    counter!(RECORDS_TOTAL, "result" => "accepted").absolute(0);
    for result in ["stored", "unchanged", "superseded"] {
        counter!(SINK_RECORDS_TOTAL, "result" => result).absolute(0);
    }
}

/// A Prometheus recorder with [`DURATION_BUCKETS`] for the duration histogram (without them
/// the exporter would render a summary, which cannot be aggregated across instances), and no
/// HTTP listener of its own: render [`PrometheusHandle::render`] on a route of your server.
///
/// ```
/// use polytomic_webhook::metrics::{DELIVERY_DURATION_SECONDS, prometheus_recorder};
///
/// let recorder = prometheus_recorder();
/// let handle = recorder.handle();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::histogram!(DELIVERY_DURATION_SECONDS, "outcome" => "accepted").record(0.002);
/// });
/// let text = handle.render();
/// assert!(text.contains(r#"polytomic_webhook_delivery_duration_seconds_bucket{outcome="accepted",le="0.0025"} 1"#));
/// ```
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
#[must_use]
pub fn prometheus_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    // Only fails for an empty list of buckets.
    let builder = match builder.set_buckets_for_metric(
        metrics_exporter_prometheus::Matcher::Full(DELIVERY_DURATION_SECONDS.to_owned()),
        &DURATION_BUCKETS,
    ) {
        Ok(builder) => builder,
        Err(_) => metrics_exporter_prometheus::PrometheusBuilder::new(),
    };
    builder.build_recorder()
}

/// Installs [`prometheus_recorder`] as the process's recorder and [`describe`]s the metrics;
/// the handle renders the text for a `/metrics` route (see [`prometheus_answer`]).
///
/// # Errors
///
/// When a recorder is installed already.
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub fn install_prometheus_recorder() -> Result<
    PrometheusHandle,
    ::metrics::SetRecorderError<metrics_exporter_prometheus::PrometheusRecorder>,
> {
    let recorder = prometheus_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder)?;
    describe();
    Ok(handle)
}

/// A `/metrics` answer: the Prometheus text exposition of everything `handle`'s recorder has.
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub fn prometheus_answer(handle: &PrometheusHandle) -> axum_core::response::Response {
    use axum_core::response::IntoResponse;
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// How one delivery ended, read once from its answer: the span's `outcome` field and every
/// metric come from this one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer from the handler; `records` when it carries an [`Ack`], `stored` when it
    /// carries a sink's [`Stored`] counts.
    Accepted {
        records: Option<usize>,
        stored: Option<Stored>,
    },
    /// An event type the extractor acknowledged without the handler.
    Ignored,
    /// An Events delivery whose id was handled already, acknowledged without the handler.
    Duplicate,
    /// Refused with a problem: the sender's fault, or the server at its bound (`overloaded`).
    Refused(&'static str),
    /// An error answer from the handler (a 5xx problem such as `batch_not_stored`, or any
    /// error status without a problem), or a service error without an answer.
    HandlerError(Option<&'static str>),
    /// The handler panicked and [`crate::handler_panicked`] answered.
    Panicked,
}

impl Outcome {
    pub(crate) fn of<B>(response: &Response<B>) -> Self {
        let extensions = response.extensions();
        let status = response.status();
        if let Some(code) = extensions.get::<ProblemCode>().map(ProblemCode::as_str) {
            if code == HANDLER_PANICKED {
                Self::Panicked
            } else if status.is_server_error() && code != crate::limit::OVERLOADED {
                Self::HandlerError(Some(code))
            } else {
                Self::Refused(code)
            }
        } else if extensions.get::<IgnoredEvent>().is_some() {
            Self::Ignored
        } else if extensions.get::<DuplicateEvent>().is_some() {
            Self::Duplicate
        } else if status.is_success() {
            Self::Accepted {
                records: extensions.get::<Ack>().map(Ack::accepted),
                stored: extensions.get::<Stored>().copied(),
            }
        } else {
            Self::HandlerError(None)
        }
    }

    /// The span's `outcome` field: the problem code where there is one, as the logs have
    /// always shown it.
    pub(crate) fn log_name(self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Ignored => "ignored_event",
            Self::Duplicate => "duplicate",
            Self::Refused(code) | Self::HandlerError(Some(code)) => code,
            Self::HandlerError(None) => "handler_error",
            Self::Panicked => HANDLER_PANICKED,
        }
    }

    /// The `outcome` label.
    fn label(self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Ignored | Self::Duplicate => "ignored",
            Self::Refused(_) => "refused",
            Self::HandlerError(_) => "handler_error",
            Self::Panicked => "panicked",
        }
    }

    /// The `code` label.
    fn code(self) -> &'static str {
        match self {
            Self::Refused(code) | Self::HandlerError(Some(code)) => code,
            Self::Panicked => HANDLER_PANICKED,
            Self::Accepted { .. } | Self::Ignored | Self::Duplicate | Self::HandlerError(None) => {
                "none"
            }
        }
    }

    /// Emits the delivery's metrics: its outcome, duration, records and body bytes.
    pub(crate) fn emit(self, webhook: Webhook, stats: Option<&BodyStats>, elapsed: Duration) {
        let outcome = self.label();
        let webhook = webhook.label();
        counter!(DELIVERIES_TOTAL, "webhook" => webhook, "outcome" => outcome, "code" => self.code())
            .increment(1);
        histogram!(DELIVERY_DURATION_SECONDS, "webhook" => webhook, "outcome" => outcome)
            .record(elapsed.as_secs_f64());
        let count = |records: usize| u64::try_from(records).unwrap_or(u64::MAX);
        if let Self::Accepted { records, stored } = self {
            if let Some(records) = records {
                counter!(RECORDS_TOTAL, "result" => "accepted").increment(count(records));
            }
            if let Some(stored) = stored {
                for (result, records) in [
                    ("stored", stored.stored),
                    ("unchanged", stored.unchanged),
                    ("superseded", stored.superseded),
                ] {
                    counter!(SINK_RECORDS_TOTAL, "result" => result).increment(count(records));
                }
            }
        }
        if let Some(stats) = stats {
            counter!(BODY_BYTES_TOTAL, "webhook" => webhook, "stage" => "compressed")
                .increment(stats.compressed_bytes());
            counter!(BODY_BYTES_TOTAL, "webhook" => webhook, "stage" => "decompressed")
                .increment(stats.decoded_bytes());
        }
    }
}

/// One delivery counted in [`IN_FLIGHT`] from its creation until it is dropped, so a delivery
/// whose future is cancelled (the client went away) is uncounted too.
#[derive(Debug)]
pub(crate) struct InFlight(Webhook);

impl InFlight {
    pub(crate) fn start(webhook: Webhook) -> Self {
        gauge!(IN_FLIGHT, "webhook" => webhook.label()).increment(1.0);
        Self(webhook)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT, "webhook" => self.0.label()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use polytomic_webhook_core::Problem;

    use super::*;

    fn problem(status: StatusCode, code: &'static str) -> Response<bytes::Bytes> {
        Problem::new(status, code, "x").to_response()
    }

    #[test]
    fn answers_are_classified_by_status_and_problem_code() {
        let cases = [
            (
                problem(StatusCode::UNAUTHORIZED, "invalid_token"),
                "refused",
                "invalid_token",
            ),
            (
                problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                "refused",
                "overloaded",
            ),
            (
                problem(StatusCode::SERVICE_UNAVAILABLE, "batch_not_stored"),
                "handler_error",
                "batch_not_stored",
            ),
            (
                problem(StatusCode::INTERNAL_SERVER_ERROR, HANDLER_PANICKED),
                "panicked",
                HANDLER_PANICKED,
            ),
        ];
        for (response, outcome, code) in cases {
            let classified = Outcome::of(&response);
            assert_eq!((classified.label(), classified.code()), (outcome, code));
        }
        let mut teapot = Response::new(());
        *teapot.status_mut() = StatusCode::IM_A_TEAPOT;
        assert_eq!(Outcome::of(&teapot), Outcome::HandlerError(None));
        let plain_ok = Response::new(());
        assert_eq!(
            Outcome::of(&plain_ok),
            Outcome::Accepted {
                records: None,
                stored: None
            }
        );
    }
}

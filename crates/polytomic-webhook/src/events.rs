//! [`PolytomicOrgEventsLayer`]: the composed stack for Polytomic's organisation Events webhook.
//!
//! The Events webhook authenticates a delivery by an HMAC of its body (`Polytomic-Signature`),
//! not by a bearer token, so the body has to be read before the sender is known. The layer
//! keeps what can be decided from the head first, and reads nothing it does not have to:
//!
//! 1. opens the same `polytomic_webhook.delivery` span as [`PolytomicWebhookLayer`], with
//!    `signed_bytes`, `event_id` and `event_type` besides, and logs one line when answered;
//! 2. optionally refuses senders outside an address allowlist (403);
//! 3. refuses a request without a `Polytomic-Signature` header (401 `missing_signature`) or
//!    with one that does not decode (401 `invalid_signature`), and a request whose
//!    `Content-Encoding` or `Content-Length` the route's decompression limits refuse (415,
//!    413), all before reading any body byte (the unread body is drained, as the other layer
//!    does). The signature and the codings are decoded here, once;
//! 4. buffers the body as received, within `max_compressed_bytes` (1 MiB by default, see
//!    [`DEFAULT_EVENT_BYTES`]) and the body deadline;
//! 5. verifies the HMAC over those bytes. If no secret matches and the request declares a
//!    `Content-Encoding`, it streams the decoder's output into the HMAC, keeping none of it,
//!    and stops at the decoded-size limit. Which one matched is recorded on the span as
//!    `signed_bytes = "received"` or `"decoded"`; neither gives 401 `invalid_signature`;
//! 6. only then keeps the decoded body, drawing it from the server's decoded-bytes budget when
//!    one is set ([`PolytomicOrgEventsLayer::decoded_budget`]; 503 `overloaded` when it is
//!    used up), and parses it once, with the extractor's checks (415, 413, 400, 422);
//! 7. refuses an event whose signed `created_at` is older than `max_event_age` (422
//!    [`STALE_EVENT`]) or further ahead than `max_event_skew` (422 [`EVENT_IN_FUTURE`]);
//! 8. hands the inner service the decoded body (an `http_body_util::Full<Bytes>`) with the
//!    parse as a [`VerifiedOrgEvent`] extension, which the dedup layer and the
//!    [`PolytomicOrgEvent`](polytomic_webhook_event::org::PolytomicOrgEvent) extractor take
//!    instead of parsing again, and the [`EventConfig`] attached.
//!
//! Nothing in the body is parsed before a signature has matched: a sender without a secret can
//! make the server hold at most `max_compressed_bytes` and inflate them up to
//! `max_decompressed_bytes` once, but never keep what it inflates nor run the JSON parser. A
//! decoding failure while looking for a match over the decoded bytes answers
//! `invalid_signature`, so such a sender learns nothing about the body either.
//!
//! # Why a stale event is 422, not 401
//!
//! The signature covers `created_at`, so an event refused for its age is authentic: the sender
//! holds the secret and nothing about the credentials is wrong, which a 401 would suggest.
//! What is wrong is the signed content itself, and no retry of the same bytes changes it.
//!
//! [`PolytomicWebhookLayer`]: crate::PolytomicWebhookLayer

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum_core::extract::DefaultBodyLimit;
use bytes::{Buf, Bytes, BytesMut};
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use polytomic_webhook_auth::SigningSecrets;
use polytomic_webhook_auth::allowlist::{AllowlistConfig, SourceIpAllowlistLayer};
use polytomic_webhook_auth::signature::{Signature, SignatureError, signature_header};
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::{BodyLimit, BodyStatsWriter, BoxError, TooLargeLimit};
use polytomic_webhook_core::check::Check as _;
use polytomic_webhook_core::response::ResponseBody;
use polytomic_webhook_decompression::{
    Coding, Codings, DecompressionBody, DecompressionConfig, DecompressionInfo,
};
use polytomic_webhook_event::org::VerifiedOrgEvent;
use polytomic_webhook_event::{EventConfig, EventRejection};
use serde::{Deserialize, Deserializer};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument as _, Span};

use crate::config::{ConfigError, DEFAULT_BODY_TIMEOUT, optional_secs};
use crate::dedup::DEFAULT_EVENT_ID_TTL;
use crate::drain::Drain;
use crate::future::{close_connection, finish};
use crate::layer::{Refused, answer};
use crate::limit::{DecodedBudgetLayer, PER_DELIVERY_RESERVE, Share, overloaded};
use crate::metrics::{InFlight, Webhook};
use crate::service::{delivery_span, take_ready};
use crate::timeout::TimeoutBody;

/// The default received and decoded size limits of the Events route: 1 MiB each.
///
/// Polytomic's organisation events are an envelope of five members around a sync run's status
/// and record counts: a few hundred bytes (the example in [`org`](polytomic_webhook_event::org)
/// is 262). 1 MiB leaves room for three orders of magnitude more (a long error message, say)
/// while an unsigned request can make the server hold and inflate only that much.
pub const DEFAULT_EVENT_BYTES: u64 = 1024 * 1024;

/// The default [`PolytomicOrgEventsConfig::max_event_skew`]: 5 minutes, for a sender's clock
/// that runs ahead of the receiver's.
pub const DEFAULT_EVENT_SKEW: Duration = Duration::from_secs(5 * 60);

/// The problem `code` of a signed event older than `max_event_age` (422).
pub const STALE_EVENT: &str = "stale_event";

/// The problem `code` of a signed event dated further ahead than `max_event_skew` (422).
pub const EVENT_IN_FUTURE: &str = "event_in_future";

/// The body the inner service receives: the whole decoded body, already verified.
pub type EventBody = Full<Bytes>;

/// The response future of [`PolytomicOrgEvents`]: it reads the body before it can call the
/// inner service, so it is boxed.
pub type EventsFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// Everything the [`PolytomicOrgEventsLayer`] needs to know; every field but `secrets` has a
/// safe default. Unlike [`PolytomicWebhookConfig`](crate::PolytomicWebhookConfig)'s, the size
/// limits default to [`DEFAULT_EVENT_BYTES`] (1 MiB received, 1 MiB decoded, and the
/// extractor's `max_body_bytes`), also when a file sets other decompression fields.
///
/// ```
/// use std::time::Duration;
///
/// use polytomic_webhook::{PolytomicOrgEventsConfig, PolytomicOrgEventsLayer};
///
/// let config: PolytomicOrgEventsConfig = serde_json::from_str(r#"{
///     "secrets": ["current-events-secret", "previous-events-secret"],
///     "decompression": { "max_compressed_bytes": 262144 },
///     "max_event_age_secs": 86400
/// }"#)?;
/// assert_eq!(config.decompression.max_compressed_bytes, 256 << 10);
/// assert_eq!(config.decompression.max_decompressed_bytes, 1 << 20);
/// assert_eq!(config.max_event_age, Some(Duration::from_secs(86400)));
/// assert_eq!(config.max_event_skew, Some(Duration::from_secs(300)));
/// let layer = PolytomicOrgEventsLayer::new(config)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PolytomicOrgEventsConfig {
    /// The secrets a delivery's HMAC may be keyed with: one, or several while rotating.
    /// Required. In a file: one string or a list.
    pub secrets: Option<SigningSecrets>,
    /// How long the whole body may take to arrive; `None` for no deadline. Default 30 seconds.
    /// In a file: `body_timeout_secs`.
    #[serde(rename = "body_timeout_secs", deserialize_with = "optional_secs")]
    pub body_timeout: Option<Duration>,
    /// Only accept deliveries from these address blocks. Default: no allowlist.
    pub allowlist: Option<AllowlistConfig>,
    /// Decompression limits: `max_compressed_bytes` bounds the body buffered for the signature
    /// check, `max_decompressed_bytes` what is inflated to check it and what is kept. Both
    /// default to [`DEFAULT_EVENT_BYTES`]; the other fields to the decompression defaults.
    #[serde(deserialize_with = "event_decompression")]
    pub decompression: DecompressionConfig,
    /// The extractor's settings; `max_body_bytes` defaults to [`DEFAULT_EVENT_BYTES`] (an
    /// `event` object in a file starts from the extractor's own defaults; the decoded-size
    /// limit bounds the body first either way).
    pub event: EventConfig,
    /// Most age of an event's signed `created_at`; an older one is refused with 422
    /// [`STALE_EVENT`]. Default: the dedup layer's id TTL ([`DEFAULT_EVENT_ID_TTL`], seven
    /// days), so that every event young enough to be accepted is still remembered by the id
    /// store; keep it no longer than the TTL you give [`DedupLayer`](crate::dedup::DedupLayer).
    /// `None` for no limit. In a file: `max_event_age_secs`.
    #[serde(rename = "max_event_age_secs", deserialize_with = "optional_secs")]
    pub max_event_age: Option<Duration>,
    /// How far ahead of the receiver's clock `created_at` may be; further is refused with 422
    /// [`EVENT_IN_FUTURE`]. Default [`DEFAULT_EVENT_SKEW`] (5 minutes); `None` for no limit. In
    /// a file: `max_event_skew_secs`.
    #[serde(rename = "max_event_skew_secs", deserialize_with = "optional_secs")]
    pub max_event_skew: Option<Duration>,
}

impl Default for PolytomicOrgEventsConfig {
    fn default() -> Self {
        let mut decompression = DecompressionConfig::default();
        decompression.max_compressed_bytes = DEFAULT_EVENT_BYTES;
        decompression.max_decompressed_bytes = DEFAULT_EVENT_BYTES;
        Self {
            secrets: None,
            body_timeout: Some(DEFAULT_BODY_TIMEOUT),
            allowlist: None,
            decompression,
            event: EventConfig::default()
                .max_body_bytes(usize::try_from(DEFAULT_EVENT_BYTES).unwrap_or(usize::MAX)),
            max_event_age: Some(DEFAULT_EVENT_ID_TTL),
            max_event_skew: Some(DEFAULT_EVENT_SKEW),
        }
    }
}

/// The decompression fields a file sets, over the Events route's own size defaults.
fn event_decompression<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DecompressionConfig, D::Error> {
    let mut fields = serde_json::Map::deserialize(deserializer)?;
    for name in ["max_compressed_bytes", "max_decompressed_bytes"] {
        fields.entry(name).or_insert(DEFAULT_EVENT_BYTES.into());
    }
    DecompressionConfig::deserialize(serde_json::Value::Object(fields))
        .map_err(serde::de::Error::custom)
}

impl PolytomicOrgEventsConfig {
    /// Sets the accepted signing secrets.
    #[must_use]
    pub fn secrets(mut self, secrets: SigningSecrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Sets the most bytes a body may have as received (the buffer an unsigned request can
    /// make the server hold).
    #[must_use]
    pub fn max_received_bytes(mut self, bytes: u64) -> Self {
        self.decompression.max_compressed_bytes = bytes;
        self
    }

    /// Sets the most bytes a body may have once decoded: what an unsigned request can make the
    /// server inflate, and what a signed one may keep (the extractor's limit too).
    #[must_use]
    pub fn max_decoded_bytes(mut self, bytes: u64) -> Self {
        self.decompression.max_decompressed_bytes = bytes;
        self.event = self
            .event
            .max_body_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
        self
    }

    /// Sets the most age of an event's `created_at`; `None` for no limit.
    #[must_use]
    pub fn max_event_age(mut self, age: Option<Duration>) -> Self {
        self.max_event_age = age;
        self
    }

    /// Sets how far ahead `created_at` may be; `None` for no limit.
    #[must_use]
    pub fn max_event_skew(mut self, skew: Option<Duration>) -> Self {
        self.max_event_skew = skew;
        self
    }

    crate::config::shared_setters!();
}

/// Receives Polytomic's organisation Events deliveries in front of any tower service; see the
/// [module docs](self).
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook::auth::SigningSecrets;
/// use polytomic_webhook::event::org::PolytomicOrgEvent;
/// use polytomic_webhook::{PolytomicOrgEventsConfig, PolytomicOrgEventsLayer};
///
/// async fn receive(event: PolytomicOrgEvent) -> &'static str {
///     let _ = (event.id(), event.kind());
///     "ok"
/// }
///
/// let config = PolytomicOrgEventsConfig::default()
///     .secrets(SigningSecrets::new("the-events-secret")?);
/// let app: Router = Router::new()
///     .route("/webhooks/polytomic/events", post(receive))
///     .layer(PolytomicOrgEventsLayer::new(config)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
#[derive(Clone)]
pub struct PolytomicOrgEventsLayer {
    checks: Arc<EventChecks>,
    budget: Option<DecodedBudgetLayer>,
}

struct EventChecks {
    secrets: SigningSecrets,
    allowlist: Option<SourceIpAllowlistLayer>,
    body_timeout: Option<Duration>,
    decompression: DecompressionConfig,
    event: EventConfig,
    max_event_age: Option<Duration>,
    max_event_skew: Option<Duration>,
}

impl PolytomicOrgEventsLayer {
    /// Builds the stack from its configuration; fails if no secret is configured.
    pub fn new(config: PolytomicOrgEventsConfig) -> Result<Self, ConfigError> {
        let secrets = config.secrets.ok_or(ConfigError::NoSigningSecret)?;
        Ok(Self {
            checks: Arc::new(EventChecks {
                secrets,
                allowlist: config.allowlist.map(SourceIpAllowlistLayer::from_config),
                body_timeout: config.body_timeout,
                decompression: config.decompression,
                event: config.event,
                max_event_age: config.max_event_age,
                max_event_skew: config.max_event_skew,
            }),
            budget: None,
        })
    }

    /// Draws what each event keeps (its decoded bytes, plus [`PER_DELIVERY_RESERVE`]) from
    /// `budget` (the batch route's, if you pass that one, or one of the Events route's own),
    /// from the moment its signature matched
    /// until it is answered. An event that does not fit is answered 503 `overloaded`, with
    /// `Retry-After`, without calling the inner service. A request whose signature did not
    /// match draws nothing, so senders without the secret cannot use up the budget.
    ///
    /// ```
    /// use polytomic_webhook::limit::{DecodedBudgetLayer, ServerLimits};
    /// use polytomic_webhook::prelude::*;
    ///
    /// let budget = DecodedBudgetLayer::new(&ServerLimits::default());
    /// let config = PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new("s3cret")?);
    /// let layer = PolytomicOrgEventsLayer::new(config)?.decoded_budget(&budget);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decoded_budget(mut self, budget: &DecodedBudgetLayer) -> Self {
        self.budget = Some(budget.clone());
        self
    }
}

impl<S> Layer<S> for PolytomicOrgEventsLayer {
    type Service = PolytomicOrgEvents<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolytomicOrgEvents {
            inner,
            checks: Arc::clone(&self.checks),
            budget: self.budget.clone(),
        }
    }
}

impl fmt::Debug for PolytomicOrgEventsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.checks.fmt(f)
    }
}

impl fmt::Debug for EventChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SigningSecrets` prints only how many there are.
        f.debug_struct("PolytomicOrgEventsLayer")
            .field("secrets", &self.secrets)
            .field("allowlist", &self.allowlist)
            .field("body_timeout", &self.body_timeout)
            .field("decompression", &self.decompression)
            .field("event", &self.event)
            .field("max_event_age", &self.max_event_age)
            .field("max_event_skew", &self.max_event_skew)
            .finish()
    }
}

/// The middleware built by [`PolytomicOrgEventsLayer`].
#[derive(Clone)]
pub struct PolytomicOrgEvents<S> {
    inner: S,
    checks: Arc<EventChecks>,
    budget: Option<DecodedBudgetLayer>,
}

impl<S> PolytomicOrgEvents<S> {
    polytomic_webhook_core::inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for PolytomicOrgEvents<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolytomicOrgEvents")
            .field("inner", &self.inner)
            .field("checks", &self.checks)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PolytomicOrgEvents<S>
where
    S: Service<Request<EventBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = EventsFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let span = delivery_span(&request);
        let mut inner = take_ready(&mut self.inner);
        let checks = Arc::clone(&self.checks);
        let head = {
            let _entered = span.enter();
            checks.admit_head(request)
        };
        let task_span = span.clone();
        let in_flight = InFlight::start(Webhook::Events);
        // Held until the answer: the kept bytes live until the handler has answered.
        let share = self.budget.as_ref().map(DecodedBudgetLayer::share);
        Box::pin(
            async move {
                let (admitted, info) = match head {
                    Ok((parts, body, head)) => {
                        checks.admit_body(parts, body, head, share.as_ref()).await
                    }
                    Err(refused) => (Err(refused), None),
                };
                let result = match admitted {
                    Ok(request) => inner
                        .call(request)
                        .await
                        .map(|response| response.map(ResponseBody::inner)),
                    Err(refused) => {
                        let (problem, drain) = *refused;
                        let mut drain = pin!(drain);
                        poll_fn(|cx| drain.as_mut().poll_drain(cx)).await;
                        let mut result = Ok(problem.to_response().map(ResponseBody::rejected));
                        if drain.closes() {
                            close_connection(&mut result);
                        }
                        result
                    }
                };
                finish(&task_span, Webhook::Events, started, info.as_ref(), &result);
                drop(share);
                drop(in_flight);
                result
            }
            .instrument(span),
        )
    }
}

type Admitted<B> = Result<Request<EventBody>, Box<Refused<B>>>;

/// What the head told: decoded once, used by the body's checks.
struct Head {
    signature: Signature,
    codings: Codings,
    /// Whether a `Content-Encoding` was declared: only then is a match over the decoded bytes
    /// looked for.
    declared: bool,
    /// The declared length, for the receive buffer's size.
    length: Option<u64>,
}

impl EventChecks {
    /// The checks that need only the request head: allowlist, signature header, and the
    /// decompression limits' header checks. The body is not touched.
    #[allow(clippy::type_complexity)]
    fn admit_head<B>(
        &self,
        request: Request<B>,
    ) -> Result<(Parts, TimeoutBody<B>, Head), Box<Refused<B>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut request = request.map(|body| TimeoutBody::new(body, self.body_timeout));
        let budget = self.decompression.max_compressed_bytes;
        let refuse = |problem: Problem, request| Box::new((problem, Drain::new(request, budget)));
        if let Some(allowlist) = &self.allowlist {
            request = allowlist
                .as_check()
                .check(request)
                .map_err(|no| answer(no, budget))?;
        }
        let decoded = signature_header(request.headers())
            .and_then(|value| Signature::decode(value).ok_or(SignatureError::Malformed));
        let signature = match decoded {
            Ok(signature) => signature,
            Err(refusal) => return Err(refuse(refusal.to_problem(), request)),
        };
        let codings = match self.decompression.admit(request.headers()) {
            Ok(codings) => codings,
            Err(refusal) => return Err(refuse(refusal.to_problem(), request)),
        };
        let head = Head {
            signature,
            codings,
            declared: request.headers().contains_key(CONTENT_ENCODING),
            length: request.body().size_hint().exact(),
        };
        let (parts, body) = request.into_parts();
        Ok((parts, body, head))
    }

    /// Reads the body, verifies the signature over it (as received, then as decoded), keeps
    /// and parses the decoded body, and builds the request for the inner service.
    async fn admit_body<B>(
        &self,
        mut parts: Parts,
        body: TimeoutBody<B>,
        head: Head,
        share: Option<&Share>,
    ) -> (Admitted<B>, Option<DecompressionInfo>)
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let refuse = |problem: Problem| Box::new((problem, Drain::none()));
        let limit = self.decompression.max_compressed_bytes;
        let received = match read_to_end(body, limit, head.length).await {
            Ok(received) => received,
            Err(problem) => return (Err(refuse(problem)), None),
        };
        let span = Span::current();
        if self.secrets.verify(&head.signature, &received) {
            span.record("signed_bytes", "received");
        } else if head.declared && self.decoded_matches(&head, &received).await {
            span.record("signed_bytes", "decoded");
        } else {
            return (Err(refuse(SignatureError::Mismatch.to_problem())), None);
        }
        let (decoded, info) = match self.keep(&head.codings, received, share).await {
            Ok(kept) => kept,
            Err((problem, info)) => return (Err(refuse(problem)), Some(info)),
        };
        let verified = match VerifiedOrgEvent::parse(&parts.headers, &decoded, &self.event) {
            Ok(verified) => verified,
            Err(rejection) => return (Err(refuse(rejection.to_problem())), Some(info)),
        };
        if let Some(problem) = self.outside_window(verified.event().created_at(), Utc::now()) {
            return (Err(refuse(problem)), Some(info));
        }
        // The body is decoded now: its coding and length no longer describe it.
        parts.headers.remove(CONTENT_ENCODING);
        parts.headers.remove(CONTENT_LENGTH);
        parts.extensions.insert(info.clone());
        parts.extensions.insert(info.stats().clone());
        parts.extensions.insert(self.event.clone());
        polytomic_webhook_event::__private::admit_org_event(&mut parts.extensions);
        parts.extensions.insert(verified);
        let mut request = Request::from_parts(parts, Full::new(decoded));
        // The limits bound the body already; axum's 2 MB default would otherwise answer a
        // raised limit with a less precise refusal.
        DefaultBodyLimit::disable().apply(&mut request);
        (Ok(request), Some(info))
    }

    /// Whether the signature is the HMAC of the decoded body, streaming the decoder's output
    /// into the HMAC and keeping none of it: memory stays the decoder's buffers, and the work
    /// stops at the decoded-size limit. Any decoding failure is no match.
    async fn decoded_matches(&self, head: &Head, received: &Bytes) -> bool {
        let mut verifier = self.secrets.verifier(head.signature);
        let body = DecompressionBody::new(
            Full::new(received.clone()),
            &head.codings,
            self.decompression,
        );
        let mut body = pin!(body);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        verifier.update(data);
                    }
                }
                Err(_) => return false,
            }
        }
        verifier.matches()
    }

    /// Decodes `received` (sniffing gzip when no coding is declared), within the limits and,
    /// when set, the server's budget, into one buffer: the bytes themselves when there is
    /// nothing to decode, else one allocation of the decoded size when gzip's trailer tells it
    /// (each decoder frame is copied in and dropped, so the body is never held twice).
    async fn keep(
        &self,
        codings: &Codings,
        received: Bytes,
        share: Option<&Share>,
    ) -> Result<(Bytes, DecompressionInfo), (Problem, DecompressionInfo)> {
        let limit = usize::try_from(self.decompression.max_decompressed_bytes).unwrap_or(0);
        let capacity = gzip_length(codings, &received).min(limit);
        let stats = BodyStatsWriter::new();
        let info = DecompressionInfo::new(*codings, stats.stats().clone());
        let body =
            DecompressionBody::with_stats(Full::new(received), codings, self.decompression, stats);
        let mut body = pin!(body);
        let draw = |bytes: usize| {
            share.is_none_or(|share| share.draw(u64::try_from(bytes).unwrap_or(u64::MAX)))
        };
        if !draw(usize::try_from(PER_DELIVERY_RESERVE).unwrap_or(usize::MAX)) {
            return Err((overloaded(), info));
        }
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                let rejection = EventRejection::from_body_error(error, Some(info.stats()));
                (rejection.to_problem(), info.clone())
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if !draw(data.len()) {
                return Err((overloaded(), info));
            }
            if let Some(joined) = &mut joined {
                joined.extend_from_slice(&data);
            } else if let Some(before) = first.take() {
                let mut buffer = BytesMut::with_capacity(capacity);
                buffer.extend_from_slice(&before);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            } else {
                first = Some(data);
            }
        }
        let decoded = joined.map_or_else(|| first.unwrap_or_default(), BytesMut::freeze);
        Ok((decoded, info))
    }

    /// The refusal of a signed `created_at` outside the freshness window as of `now`, if it is.
    fn outside_window(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Problem> {
        let beyond = |limit: Option<Duration>, by: TimeDelta| {
            limit.is_some_and(|limit| TimeDelta::from_std(limit).is_ok_and(|limit| by > limit))
        };
        if beyond(self.max_event_age, now.signed_duration_since(created_at)) {
            return Some(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                STALE_EVENT,
                "The event's signed created_at is older than this receiver accepts.",
            ));
        }
        if beyond(self.max_event_skew, created_at.signed_duration_since(now)) {
            return Some(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                EVENT_IN_FUTURE,
                "The event's signed created_at is further ahead than this receiver accepts.",
            ));
        }
        None
    }
}

/// The decoded length a gzip body's trailer states (ISIZE, the last four bytes), when the body
/// is gzip alone (declared or sniffed); 0 otherwise. Only a capacity: a wrong one costs a
/// regrowth, and the caller caps it at the decoded limit.
fn gzip_length(codings: &Codings, received: &[u8]) -> usize {
    let gzip = match codings.len() {
        0 => received.starts_with(&[0x1f, 0x8b]),
        1 => codings.iter().eq([Coding::Gzip]),
        _ => false,
    };
    match received.last_chunk::<4>() {
        Some(trailer) if gzip => usize::try_from(u32::from_le_bytes(*trailer)).unwrap_or(0),
        _ => 0,
    }
}

/// Reads a body as received into one buffer (sized from the declared length, so it is never
/// regrown), refusing it past `limit` bytes.
async fn read_to_end<B>(
    body: TimeoutBody<B>,
    limit: u64,
    length: Option<u64>,
) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || TooLargeLimit::Layer(BodyLimit::Compressed, limit).problem();
    let mut body = pin!(body);
    let capacity = length.filter(|length| *length <= limit).unwrap_or(0);
    let mut received = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| EventRejection::from_body_error(error, None).to_problem())?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len =
            u64::try_from(received.len().saturating_add(data.remaining())).unwrap_or(u64::MAX);
        if len > limit {
            return Err(too_large());
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            received.extend_from_slice(chunk);
            let advanced = chunk.len();
            data.advance(advanced);
        }
    }
    Ok(received.freeze())
}

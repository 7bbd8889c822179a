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
//!    `Content-Encoding` or `Content-Length` the decompression limits refuse (415, 413), all
//!    before reading any body byte (the unread body is drained, as the other layer does);
//! 4. buffers the body as received, within `max_compressed_bytes` and the body deadline;
//! 5. verifies the HMAC over those bytes. If no secret matches and the request declares a
//!    `Content-Encoding`, it inflates the body through the decompression layer, with all its
//!    limits, and verifies over the decoded bytes. Which one matched is recorded on the span as
//!    `signed_bytes = "received"` or `"decoded"`; neither gives 401 `invalid_signature`;
//! 6. hands the inner service the decoded body (an `http_body_util::Full<Bytes>`) with the
//!    [`EventConfig`] attached, for the
//!    [`PolytomicOrgEvent`](polytomic_webhook_event::org::PolytomicOrgEvent) extractor.
//!
//! Nothing in the body is parsed before a signature has matched: a sender without a secret can
//! make the server read at most `max_compressed_bytes`, and inflate them within the
//! decompression limits, but never run the JSON parser. A decoding failure while looking for a
//! match over the decoded bytes answers `invalid_signature`, so such a sender learns nothing
//! about the body either.
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
use http::header::CONTENT_ENCODING;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use polytomic_webhook_auth::SigningSecrets;
use polytomic_webhook_auth::allowlist::{AllowlistConfig, SourceIpAllowlistLayer};
use polytomic_webhook_auth::signature::{Signature, SignatureError, signature_header};
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::body::{BodyLimit, BodyStats, BoxError, TooLargeLimit};
use polytomic_webhook_core::check::Check as _;
use polytomic_webhook_core::response::ResponseBody;
use polytomic_webhook_decompression::{DecompressionConfig, DecompressionInfo, DecompressionLayer};
use polytomic_webhook_event::{EventConfig, EventRejection};
use serde::Deserialize;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument as _, Span};

use crate::config::{ConfigError, DEFAULT_BODY_TIMEOUT, optional_secs};
use crate::drain::Drain;
use crate::future::{close_connection, finish};
use crate::layer::{Refused, answer};
use crate::metrics::{InFlight, Webhook};
use crate::service::{delivery_span, take_ready};
use crate::timeout::TimeoutBody;

/// The body the inner service receives: the whole decoded body, already verified.
pub type EventBody = Full<Bytes>;

/// The response future of [`PolytomicOrgEvents`]: it reads the body before it can call the
/// inner service, so it is boxed.
pub type EventsFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// Everything the [`PolytomicOrgEventsLayer`] needs to know; every field but `secrets` has a
/// safe default, the same as [`PolytomicWebhookConfig`](crate::PolytomicWebhookConfig)'s.
///
/// ```
/// use polytomic_webhook::{PolytomicOrgEventsConfig, PolytomicOrgEventsLayer};
///
/// let config: PolytomicOrgEventsConfig = serde_json::from_str(r#"{
///     "secrets": ["current-events-secret", "previous-events-secret"],
///     "decompression": { "max_compressed_bytes": 1048576 }
/// }"#)?;
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
    /// Decompression limits; `max_compressed_bytes` also bounds the body buffered for the
    /// signature check.
    pub decompression: DecompressionConfig,
    /// The extractor's settings (its body-size limit, above all).
    pub event: EventConfig,
}

impl Default for PolytomicOrgEventsConfig {
    fn default() -> Self {
        Self {
            secrets: None,
            body_timeout: Some(DEFAULT_BODY_TIMEOUT),
            allowlist: None,
            decompression: DecompressionConfig::default(),
            event: EventConfig::default(),
        }
    }
}

impl PolytomicOrgEventsConfig {
    /// Sets the accepted signing secrets.
    #[must_use]
    pub fn secrets(mut self, secrets: SigningSecrets) -> Self {
        self.secrets = Some(secrets);
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
}

struct EventChecks {
    secrets: SigningSecrets,
    allowlist: Option<SourceIpAllowlistLayer>,
    body_timeout: Option<Duration>,
    decompression: DecompressionLayer,
    event: EventConfig,
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
                decompression: DecompressionLayer::from_config(config.decompression),
                event: config.event,
            }),
        })
    }
}

impl<S> Layer<S> for PolytomicOrgEventsLayer {
    type Service = PolytomicOrgEvents<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PolytomicOrgEvents {
            inner,
            checks: Arc::clone(&self.checks),
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
            .finish()
    }
}

/// The middleware built by [`PolytomicOrgEventsLayer`].
#[derive(Clone)]
pub struct PolytomicOrgEvents<S> {
    inner: S,
    checks: Arc<EventChecks>,
}

impl<S> PolytomicOrgEvents<S> {
    polytomic_webhook_core::inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for PolytomicOrgEvents<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolytomicOrgEvents")
            .field("inner", &self.inner)
            .field("checks", &self.checks)
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
        Box::pin(
            async move {
                let (admitted, info) = match head {
                    Ok((parts, body)) => checks.admit_body(parts, body).await,
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
                drop(in_flight);
                result
            }
            .instrument(span),
        )
    }
}

type Admitted<B> = Result<Request<EventBody>, Box<Refused<B>>>;

impl EventChecks {
    /// The checks that need only the request head: allowlist, signature header, and the
    /// decompression layer's header checks. The body is not touched.
    fn admit_head<B>(&self, request: Request<B>) -> Result<(Parts, TimeoutBody<B>), Box<Refused<B>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut request = request.map(|body| TimeoutBody::new(body, self.body_timeout));
        let budget = self.decompression.config().max_compressed_bytes;
        let refuse = |problem: Problem, request| Box::new((problem, Drain::new(request, budget)));
        if let Some(allowlist) = &self.allowlist {
            request = allowlist
                .as_check()
                .check(request)
                .map_err(|no| answer(no, budget))?;
        }
        let decoded = signature_header(request.headers())
            .and_then(|value| Signature::decode(value).ok_or(SignatureError::Malformed));
        if let Err(refusal) = decoded {
            return Err(refuse(refusal.to_problem(), request));
        }
        if let Err(refusal) = self.decompression.decompress(head_only(request.headers())) {
            return Err(refuse(refusal.to_problem(), request));
        }
        Ok(request.into_parts())
    }

    /// Reads the body, verifies the signature over it (as received, then decoded), and builds
    /// the request for the inner service.
    async fn admit_body<B>(
        &self,
        mut parts: Parts,
        body: TimeoutBody<B>,
    ) -> (Admitted<B>, Option<DecompressionInfo>)
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let refuse = |problem: Problem| Box::new((problem, Drain::none()));
        let budget = self.decompression.config().max_compressed_bytes;
        let received = match read_to_end(body, budget).await {
            Ok(received) => received,
            Err(problem) => return (Err(refuse(problem)), None),
        };
        // The header was checked in `admit_head`; read again rather than carried across.
        let signature = signature_header(&parts.headers)
            .ok()
            .and_then(Signature::decode);
        let Some(signature) = signature else {
            return (Err(refuse(SignatureError::Malformed.to_problem())), None);
        };
        let span = Span::current();
        let (decoded, info) = if self.secrets.verify(&signature, &received) {
            span.record("signed_bytes", "received");
            match self.decode(&parts.headers, received).await {
                Ok(decoded) => decoded,
                Err((problem, info)) => return (Err(refuse(problem)), info),
            }
        } else if parts.headers.contains_key(CONTENT_ENCODING) {
            match self.decode(&parts.headers, received).await {
                Ok((decoded, info)) if self.secrets.verify(&signature, &decoded) => {
                    span.record("signed_bytes", "decoded");
                    (decoded, info)
                }
                // A sender not known to hold a secret learns nothing about its body.
                Ok((_, info)) | Err((_, info)) => {
                    return (Err(refuse(SignatureError::Mismatch.to_problem())), info);
                }
            }
        } else {
            return (Err(refuse(SignatureError::Mismatch.to_problem())), None);
        };
        // The body is decoded now: its coding and length no longer describe it.
        parts.headers.remove(CONTENT_ENCODING);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        if let Some(info) = &info {
            parts.extensions.insert(info.clone());
            parts.extensions.insert(info.stats().clone());
        }
        parts.extensions.insert(self.event.clone());
        polytomic_webhook_event::__private::admit_org_event(&mut parts.extensions);
        let mut request = Request::from_parts(parts, Full::new(decoded));
        // The decompression limits bound the body already; axum's 2 MB default would otherwise
        // cut large deliveries short with a less precise answer.
        DefaultBodyLimit::disable().apply(&mut request);
        (Ok(request), info)
    }

    /// Runs `received` through the decompression layer, with all its limits.
    async fn decode(
        &self,
        headers: &HeaderMap,
        received: Bytes,
    ) -> Result<(Bytes, Option<DecompressionInfo>), (Problem, Option<DecompressionInfo>)> {
        let mut request = Request::new(Full::new(received));
        *request.headers_mut() = headers.clone();
        let request = self
            .decompression
            .decompress(request)
            .map_err(|refusal| (refusal.to_problem(), None))?;
        let info = request.extensions().get::<DecompressionInfo>().cloned();
        let stats = request.extensions().get::<BodyStats>().cloned();
        match request.into_body().collect().await {
            Ok(collected) => Ok((collected.to_bytes(), info)),
            Err(error) => Err((
                EventRejection::from_body_error(error, stats.as_ref()).to_problem(),
                info,
            )),
        }
    }
}

/// A body-less request with `headers`, for the decompression layer's header checks.
fn head_only(headers: &HeaderMap) -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = headers.clone();
    request
}

/// Reads a body as received into one buffer, refusing it past `budget` bytes.
async fn read_to_end<B>(body: TimeoutBody<B>, budget: u64) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || TooLargeLimit::Layer(BodyLimit::Compressed, budget).problem();
    let mut body = pin!(body);
    let mut received = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| EventRejection::from_body_error(error, None).to_problem())?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len =
            u64::try_from(received.len().saturating_add(data.remaining())).unwrap_or(u64::MAX);
        if len > budget {
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

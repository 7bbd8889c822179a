//! [`PolytomicWebhookLayer`]: the whole stack as one `tower::Layer`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum_core::extract::DefaultBodyLimit;
use http::Request;
use http_body::Body;
use polytomic_webhook_auth::allowlist::SourceIpAllowlistLayer;
use polytomic_webhook_auth::{BearerAuthLayer, Clock, SystemClock};
use polytomic_webhook_core::Problem;
use polytomic_webhook_core::Rejection;
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_core::check::{Check, Refused as CheckRefused};
use polytomic_webhook_decompression::DecompressionLayer;
use polytomic_webhook_event::EventConfig;
use tower_layer::Layer;

use crate::config::{ConfigError, PolytomicWebhookConfig};
use crate::drain::Drain;
use crate::service::{DeliveryBody, PolytomicWebhook};
use crate::timeout::TimeoutBody;

/// Receives Polytomic deliveries in front of any tower service; see the [crate docs](crate).
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook::prelude::*;
///
/// async fn receive(batch: SyncRecords) -> Ack {
///     Ack::from(&batch)
/// }
///
/// let config = PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?);
/// let app: Router = Router::new()
///     .route("/webhooks/polytomic", post(receive))
///     .layer(PolytomicWebhookLayer::new(config)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct PolytomicWebhookLayer<C = SystemClock> {
    checks: Arc<Checks<C>>,
}

/// The checks, in the order they run.
pub(crate) struct Checks<C> {
    allowlist: Option<SourceIpAllowlistLayer>,
    auth: BearerAuthLayer<C>,
    body_timeout: Option<Duration>,
    decompression: DecompressionLayer,
    event: EventConfig,
}

impl PolytomicWebhookLayer {
    /// Builds the stack from its configuration; fails if no secret is configured.
    pub fn new(config: PolytomicWebhookConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            checks: Arc::new(Checks {
                auth: BearerAuthLayer::from_config(config.bearer_auth()?),
                allowlist: config.allowlist.map(SourceIpAllowlistLayer::from_config),
                body_timeout: config.body_timeout,
                decompression: DecompressionLayer::from_config(config.decompression),
                event: config.event,
            }),
        })
    }
}

impl<C: Clone> PolytomicWebhookLayer<C> {
    /// Uses `clock` for the timestamp window instead of the system clock (for tests).
    pub fn clock<C2: Clock>(self, clock: C2) -> PolytomicWebhookLayer<C2> {
        let checks = Arc::unwrap_or_clone(self.checks);
        PolytomicWebhookLayer {
            checks: Arc::new(Checks {
                allowlist: checks.allowlist,
                auth: checks.auth.clock(clock),
                body_timeout: checks.body_timeout,
                decompression: checks.decompression,
                event: checks.event,
            }),
        }
    }
}

impl<C: Clock> Checks<C> {
    /// Runs every stage's check, cheapest first, and prepares the request for the inner
    /// service: the same checks the stage layers run on their own, with their bodies drained
    /// as a stage layer does (by default, or with [`DrainPolicy::drain`] for other limits).
    ///
    /// Nothing about the body is touched until the sender is known to be allowed and
    /// authenticated: an unauthenticated request is never inflated or parsed.
    ///
    /// [`DrainPolicy::drain`]: polytomic_webhook_core::check::DrainPolicy::drain
    pub(crate) fn admit<B>(
        &self,
        request: Request<B>,
    ) -> Result<Request<DeliveryBody<B>>, Box<Refused<B>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        // The deadline covers the whole body, drained or read.
        let mut request = request.map(|body| TimeoutBody::new(body, self.body_timeout));
        // A body refused unread is drained within the limit an accepted one is held to.
        let budget = self.decompression.config().max_compressed_bytes;
        if let Some(allowlist) = &self.allowlist {
            request = allowlist
                .as_check()
                .check(request)
                .map_err(|no| answer(no, budget))?;
        }
        let request = self
            .auth
            .as_check()
            .check(request)
            .map_err(|no| answer(no, budget))?;
        let mut request = self
            .decompression
            .config()
            .check(request)
            .map_err(|no| answer(no, budget))?;
        request.extensions_mut().insert(self.event.clone());
        polytomic_webhook_event::__private::admit_batch(request.extensions_mut());
        // The decompression limits bound the decoded body; axum's 2 MB default would otherwise
        // cut large batches short with a less precise answer.
        DefaultBodyLimit::disable().apply(&mut request);
        Ok(request)
    }
}

/// A request the layer answers itself: the problem of the check that refused it, and its
/// unread body to drain first.
pub(crate) type Refused<B> = (Problem, Drain<TimeoutBody<B>>);

/// The answer to a request one of the checks refused.
pub(crate) fn answer<B, R>(refused: CheckRefused<TimeoutBody<B>, R>, budget: u64) -> Box<Refused<B>>
where
    B: Body,
    B::Error: Into<BoxError>,
    R: Rejection,
{
    Box::new(refused.into_answer(Some(budget)))
}

impl<C: Clone> Clone for Checks<C> {
    fn clone(&self) -> Self {
        Self {
            allowlist: self.allowlist.clone(),
            auth: self.auth.clone(),
            body_timeout: self.body_timeout,
            decompression: self.decompression,
            event: self.event.clone(),
        }
    }
}

impl<C> Clone for PolytomicWebhookLayer<C> {
    fn clone(&self) -> Self {
        Self {
            checks: Arc::clone(&self.checks),
        }
    }
}

impl<S, C> Layer<S> for PolytomicWebhookLayer<C> {
    type Service = PolytomicWebhook<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PolytomicWebhook::new(inner, Arc::clone(&self.checks))
    }
}

impl<C> fmt::Debug for PolytomicWebhookLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.checks.fmt(f)
    }
}

impl<C> fmt::Debug for Checks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolytomicWebhookLayer")
            .field("allowlist", &self.allowlist)
            .field("auth", &self.auth)
            .field("body_timeout", &self.body_timeout)
            .field("decompression", &self.decompression)
            .field("event", &self.event)
            .finish()
    }
}

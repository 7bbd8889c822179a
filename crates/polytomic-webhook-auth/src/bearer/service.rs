use std::fmt;

use chrono::{DateTime, Utc};
use http::{HeaderMap, Request};
use polytomic_webhook_core::check::{Check, CheckService, Refused};

use crate::authorization::{AuthorizationError, bearer_token};
use crate::clock::{Clock, SystemClock};
use crate::rejection::AuthRejection;
use crate::secret::SecretSet;
use crate::timestamp::{DeliveredAt, TimestampError, TimestampWindow, signature_timestamp};

/// Middleware that refuses requests without a valid bearer secret and timestamp: the
/// [`BearerCheck`] in a [`CheckService`].
///
/// Built by [`BearerAuthLayer`](super::BearerAuthLayer); see the [module docs](super).
///
/// ```
/// use polytomic_webhook_auth::{BearerAuthLayer, Secret};
/// use tower::{Layer, service_fn};
///
/// let service = BearerAuthLayer::new(Secret::new("shh-value")?)
///     .layer(service_fn(|_: http::Request<()>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
/// assert!(!format!("{service:?}").contains("shh-value"));
/// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
/// ```
pub type BearerAuth<S, C = SystemClock> = CheckService<S, BearerCheck<C>>;

/// The bearer check: the secret in constant time, then the delivery timestamp window.
#[derive(Clone)]
pub struct BearerCheck<C = SystemClock> {
    pub(super) secrets: SecretSet,
    pub(super) window: Option<TimestampWindow>,
    pub(super) require_timestamp: bool,
    pub(super) clock: C,
}

impl<C: Clock> BearerCheck<C> {
    /// Checks the request's credentials and timestamp, recording the timestamp as
    /// [`DeliveredAt`].
    pub(super) fn verdict<B>(&self, request: &mut Request<B>) -> Result<(), AuthRejection> {
        if let Some(at) = self.authorize(request.headers())? {
            request.extensions_mut().insert(DeliveredAt(at));
        }
        Ok(())
    }

    /// Checks the credentials and timestamp in `headers`, returning the parsed timestamp.
    fn authorize(&self, headers: &HeaderMap) -> Result<Option<DateTime<Utc>>, AuthRejection> {
        let token = bearer_token(headers)?;
        if !self.secrets.matches(token) {
            return Err(AuthorizationError::NoMatch.into());
        }
        let Some(window) = &self.window else {
            // The check is off; a readable timestamp is still worth passing on.
            return Ok(signature_timestamp(headers).ok().flatten());
        };
        match signature_timestamp(headers)? {
            Some(delivered) => {
                window.check(delivered, self.clock.now())?;
                Ok(Some(delivered))
            }
            None if self.require_timestamp => Err(TimestampError::Missing.into()),
            None => Ok(None),
        }
    }
}

impl<B, C: Clock> Check<B> for BearerCheck<C> {
    type Body = B;
    type Refusal = AuthRejection;

    fn check(&self, mut request: Request<B>) -> Result<Request<B>, Refused<B, AuthRejection>> {
        let verdict = self.verdict(&mut request);
        Refused::before_body(request, verdict)
    }
}

impl<C> fmt::Debug for BearerCheck<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SecretSet`'s own `Debug` is redacted; the clock may be a closure without `Debug`.
        f.debug_struct("BearerCheck")
            .field("secrets", &self.secrets)
            .field("timestamp_window", &self.window)
            .field("require_timestamp", &self.require_timestamp)
            .field("clock", &std::any::type_name::<C>())
            .finish()
    }
}

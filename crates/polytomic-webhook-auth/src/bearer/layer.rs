use std::fmt;
use std::sync::Arc;

use http::Request;
use polytomic_webhook_core::check::{CheckService, DrainPolicy};
use serde::Deserialize;
use tower_layer::Layer;

use super::service::{BearerAuth, BearerCheck};
use crate::clock::{Clock, SystemClock};
use crate::rejection::AuthRejection;
use crate::secret::SecretSet;
use crate::timestamp::TimestampWindow;

/// Applies [`BearerAuth`] to a service: bearer secrets checked in constant time, then the
/// delivery timestamp window.
///
/// By default the timestamp header is required and must lie within
/// [`TimestampWindow::default`] (five minutes old to one minute ahead) of the
/// [`SystemClock`]. See the [module docs](crate::bearer) for the full behaviour and examples.
///
/// `Debug` never shows the secrets:
///
/// ```
/// use polytomic_webhook_auth::{BearerAuthLayer, Secret};
///
/// let layer = BearerAuthLayer::new(Secret::new("top-secret-value")?);
/// assert!(!format!("{layer:?}").contains("top-secret-value"));
/// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct BearerAuthLayer<C = SystemClock> {
    check: Arc<BearerCheck<C>>,
    drain: DrainPolicy,
}

impl BearerAuthLayer {
    /// A layer accepting the given secrets (a [`SecretSet`] or a single
    /// [`Secret`](crate::Secret)), with the default timestamp window on the system clock.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self::from_config(BearerAuthConfig::new(secrets))
    }

    /// A layer built from deserialized configuration.
    ///
    /// ```
    /// use polytomic_webhook_auth::{BearerAuthConfig, BearerAuthLayer};
    ///
    /// let config: BearerAuthConfig = serde_json::from_str(
    ///     r#"{"secrets": ["old", "new"], "timestamp_window": {"max_age_secs": 120}}"#,
    /// )?;
    /// let layer = BearerAuthLayer::from_config(config);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_config(config: BearerAuthConfig) -> Self {
        Self {
            check: Arc::new(BearerCheck {
                secrets: config.secrets,
                window: config.check_timestamp.then_some(config.timestamp_window),
                require_timestamp: config.require_timestamp,
                clock: SystemClock,
            }),
            drain: DrainPolicy::default(),
        }
    }
}

impl<C: Clock> BearerAuthLayer<C> {
    /// Checks one request as the middleware would, without a service: `Ok` (with a
    /// [`DeliveredAt`](crate::DeliveredAt) extension inserted when the timestamp is present) when its secret and
    /// timestamp are accepted. For composing the check into another middleware; nothing is
    /// logged for a refusal.
    ///
    /// ```
    /// use polytomic_webhook_auth::{BearerAuthLayer, Secret};
    ///
    /// let layer = BearerAuthLayer::new(Secret::new("s3cret")?).timestamp_window(None);
    /// let mut request = http::Request::builder()
    ///     .header("authorization", "Bearer s3cret")
    ///     .body(())
    ///     .unwrap();
    /// assert!(layer.authorize(&mut request).is_ok());
    /// request.headers_mut().insert("authorization", "Bearer nope".parse().unwrap());
    /// assert_eq!(layer.authorize(&mut request).unwrap_err().code(), "invalid_token");
    /// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
    /// ```
    pub fn authorize<B>(&self, request: &mut Request<B>) -> Result<(), AuthRejection> {
        self.check.verdict(request)
    }

    /// The check this layer's services run.
    pub fn as_check(&self) -> &BearerCheck<C> {
        &self.check
    }
}

impl<C: Clone> BearerAuthLayer<C> {
    /// Replaces the accepted secrets.
    pub fn secrets(mut self, secrets: impl Into<SecretSet>) -> Self {
        Arc::make_mut(&mut self.check).secrets = secrets.into();
        self
    }

    /// Sets the accepted timestamp window; `None` turns the timestamp check off entirely (no
    /// timestamp is required or refused, though one that parses is still recorded as
    /// [`DeliveredAt`](crate::DeliveredAt)).
    pub fn timestamp_window(mut self, window: Option<TimestampWindow>) -> Self {
        Arc::make_mut(&mut self.check).window = window;
        self
    }

    /// Whether a request without a `Polytomic-Signature-Timestamp` header is refused
    /// (`missing_timestamp`). Default `true`. When `false`, a present header is still parsed
    /// and checked against the window.
    pub fn require_timestamp(mut self, require: bool) -> Self {
        Arc::make_mut(&mut self.check).require_timestamp = require;
        self
    }

    /// Uses `clock` as the current time for the timestamp window.
    pub fn clock<C2: Clock>(self, clock: C2) -> BearerAuthLayer<C2> {
        let BearerCheck {
            secrets,
            window,
            require_timestamp,
            clock: _,
        } = Arc::unwrap_or_clone(self.check);
        BearerAuthLayer {
            check: Arc::new(BearerCheck {
                secrets,
                window,
                require_timestamp,
                clock,
            }),
            drain: self.drain,
        }
    }

    /// What is done with the body of a refused request. By default it is drained as
    /// `PolytomicWebhookLayer` drains it with its default limits (see [`DrainPolicy`]);
    /// [`DrainPolicy::none`] leaves it unread.
    pub fn drain(mut self, policy: DrainPolicy) -> Self {
        self.drain = policy;
        self
    }
}

impl<S, C> Layer<S> for BearerAuthLayer<C> {
    type Service = BearerAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckService::new(inner, Arc::clone(&self.check)).drain(self.drain)
    }
}

impl<C> fmt::Debug for BearerAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("check", &self.check)
            .field("drain", &self.drain)
            .finish()
    }
}

/// Deserializable configuration of a [`BearerAuthLayer`].
///
/// `secrets` is a string or a list of strings; the other fields are optional:
///
/// ```
/// use std::time::Duration;
/// use polytomic_webhook_auth::BearerAuthConfig;
///
/// let config: BearerAuthConfig = serde_json::from_str(r#"{
///     "secrets": "the-secret",
///     "check_timestamp": true,
///     "require_timestamp": false,
///     "timestamp_window": {"max_age_secs": 600, "max_future_skew_secs": 30}
/// }"#)?;
/// assert!(config.secrets.matches("the-secret"));
/// assert_eq!(config.timestamp_window.max_age, Duration::from_secs(600));
/// assert!(!config.require_timestamp);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BearerAuthConfig {
    /// The accepted secrets.
    pub secrets: SecretSet,
    /// Whether the timestamp is checked at all. Default `true`.
    #[serde(default = "yes")]
    pub check_timestamp: bool,
    /// Whether the timestamp header is required. Default `true`.
    #[serde(default = "yes")]
    pub require_timestamp: bool,
    /// The accepted window. Default: [`TimestampWindow::default`].
    #[serde(default)]
    pub timestamp_window: TimestampWindow,
}

impl BearerAuthConfig {
    /// Accepts `secrets`, with every other field at its default: the timestamp checked and
    /// required, within [`TimestampWindow::default`].
    ///
    /// ```
    /// use polytomic_webhook_auth::{BearerAuthConfig, Secret};
    ///
    /// let config = BearerAuthConfig::new(Secret::new("s3cret")?);
    /// assert!(config.check_timestamp && config.require_timestamp);
    /// # Ok::<(), polytomic_webhook_auth::InvalidSecret>(())
    /// ```
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            secrets: secrets.into(),
            check_timestamp: yes(),
            require_timestamp: yes(),
            timestamp_window: TimestampWindow::default(),
        }
    }
}

fn yes() -> bool {
    true
}

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::{HeaderMap, Request};
use serde::Deserialize;
use tower_layer::Layer;

use super::service::BearerAuth;
use crate::authorization::{AuthorizationError, bearer_token};
use crate::clock::{Clock, SystemClock};
use crate::rejection::AuthRejection;
use crate::secret::SecretSet;
use crate::timestamp::{DeliveredAt, TimestampError, TimestampWindow, signature_timestamp};

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
    settings: Settings<C>,
}

#[derive(Clone)]
pub(super) struct Settings<C> {
    secrets: SecretSet,
    window: Option<TimestampWindow>,
    require_timestamp: bool,
    clock: C,
}

impl BearerAuthLayer {
    /// A layer accepting the given secrets (a [`SecretSet`] or a single
    /// [`Secret`](crate::Secret)), with the default timestamp window on the system clock.
    pub fn new(secrets: impl Into<SecretSet>) -> Self {
        Self {
            settings: Settings {
                secrets: secrets.into(),
                window: Some(TimestampWindow::default()),
                require_timestamp: true,
                clock: SystemClock,
            },
        }
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
        Self::new(config.secrets)
            .timestamp_window(config.check_timestamp.then_some(config.timestamp_window))
            .require_timestamp(config.require_timestamp)
    }
}

impl<C: Clock> BearerAuthLayer<C> {
    /// Checks one request as the middleware would, without a service: `Ok` (with a
    /// [`DeliveredAt`] extension inserted when the timestamp is present) when its secret and
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
        self.settings.authorize_request(request)
    }
}

impl<C> BearerAuthLayer<C> {
    /// Replaces the accepted secrets.
    pub fn secrets(mut self, secrets: impl Into<SecretSet>) -> Self {
        self.settings.secrets = secrets.into();
        self
    }

    /// Sets the accepted timestamp window; `None` turns the timestamp check off entirely (no
    /// timestamp is required or refused, though one that parses is still recorded as
    /// [`DeliveredAt`](crate::DeliveredAt)).
    pub fn timestamp_window(mut self, window: Option<TimestampWindow>) -> Self {
        self.settings.window = window;
        self
    }

    /// Whether a request without a `Polytomic-Signature-Timestamp` header is refused
    /// (`missing_timestamp`). Default `true`. When `false`, a present header is still parsed
    /// and checked against the window.
    pub fn require_timestamp(mut self, require: bool) -> Self {
        self.settings.require_timestamp = require;
        self
    }

    /// Uses `clock` as the current time for the timestamp window.
    pub fn clock<C2: Clock>(self, clock: C2) -> BearerAuthLayer<C2> {
        let Settings {
            secrets,
            window,
            require_timestamp,
            clock: _,
        } = self.settings;
        BearerAuthLayer {
            settings: Settings {
                secrets,
                window,
                require_timestamp,
                clock,
            },
        }
    }
}

impl<C> Settings<C>
where
    C: Clock,
{
    /// Checks the request's credentials and timestamp, recording the timestamp as
    /// [`DeliveredAt`].
    pub(super) fn authorize_request<B>(
        &self,
        request: &mut Request<B>,
    ) -> Result<(), AuthRejection> {
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

impl<S, C> Layer<S> for BearerAuthLayer<C>
where
    C: Clone,
{
    type Service = BearerAuth<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth::new(inner, Arc::new(self.settings.clone()))
    }
}

impl<C> fmt::Debug for BearerAuthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("settings", &self.settings)
            .finish()
    }
}

impl<C> fmt::Debug for Settings<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SecretSet`'s own `Debug` is redacted; the clock may be a closure without `Debug`.
        f.debug_struct("Settings")
            .field("secrets", &self.secrets)
            .field("timestamp_window", &self.window)
            .field("require_timestamp", &self.require_timestamp)
            .field("clock", &std::any::type_name::<C>())
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

fn yes() -> bool {
    true
}

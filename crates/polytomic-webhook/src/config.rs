//! [`PolytomicWebhookConfig`]: every setting of the composed stack, as plain data.

use std::fmt;
use std::time::Duration;

use polytomic_webhook_auth::allowlist::AllowlistConfig;
use polytomic_webhook_auth::{BearerAuthConfig, Secret, SecretSet, TimestampWindow};
use polytomic_webhook_decompression::DecompressionConfig;
use polytomic_webhook_event::EventConfig;
use serde::{Deserialize, Deserializer, de};

/// Everything the [`PolytomicWebhookLayer`](crate::PolytomicWebhookLayer) needs to know.
///
/// Every field but `secrets` has a safe default. It can be built in code or read from a
/// configuration file:
///
/// ```
/// use polytomic_webhook::{PolytomicWebhookConfig, PolytomicWebhookLayer};
///
/// let config: PolytomicWebhookConfig = serde_json::from_str(r#"{
///     "secrets": ["current-secret", "previous-secret"],
///     "timestamp_window": { "max_age_secs": 120 },
///     "decompression": { "max_decompressed_bytes": 8388608 },
///     "event": { "max_records": 10000 }
/// }"#)?;
/// let layer = PolytomicWebhookLayer::new(config)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The same in code:
///
/// ```
/// use std::time::Duration;
///
/// use polytomic_webhook::prelude::*;
///
/// let config = PolytomicWebhookConfig::default()
///     .secret(Secret::new("current-secret")?)
///     .secret(Secret::new("previous-secret")?)
///     .timestamp_window(Some(TimestampWindow {
///         max_age: Duration::from_secs(120),
///         ..TimestampWindow::default()
///     }));
/// let layer = PolytomicWebhookLayer::new(config)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PolytomicWebhookConfig {
    /// The accepted bearer secrets: one, or several while rotating. Required: building the
    /// layer without one is an error. In a file: one string or a list.
    pub secrets: Option<SecretSet>,
    /// Whether `Polytomic-Signature-Timestamp` is checked against `timestamp_window`.
    /// Default `true`.
    pub check_timestamp: bool,
    /// Whether a delivery without the timestamp header is refused. Default `true`.
    pub require_timestamp: bool,
    /// How old, or how far ahead, a timestamp may be. Default: five minutes old to one minute
    /// ahead.
    pub timestamp_window: TimestampWindow,
    /// How long the whole request body may take to arrive, counted from its first read;
    /// `None` (`null` in a file) for no deadline. Default: 30 seconds. In a file:
    /// `body_timeout_secs`, in (fractional) seconds.
    #[serde(rename = "body_timeout_secs", deserialize_with = "optional_secs")]
    pub body_timeout: Option<Duration>,
    /// Only accept deliveries from these address blocks. Default: no allowlist.
    pub allowlist: Option<AllowlistConfig>,
    /// Decompression limits. Default: 32 MiB decoded, 32 MiB received, ratio 100:1, one content
    /// coding per request (`max_codings`, up to 3).
    pub decompression: DecompressionConfig,
    /// Envelope validation: record limit, sync-id check, field-name normalisation, unknown
    /// events.
    pub event: EventConfig,
}

impl Default for PolytomicWebhookConfig {
    fn default() -> Self {
        Self {
            secrets: None,
            check_timestamp: true,
            require_timestamp: true,
            timestamp_window: TimestampWindow::default(),
            body_timeout: Some(DEFAULT_BODY_TIMEOUT),
            allowlist: None,
            decompression: DecompressionConfig::default(),
            event: EventConfig::default(),
        }
    }
}

impl PolytomicWebhookConfig {
    /// Adds an accepted secret.
    #[must_use]
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets = Some(match self.secrets.take() {
            Some(secrets) => secrets.with(secret),
            None => SecretSet::from(secret),
        });
        self
    }

    /// Replaces the accepted secrets.
    #[must_use]
    pub fn secrets(mut self, secrets: impl Into<SecretSet>) -> Self {
        self.secrets = Some(secrets.into());
        self
    }

    /// Sets the timestamp window; `None` turns the timestamp check off.
    #[must_use]
    pub fn timestamp_window(mut self, window: Option<TimestampWindow>) -> Self {
        self.check_timestamp = window.is_some();
        if let Some(window) = window {
            self.timestamp_window = window;
        }
        self
    }

    /// Whether a delivery without the timestamp header is refused.
    #[must_use]
    pub fn require_timestamp(mut self, require: bool) -> Self {
        self.require_timestamp = require;
        self
    }

    shared_setters!();

    /// The bearer check's part of this configuration: the one conversion of these fields,
    /// which `BearerAuthLayer::from_config` then builds from.
    pub(crate) fn bearer_auth(&self) -> Result<BearerAuthConfig, ConfigError> {
        let secrets = self.secrets.clone().ok_or(ConfigError::NoSecret)?;
        let mut auth = BearerAuthConfig::new(secrets);
        auth.check_timestamp = self.check_timestamp;
        auth.require_timestamp = self.require_timestamp;
        auth.timestamp_window = self.timestamp_window;
        Ok(auth)
    }
}

/// The setters both composed layers' configurations have, for the fields they share.
macro_rules! shared_setters {
    () => {
        /// Sets the deadline for receiving the body; `None` for none.
        #[must_use]
        pub fn body_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.body_timeout = timeout;
            self
        }

        /// Only accept deliveries from the given blocks.
        #[must_use]
        pub fn allowlist(
            mut self,
            allowlist: polytomic_webhook_auth::allowlist::AllowlistConfig,
        ) -> Self {
            self.allowlist = Some(allowlist);
            self
        }

        /// Sets the decompression limits.
        #[must_use]
        pub fn decompression(
            mut self,
            decompression: polytomic_webhook_decompression::DecompressionConfig,
        ) -> Self {
            self.decompression = decompression;
            self
        }

        /// Sets the extractor's settings: body limit and envelope validation.
        #[must_use]
        pub fn event(mut self, event: polytomic_webhook_event::EventConfig) -> Self {
            self.event = event;
            self
        }
    };
}
pub(crate) use shared_setters;

/// Polytomic sends batches of 100 records by default, a few kilobytes compressed: half a
/// minute leaves ample room for slow links while bounding how long a stalled or trickling
/// sender can hold a connection and a buffer.
pub(crate) use polytomic_webhook_core::timeout::DEFAULT_BODY_TIMEOUT;

pub(crate) fn optional_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<f64>::deserialize(deserializer)?
        .map(|secs| Duration::try_from_secs_f64(secs).map_err(de::Error::custom))
        .transpose()
}

/// Why a [`PolytomicWebhookConfig`] cannot become a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret is configured, so no delivery could ever be accepted.
    NoSecret,
    /// No signing secret is configured for the organisation Events webhook.
    NoSigningSecret,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSecret => f.write_str(
                "no webhook secret is configured: set at least one of `secrets` \
                 (the value entered as the Secret of the Polytomic webhook connection)",
            ),
            Self::NoSigningSecret => f.write_str(
                "no signing secret is configured for the Events webhook: set at least one of \
                 `secrets` (the secret given when the organisation webhook was created)",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

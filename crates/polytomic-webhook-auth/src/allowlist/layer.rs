use std::sync::Arc;

use serde::Deserialize;
use tower_layer::Layer;

use super::net::{BlockList, IpNet, deserialize_blocks};
use super::service::SourceIpAllowlist;

/// Applies [`SourceIpAllowlist`] to a service: only clients inside the allowed blocks reach
/// it.
///
/// An empty allowlist refuses everything. See the [module docs](crate::allowlist).
///
/// ```
/// use polytomic_webhook_auth::allowlist::{SourceIpAllowlistLayer, parse_block};
///
/// let layer = SourceIpAllowlistLayer::new([parse_block("203.0.113.0/24")?])
///     .trusted_proxies([parse_block("10.0.0.0/8")?]);
/// # Ok::<(), polytomic_webhook_auth::allowlist::InvalidBlock>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SourceIpAllowlistLayer {
    settings: Settings,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Settings {
    pub(super) allowed: BlockList,
    pub(super) trusted_proxies: BlockList,
}

impl SourceIpAllowlistLayer {
    /// A layer allowing clients inside `allowed`, trusting no proxy.
    pub fn new(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            settings: Settings {
                allowed: BlockList::new(allowed),
                trusted_proxies: BlockList::default(),
            },
        }
    }

    /// Replaces the list of proxies whose `Forwarded` / `X-Forwarded-For` entries are believed.
    ///
    /// List only proxies you operate, and make sure they append to (rather than pass through
    /// unchanged) the header the walk reads.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.settings.trusted_proxies = BlockList::new(proxies);
        self
    }

    /// A layer built from deserialized configuration.
    ///
    /// ```
    /// use polytomic_webhook_auth::allowlist::{AllowlistConfig, SourceIpAllowlistLayer};
    ///
    /// let config: AllowlistConfig = serde_json::from_str(
    ///     r#"{"allow": ["203.0.113.0/24", "2001:db8::7"], "trusted_proxies": ["10.0.0.1"]}"#,
    /// )?;
    /// let layer = SourceIpAllowlistLayer::from_config(config);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_config(config: AllowlistConfig) -> Self {
        Self::new(config.allow).trusted_proxies(config.trusted_proxies)
    }
}

impl<S> Layer<S> for SourceIpAllowlistLayer {
    type Service = SourceIpAllowlist<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SourceIpAllowlist::new(inner, Arc::new(self.settings.clone()))
    }
}

/// Deserializable configuration of a [`SourceIpAllowlistLayer`].
///
/// Blocks are written as [`parse_block`](super::parse_block) accepts them: CIDR notation or a
/// single address.
///
/// ```
/// use polytomic_webhook_auth::allowlist::AllowlistConfig;
///
/// let config: AllowlistConfig = serde_json::from_str(r#"{"allow": ["203.0.113.0/24"]}"#)?;
/// assert_eq!(config.allow.len(), 1);
/// assert!(config.trusted_proxies.is_empty());
/// assert!(serde_json::from_str::<AllowlistConfig>(r#"{"allow": ["nope"]}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AllowlistConfig {
    /// The blocks clients must be in.
    #[serde(deserialize_with = "deserialize_blocks")]
    pub allow: Vec<IpNet>,
    /// The reverse proxies whose forwarding headers are believed. Default: none.
    #[serde(default, deserialize_with = "deserialize_blocks")]
    pub trusted_proxies: Vec<IpNet>,
}

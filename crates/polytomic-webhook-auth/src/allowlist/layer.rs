use std::sync::Arc;

use http::Request;
use polytomic_webhook_core::check::{CheckService, DrainPolicy};
use serde::Deserialize;
use tower_layer::Layer;

use super::forwarded::ForwardedHeader;
use super::net::{BlockList, IpNet, deserialize_blocks};
use super::rejection::SourceIpRejection;
use super::service::{SourceIpAllowlist, SourceIpCheck};

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
    check: Arc<SourceIpCheck>,
    drain: DrainPolicy,
}

impl SourceIpAllowlistLayer {
    /// Checks one request as the middleware would, without a service: `Ok` (with a
    /// [`ClientIp`](crate::ClientIp) extension inserted) when its client is allowed. For composing the check
    /// into another middleware; nothing is logged for a refusal.
    ///
    /// ```
    /// use polytomic_webhook_auth::PeerAddr;
    /// use polytomic_webhook_auth::allowlist::{SourceIpAllowlistLayer, parse_block};
    ///
    /// let layer = SourceIpAllowlistLayer::new([parse_block("203.0.113.0/24")?]);
    /// let mut request = http::Request::new(());
    /// request.extensions_mut().insert(PeerAddr("203.0.113.9:5000".parse().unwrap()));
    /// assert!(layer.check(&mut request).is_ok());
    /// request.extensions_mut().insert(PeerAddr("198.51.100.1:5000".parse().unwrap()));
    /// assert_eq!(layer.check(&mut request).unwrap_err().code(), "source_ip_not_allowed");
    /// # Ok::<(), polytomic_webhook_auth::allowlist::InvalidBlock>(())
    /// ```
    pub fn check<B>(&self, request: &mut Request<B>) -> Result<(), SourceIpRejection> {
        self.check.verdict(request)
    }

    /// A layer allowing clients inside `allowed`, trusting no proxy.
    pub fn new(allowed: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            check: Arc::new(SourceIpCheck {
                allowed: BlockList::new(allowed),
                ..SourceIpCheck::default()
            }),
            drain: DrainPolicy::default(),
        }
    }

    /// Replaces the list of proxies whose `Forwarded` / `X-Forwarded-For` entries are believed.
    ///
    /// List only proxies you operate, and make sure they append to (rather than pass through
    /// unchanged) the header the walk reads.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        Arc::make_mut(&mut self.check).trusted_proxies = BlockList::new(proxies);
        self
    }

    /// The header the trusted proxies append the client address to (default
    /// `X-Forwarded-For`). Only that header is read.
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        Arc::make_mut(&mut self.check).forwarded_header = header;
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
        Self::new(config.allow)
            .trusted_proxies(config.trusted_proxies)
            .forwarded_header(config.forwarded_header)
    }

    /// What is done with the body of a refused request. By default it is drained as
    /// `PolytomicWebhookLayer` drains it with its default limits (see [`DrainPolicy`]);
    /// [`DrainPolicy::none`] leaves it unread.
    pub fn drain(mut self, policy: DrainPolicy) -> Self {
        self.drain = policy;
        self
    }

    /// The check this layer's services run.
    pub fn as_check(&self) -> &SourceIpCheck {
        &self.check
    }
}

impl<S> Layer<S> for SourceIpAllowlistLayer {
    type Service = SourceIpAllowlist<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckService::new(inner, Arc::clone(&self.check)).drain(self.drain)
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
    /// The header the trusted proxies write: `"x-forwarded-for"` (default) or `"forwarded"`.
    #[serde(default)]
    pub forwarded_header: ForwardedHeader,
}

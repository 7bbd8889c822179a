//! Address blocks and matching addresses against them.

use std::fmt;
use std::net::IpAddr;

pub use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// Parses an address block in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`), or a single
/// address (`203.0.113.7`, meaning `/32`, or `2001:db8::7`, meaning `/128`).
///
/// Host bits after the prefix are ignored, so `203.0.113.7/24` is the block `203.0.113.0/24`.
///
/// ```
/// use polytomic_webhook_auth::allowlist::parse_block;
///
/// let block = parse_block("203.0.113.0/24")?;
/// assert!(block.contains(&"203.0.113.99".parse::<std::net::IpAddr>().unwrap()));
/// assert_eq!(parse_block("2001:db8::7")?.prefix_len(), 128);
/// assert!(parse_block("203.0.113.0/33").is_err());
/// # Ok::<(), polytomic_webhook_auth::allowlist::InvalidBlock>(())
/// ```
pub fn parse_block(text: &str) -> Result<IpNet, InvalidBlock> {
    let text = text.trim();
    if text.contains('/') {
        text.parse::<IpNet>()
            .map(|block| block.trunc())
            .map_err(|_| InvalidBlock)
    } else {
        text.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| InvalidBlock)
    }
}

/// A string that is neither an address block in CIDR notation nor a single IP address.
///
/// ```
/// use polytomic_webhook_auth::allowlist::{InvalidBlock, parse_block};
///
/// assert_eq!(parse_block("example.com"), Err(InvalidBlock));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvalidBlock;

impl fmt::Display for InvalidBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an IP address or a CIDR block such as 203.0.113.0/24")
    }
}

impl std::error::Error for InvalidBlock {}

/// A list of address blocks that treats an IPv4 address and its IPv4-mapped IPv6 form
/// (`::ffff:203.0.113.7`) as the same address, since a dual-stack listener reports IPv4
/// clients in the mapped form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockList(Vec<IpNet>);

impl BlockList {
    pub(crate) fn new(blocks: impl IntoIterator<Item = IpNet>) -> Self {
        Self(blocks.into_iter().map(|block| block.trunc()).collect())
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        let mapped = match canonical {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.0.iter().any(|block| {
            block.contains(&canonical) || mapped.is_some_and(|mapped| block.contains(&mapped))
        })
    }
}

/// Deserializes a list of blocks written as [`parse_block`] accepts them.
pub(crate) fn deserialize_blocks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            parse_block(text)
                .map_err(|error| serde::de::Error::custom(format!("{text:?}: {error}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn list(blocks: &[&str]) -> BlockList {
        BlockList::new(blocks.iter().map(|block| parse_block(block).unwrap()))
    }

    #[test]
    fn ipv4_blocks() {
        let list = list(&["203.0.113.0/24", "198.51.100.7"]);
        assert!(list.contains(ip("203.0.113.0")));
        assert!(list.contains(ip("203.0.113.255")));
        assert!(!list.contains(ip("203.0.114.0")));
        assert!(list.contains(ip("198.51.100.7")));
        assert!(!list.contains(ip("198.51.100.8")));
    }

    #[test]
    fn ipv6_blocks() {
        let list = list(&["2001:db8:1::/48"]);
        assert!(list.contains(ip("2001:db8:1:ffff::1")));
        assert!(!list.contains(ip("2001:db8:2::1")));
        assert!(!list.contains(ip("203.0.113.1")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_blocks_and_back() {
        assert!(list(&["203.0.113.0/24"]).contains(ip("::ffff:203.0.113.9")));
        assert!(!list(&["203.0.113.0/24"]).contains(ip("::ffff:203.0.114.9")));
        assert!(list(&["::ffff:203.0.113.0/120"]).contains(ip("203.0.113.9")));
        // IPv4-compatible (deprecated, not mapped) addresses are not the IPv4 address.
        assert!(!list(&["203.0.113.0/24"]).contains(ip("::203.0.113.9")));
    }

    #[test]
    fn host_bits_and_prefix_edges() {
        assert_eq!(
            parse_block("203.0.113.7/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert!(list(&["0.0.0.0/0"]).contains(ip("1.2.3.4")));
        assert!(!list(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
        assert!(list(&["::/0"]).contains(ip("2001:db8::1")));
        assert_eq!(
            parse_block(" 10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn malformed_blocks() {
        for text in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0",
            "10.0.0.0/8/8",
            "x/8",
        ] {
            assert_eq!(parse_block(text), Err(InvalidBlock), "{text}");
        }
    }

    #[test]
    fn empty_list_contains_nothing() {
        assert!(!BlockList::default().contains(ip("127.0.0.1")));
    }
}

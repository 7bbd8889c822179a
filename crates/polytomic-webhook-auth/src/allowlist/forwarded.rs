//! Finding the client address behind trusted proxies.
//!
//! A reverse proxy that forwards a request records the address it received it from, in
//! `Forwarded: for=…` (RFC 7239) or `X-Forwarded-For`, appending to what earlier hops wrote.
//! Only the entries appended by proxies we trust are reliable; everything to their left was
//! written by whoever sent the request. So the chain is read from the right: starting from the
//! connection's peer, while the current address is a trusted proxy, step to the entry it
//! appended. The first address that is not a trusted proxy is the client.
//!
//! Only the header the trusted proxies write is read ([`ForwardedHeader`], configured): a
//! proxy appends to one header and passes the other through as the sender wrote it, so
//! choosing by which header is present would let the sender pick the chain that is walked.
//! The parsing functions are public so they can be tested and fuzzed on their own.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};

use super::net::BlockList;
use super::rejection::SourceIpRejection;

/// The `X-Forwarded-For` header name.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which header the trusted proxies append the client address to.
///
/// Only that header is read; the other is ignored whatever it says, because a proxy passes a
/// header it does not write through unchanged from the sender.
///
/// ```
/// use polytomic_webhook_auth::allowlist::ForwardedHeader;
///
/// let header: ForwardedHeader = serde_json::from_str(r#""forwarded""#)?;
/// assert_eq!(header, ForwardedHeader::Forwarded);
/// assert_eq!(ForwardedHeader::default(), ForwardedHeader::XForwardedFor);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, written by nginx, HAProxy, Envoy and most load balancers (default).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=…` (RFC 7239).
    Forwarded,
}

/// The most forwarding entries kept, counted from the right. A chain of more trusted proxies
/// than this is refused rather than read further.
pub const MAX_HOPS: usize = 32;

/// Parses one forwarded node: an IPv4 address with an optional port, or an IPv6 address, bare
/// or in brackets with an optional port. Obfuscated identifiers (`_hidden`), `unknown` and
/// anything else give `None`.
///
/// ```
/// use polytomic_webhook_auth::allowlist::parse_node;
///
/// assert_eq!(parse_node("192.0.2.43"), Some("192.0.2.43".parse().unwrap()));
/// assert_eq!(parse_node("192.0.2.43:47011"), Some("192.0.2.43".parse().unwrap()));
/// assert_eq!(parse_node("[2001:db8:cafe::17]:4711"), Some("2001:db8:cafe::17".parse().unwrap()));
/// assert_eq!(parse_node("unknown"), None);
/// ```
pub fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches([' ', '\t']);
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|port| port.parse::<u16>().is_ok());
        return port_ok
            .then(|| address.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    text.parse::<IpAddr>().ok().or_else(|| {
        text.parse::<SocketAddrV4>()
            .ok()
            .map(|addr| IpAddr::V4(*addr.ip()))
    })
}

/// Parses the `for=` parameter of one `Forwarded` element (such as
/// `for="[2001:db8::1]:4711";proto=https`). `None` if it has no `for`, more than one, or an
/// unreadable one.
///
/// ```
/// use polytomic_webhook_auth::allowlist::parse_forwarded_element;
///
/// assert_eq!(
///     parse_forwarded_element(r#"For="[2001:db8::1]:4711";proto=https"#),
///     Some("2001:db8::1".parse().unwrap()),
/// );
/// assert_eq!(parse_forwarded_element("for=_hidden"), None);
/// assert_eq!(parse_forwarded_element("proto=https"), None);
/// ```
pub fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        if pair.trim().is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            found = Some(value.trim());
        }
    }
    let value = found?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    parse_node(value)
}

/// Splits `text` at `delimiter`, except inside double-quoted strings.
fn split_unquoted(text: &str, delimiter: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (index, byte) in text.bytes().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                quoted = !quoted;
            } else if byte == delimiter && !quoted {
                // `delimiter` is ASCII, so both slices start on character boundaries.
                rest = Some(&text[index + 1..]);
                return Some(&text[..index]);
            }
        }
        rest = None;
        Some(text)
    })
}

/// The rightmost forwarding entries, `None` for an unreadable one.
#[derive(Debug, Default)]
struct Hops {
    entries: VecDeque<Option<IpAddr>>,
    truncated: bool,
}

impl Hops {
    fn push(&mut self, hop: Option<IpAddr>) {
        if self.entries.len() == MAX_HOPS {
            self.entries.pop_front();
            self.truncated = true;
        }
        self.entries.push_back(hop);
    }

    fn from_headers(headers: &HeaderMap, header: ForwardedHeader) -> Self {
        let mut hops = Self::default();
        let (name, delimiter_aware) = match header {
            ForwardedHeader::Forwarded => (FORWARDED, true),
            ForwardedHeader::XForwardedFor => (X_FORWARDED_FOR, false),
        };
        for value in &headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                hops.push(None);
                continue;
            };
            if delimiter_aware {
                for element in split_unquoted(text, b',') {
                    if !element.trim().is_empty() {
                        hops.push(parse_forwarded_element(element));
                    }
                }
            } else {
                for entry in text.split(',') {
                    if !entry.trim().is_empty() {
                        hops.push(parse_node(entry));
                    }
                }
            }
        }
        hops
    }
}

/// The client address for a request whose connection came from `peer`.
pub(crate) fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &BlockList,
    header: ForwardedHeader,
) -> Result<IpAddr, SourceIpRejection> {
    if !trusted.contains(peer) {
        return Ok(peer);
    }
    let hops = Hops::from_headers(headers, header);
    let mut client = peer;
    for hop in hops.entries.iter().rev() {
        let Some(ip) = *hop else {
            return Err(SourceIpRejection::UntraceableClient);
        };
        client = ip;
        if !trusted.contains(ip) {
            return Ok(ip);
        }
    }
    if hops.truncated {
        Err(SourceIpRejection::UntraceableClient)
    } else {
        // Every hop is a trusted proxy: the leftmost is as close to the client as we can get.
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;
    use crate::allowlist::parse_block;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusted(blocks: &[&str]) -> BlockList {
        BlockList::new(blocks.iter().map(|block| parse_block(block).unwrap()))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn untrusted_peer_ignores_forwarding_headers() {
        let headers = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.2"),
        ]);
        let result = client_ip(ip("198.51.100.9"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("198.51.100.9")));
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right() {
        // The sender forged 1.1.1.1; the first proxy appended the sender's real address.
        let headers = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.2")]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn x_forwarded_for_across_several_header_lines() {
        let headers = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn forwarded_is_walked_from_the_right_when_configured() {
        let headers = headers(&[(
            "forwarded",
            r#"for=1.1.1.1, for="[2001:db8::5]:4711";proto=https"#,
        )]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(result, Ok(ip("2001:db8::5")));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // The proxy appends the sender's real address to X-Forwarded-For and passes the
        // sender's own `Forwarded` through: reading `Forwarded` would let it pick its address.
        let headers = headers(&[
            ("forwarded", "for=203.0.113.20"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("198.51.100.1")));
        // And the mirror case, for a proxy that writes `Forwarded`.
        let headers = self::headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "203.0.113.20"),
        ]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(result, Ok(ip("198.51.100.1")));
    }

    #[test]
    fn quoted_commas_do_not_split_forwarded_elements() {
        let headers = headers(&[("forwarded", r#"for=203.0.113.5;ext="a,b""#)]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn unreadable_hop_fails_closed() {
        for value in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=1.2.3.4;for=5.6.7.8",
        ] {
            let headers = headers(&[("forwarded", value)]);
            let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), FWD);
            assert_eq!(result, Err(SourceIpRejection::UntraceableClient), "{value}");
        }
        let headers = headers(&[("x-forwarded-for", "1.1.1.1, garbage")]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Err(SourceIpRejection::UntraceableClient));
    }

    #[test]
    fn unreadable_entries_left_of_the_client_do_not_matter() {
        let headers = headers(&[("x-forwarded-for", "garbage, 203.0.113.5")]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn trusted_proxy_without_forwarding_header_is_the_client() {
        let result = client_ip(
            ip("10.0.0.1"),
            &HeaderMap::new(),
            &trusted(&["10.0.0.0/8"]),
            XFF,
        );
        assert_eq!(result, Ok(ip("10.0.0.1")));
    }

    #[test]
    fn chain_of_only_trusted_proxies_yields_the_leftmost() {
        let headers = headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("10.0.0.3")));
    }

    #[test]
    fn overlong_trusted_chain_is_refused() {
        let chain = vec!["10.0.0.2"; MAX_HOPS + 1].join(",");
        let headers = headers(&[("x-forwarded-for", &chain)]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Err(SourceIpRejection::UntraceableClient));
        // A long forged prefix is irrelevant when an untrusted hop comes first from the right.
        let chain = format!("{},203.0.113.5", vec!["10.0.0.2"; 1000].join(","));
        let headers = self::headers(&[("x-forwarded-for", &chain)]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn mapped_proxy_addresses_are_trusted() {
        let headers = headers(&[("x-forwarded-for", "203.0.113.5")]);
        let result = client_ip(
            ip("::ffff:10.0.0.1"),
            &headers,
            &trusted(&["10.0.0.0/8"]),
            XFF,
        );
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    #[test]
    fn non_ascii_forwarding_header_fails_closed() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
        assert_eq!(result, Err(SourceIpRejection::UntraceableClient));
    }

    #[test]
    fn node_forms() {
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node(" 192.0.2.1 "), Some(ip("192.0.2.1")));
        for text in [
            "[2001:db8::1]:x",
            "[2001:db8::1",
            "[192.0.2.1]",
            "192.0.2.1:99999",
            "",
            "_x",
        ] {
            assert_eq!(parse_node(text), None, "{text}");
        }
    }

    #[test]
    fn forwarded_element_forms() {
        assert_eq!(
            parse_forwarded_element("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            parse_forwarded_element("for=192.0.2.60;"),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(parse_forwarded_element(r#"for="192.0.2.60"#), None);
        assert_eq!(parse_forwarded_element("for"), None);
    }
}

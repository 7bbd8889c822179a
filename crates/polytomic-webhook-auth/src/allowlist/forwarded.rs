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
//!
//! The header is believed only if all of it can be read: the sender writes the start of the
//! very line a proxy appends to, so a part the parser cannot read might be hiding the
//! proxy's entry.
//! The parsing functions are public so they can be tested and fuzzed on their own.

use std::borrow::Cow;
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
    let text = text.trim_matches(OWS);
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

/// Parses one `Forwarded` element (such as `for="[2001:db8::1]:4711";proto=https`) and returns
/// the address in its `for=` parameter.
///
/// `None` if the text is not exactly one well-formed element (an unterminated quoted string, an
/// escape with nothing after it, a pair without `=`, a second element after a comma), or if its
/// `for` is missing, repeated, `unknown`, obfuscated or not a node at all.
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
/// assert_eq!(parse_forwarded_element(r#"for=203.0.113.5;x=""#), None);
/// ```
pub fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    let mut hops = Vec::new();
    read_forwarded(element, |hop| hops.push(hop)).ok()?;
    match hops[..] {
        [hop] => hop,
        _ => None,
    }
}

/// Optional whitespace (RFC 9110's OWS).
const OWS: [char; 2] = [' ', '\t'];

/// The forwarding header cannot be read as a whole: some part of it is malformed.
///
/// Nothing in such a header is believed, not even the entries that look fine. A quote that is
/// never closed swallows everything after it, including what a trusted proxy appended to the
/// same line (as RFC 9110 lets it), so no reading of a malformed header is known to pick the
/// entry the proxy wrote.
#[derive(Debug)]
struct Unreadable;

/// Reads one node as a forwarding header writes it: `Some` address, `None` for a node that
/// is well-formed but names no address (`unknown` or an obfuscated identifier, RFC 7239
/// §6.2-6.3, with an optional port), and an error for anything else.
fn read_node(text: &str) -> Result<Option<IpAddr>, Unreadable> {
    if let Some(ip) = parse_node(text) {
        return Ok(Some(ip));
    }
    let text = text.trim_matches(OWS);
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    let name_ok = name.eq_ignore_ascii_case("unknown") || is_obfuscated(name);
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok() || is_obfuscated(port));
    if name_ok && port_ok {
        Ok(None)
    } else {
        Err(Unreadable)
    }
}

/// RFC 7239's `obfnode` / `obfport`: `_` and then letters, digits, `.`, `_` or `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    })
}

/// RFC 9110's `tchar`, the characters of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Reads one line of a `Forwarded` header (RFC 7239 §4), calling `hop` with each element's
/// `for` address in order, `None` for an element without a usable one.
///
/// Strict about structure: a pair is `token=token` or `token="quoted string"`, pairs are
/// separated by `;` and elements by `,` (whitespace allowed around both). An unquoted value
/// may also hold `:`, `[` and `]`, which proxies write unquoted although the RFC says to quote
/// them; those characters cannot end an element, so the leniency moves no boundary.
fn read_forwarded(text: &str, mut hop: impl FnMut(Option<IpAddr>)) -> Result<(), Unreadable> {
    let mut reader = Reader { text, at: 0 };
    loop {
        let mut pairs = 0_usize;
        let mut node = None;
        loop {
            reader.skip_ows();
            match reader.peek() {
                None | Some(b',') => break,
                Some(b';') => {
                    reader.at += 1;
                    continue;
                }
                Some(_) => {}
            }
            let name = reader.token()?;
            if reader.peek() != Some(b'=') {
                return Err(Unreadable);
            }
            reader.at += 1;
            let value = reader.value()?;
            pairs += 1;
            if name.eq_ignore_ascii_case("for") {
                // RFC 7239 allows each parameter once per element; two `for`s name no one.
                if node.is_some() {
                    return Err(Unreadable);
                }
                node = Some(read_node(&value)?);
            }
            reader.skip_ows();
            match reader.peek() {
                None | Some(b',' | b';') => {}
                Some(_) => return Err(Unreadable),
            }
        }
        // Empty list elements (`a, , b`) are allowed by the list syntax and name no hop.
        if pairs > 0 {
            hop(node.flatten());
        }
        if reader.peek().is_none() {
            return Ok(());
        }
        reader.at += 1; // The `,`.
    }
}

/// A cursor over a header value. It only ever stops on ASCII bytes, so every slice it takes
/// starts and ends on character boundaries.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// A run of bytes matching `accept`, at least one.
    fn run(&mut self, accept: impl Fn(u8) -> bool) -> Result<&'a str, Unreadable> {
        let start = self.at;
        while self.peek().is_some_and(&accept) {
            self.at += 1;
        }
        if self.at == start {
            return Err(Unreadable);
        }
        Ok(&self.text[start..self.at])
    }

    fn token(&mut self) -> Result<&'a str, Unreadable> {
        self.run(is_tchar)
    }

    /// A parameter value: a quoted string (unescaped) or an unquoted run.
    fn value(&mut self) -> Result<Cow<'a, str>, Unreadable> {
        if self.peek() != Some(b'"') {
            return self
                .run(|byte| is_tchar(byte) || matches!(byte, b':' | b'[' | b']'))
                .map(Cow::Borrowed);
        }
        self.at += 1;
        let start = self.at;
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            let Some(byte) = self.peek() else {
                return Err(Unreadable); // Never closed.
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let escaped = self
                        .peek()
                        .filter(|&byte| is_quoted_text(byte) || byte == b'"' || byte == b'\\');
                    let Some(escaped) = escaped else {
                        return Err(Unreadable); // An escape of nothing, or of a control byte.
                    };
                    self.at += 1;
                    unescaped
                        .get_or_insert_with(|| self.text.as_bytes()[start..self.at - 2].to_vec())
                        .push(escaped);
                }
                byte if is_quoted_text(byte) => {
                    if let Some(unescaped) = &mut unescaped {
                        unescaped.push(byte);
                    }
                }
                _ => return Err(Unreadable),
            }
        }
        match unescaped {
            // Only ASCII backslashes were removed, so the bytes are still UTF-8.
            Some(bytes) => String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|_| Unreadable),
            None => Ok(Cow::Borrowed(&self.text[start..self.at - 1])),
        }
    }
}

/// RFC 9110's `qdtext`: what a quoted string holds unescaped.
fn is_quoted_text(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..)
}

/// The rightmost forwarding entries, `None` for one that names no address.
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

    /// Every entry of every line of the header, in order, or `Unreadable` if any part of it is
    /// malformed.
    ///
    /// Each line is read on its own and must be well-formed: a well-formed line ends outside
    /// any quoted string, so reading the lines one by one gives the same entries as reading
    /// them joined with commas, as an intermediary may join them (RFC 9110 §5.3).
    fn from_headers(headers: &HeaderMap, header: ForwardedHeader) -> Result<Self, Unreadable> {
        let mut hops = Self::default();
        let name = match header {
            ForwardedHeader::Forwarded => FORWARDED,
            ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
        };
        for value in &headers.get_all(name) {
            let text = value.to_str().map_err(|_| Unreadable)?;
            match header {
                ForwardedHeader::Forwarded => read_forwarded(text, |hop| hops.push(hop))?,
                // No quoting here: every comma separates entries.
                ForwardedHeader::XForwardedFor => {
                    for entry in text.split(',') {
                        if !entry.trim_matches(OWS).is_empty() {
                            hops.push(read_node(entry)?);
                        }
                    }
                }
            }
        }
        Ok(hops)
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
    let hops = Hops::from_headers(headers, header)
        .map_err(|Unreadable| SourceIpRejection::UntraceableClient)?;
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
    fn addressless_entries_left_of_the_client_do_not_matter() {
        for value in ["unknown, 203.0.113.5", "_hidden:_port, 203.0.113.5"] {
            let headers = headers(&[("x-forwarded-for", value)]);
            let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), XFF);
            assert_eq!(result, Ok(ip("203.0.113.5")), "{value}");
        }
        let headers = headers(&[("forwarded", "for=unknown;proto=http, for=203.0.113.5")]);
        let result = client_ip(ip("10.0.0.1"), &headers, &trusted(&["10.0.0.0/8"]), FWD);
        assert_eq!(result, Ok(ip("203.0.113.5")));
    }

    /// The client found for a request from the trusted proxy 10.0.0.1 carrying `lines` of
    /// `header`.
    fn through_proxy(
        header: ForwardedHeader,
        lines: &[impl AsRef<str>],
    ) -> Result<IpAddr, SourceIpRejection> {
        let name = if header == FWD {
            "forwarded"
        } else {
            "x-forwarded-for"
        };
        let pairs: Vec<_> = lines.iter().map(|line| (name, line.as_ref())).collect();
        client_ip(
            ip("10.0.0.1"),
            &headers(&pairs),
            &trusted(&["10.0.0.0/8"]),
            header,
        )
    }

    /// The header lines when the proxy appends `appended` to the `client`'s value: on the same
    /// line after a comma, and on a line of its own.
    fn appended_both_ways(client: &str, appended: &str) -> [Vec<String>; 2] {
        [
            vec![format!("{client}, {appended}")],
            vec![client.to_owned(), appended.to_owned()],
        ]
    }

    #[test]
    fn garbage_anywhere_in_x_forwarded_for_makes_it_unreadable() {
        // Splitting at commas cannot be fooled, but a header part of which is not an address
        // list was written by something that does not follow the format; none of it is used.
        for client in [
            "garbage",
            r#""203.0.113.5""#,
            "203.0.113.5 198.51.100.2",
            "203.0.113.5;x",
        ] {
            for lines in appended_both_ways(client, "198.51.100.1") {
                let result = through_proxy(XFF, &lines);
                assert_eq!(
                    result,
                    Err(SourceIpRejection::UntraceableClient),
                    "{lines:?}"
                );
            }
        }
    }

    /// The client writes a `Forwarded` value that the trusted proxy's `, for=…` lands inside
    /// of, on the same line; or the proxy adds a line, which an intermediary may join.
    #[test]
    fn malformed_forwarded_makes_the_whole_header_unreadable() {
        for client in [
            r#"for=203.0.113.5;x=""#,
            r#"for=203.0.113.5;x="\""#,
            r#"for=203.0.113.5;x="abc\"#,
            r#"for=203.0.113.5;x="a"b"#,
            r"for=203.0.113.5;x=\",
            "for=203.0.113.5;x",
            "for=203.0.113.5;=1",
            "for=203.0.113.5;x=",
            "for=203.0.113.5 x=1",
            "for=203.0.113.5;for=203.0.113.6",
            "for=garbage",
            r#"for="""#,
        ] {
            for lines in appended_both_ways(client, "for=198.51.100.66") {
                let result = through_proxy(FWD, &lines);
                assert_eq!(
                    result,
                    Err(SourceIpRejection::UntraceableClient),
                    "{lines:?}"
                );
            }
        }
    }

    #[test]
    fn well_formed_client_values_leave_the_proxys_entry_in_charge() {
        for client in [
            r#"for=203.0.113.5;x="a,b""#,
            r#"for=203.0.113.5;x="a\"b, c""#,
            r#"for=203.0.113.5;x="\\""#,
            "for=203.0.113.5;;proto=https;",
            " , for=203.0.113.5 ; by=_proxy ,",
        ] {
            for lines in appended_both_ways(client, "for=198.51.100.66") {
                assert_eq!(
                    through_proxy(FWD, &lines),
                    Ok(ip("198.51.100.66")),
                    "{lines:?}"
                );
            }
        }
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

//! Property tests of the pure header parsers: arbitrary input never panics, and the accepted
//! forms round-trip.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{HeaderValue, Request};
use proptest::prelude::*;

use crate::allowlist::{
    ForwardedHeader, SourceIpAllowlistLayer, SourceIpRejection, X_FORWARDED_FOR, parse_block,
    parse_forwarded_element, parse_node,
};
use crate::authorization::{AuthorizationError, parse_bearer};
use crate::peer::{ClientIp, PeerAddr};
use crate::secret::{Secret, SecretSet};
use crate::timestamp::parse_timestamp;

/// A forwarding header value a hostile client might write: often an entry naming an allowed
/// address, then pieces strung together from the characters that matter to the syntax,
/// parameter names, addresses and noise.
fn hostile_header_value() -> impl Strategy<Value = String> {
    let start = prop_oneof![
        Just(""),
        Just("203.0.113.5"),
        Just("for=203.0.113.5"),
        Just("for=203.0.113.5;x="),
        Just("for=\"[2001:db8::1]:80\";"),
    ];
    let piece = prop_oneof![
        Just("for="),
        Just("203.0.113.5"),
        Just("[2001:db8::1]:80"),
        Just("\""),
        Just("\\"),
        Just(","),
        Just(";"),
        Just("="),
        Just(" "),
        Just("x"),
        Just("unknown"),
        Just("_hidden"),
    ];
    let noise = "[\t -~]{1,3}";
    let pieces =
        proptest::collection::vec(prop_oneof![piece.prop_map(str::to_owned), noise], 0..12);
    (start, pieces).prop_map(|(start, pieces)| format!("{start}{}", pieces.concat()))
}

/// What the allowlist decides for a request from the trusted proxy 10.0.0.1 carrying
/// `lines` of `header`, with 203.0.113.0/24 and 2001:db8::/32 allowed.
fn decide(header: ForwardedHeader, lines: &[String]) -> Result<IpAddr, SourceIpRejection> {
    let allowed = ["203.0.113.0/24", "2001:db8::/32"].map(|block| parse_block(block).unwrap());
    let layer = SourceIpAllowlistLayer::new(allowed)
        .trusted_proxies([parse_block("10.0.0.0/8").unwrap()])
        .forwarded_header(header);
    let name = match header {
        ForwardedHeader::Forwarded => http::header::FORWARDED,
        ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
    };
    let mut request = Request::new(());
    for line in lines {
        request
            .headers_mut()
            .append(name.clone(), HeaderValue::from_str(line).unwrap());
    }
    let peer: SocketAddr = "10.0.0.1:443".parse().unwrap();
    request.extensions_mut().insert(PeerAddr(peer));
    layer.check(&mut request)?;
    Ok(request.extensions().get::<ClientIp>().unwrap().0)
}

proptest! {
    /// Issue 12, point 1: whatever the client wrote, the entry its trusted proxy appended
    /// (on the same line after a comma, or on a line of its own) names the client, or the
    /// request is refused as untraceable. The client's own value never decides.
    #[test]
    fn the_proxys_entry_decides_or_the_request_is_refused(
        client_value in hostile_header_value(),
        forwarded in any::<bool>(),
        same_line in any::<bool>(),
        allowed in any::<bool>(),
        host in 1_u8..255,
    ) {
        let (header, entry_prefix) = if forwarded {
            (ForwardedHeader::Forwarded, "for=")
        } else {
            (ForwardedHeader::XForwardedFor, "")
        };
        let real = if allowed {
            Ipv4Addr::new(203, 0, 113, host)
        } else {
            Ipv4Addr::new(198, 51, 100, host)
        };
        let appended = format!("{entry_prefix}{real}");
        let lines = if same_line {
            vec![format!("{client_value}, {appended}")]
        } else {
            vec![client_value.clone(), appended]
        };
        match decide(header, &lines) {
            Ok(ip) => prop_assert_eq!(ip, IpAddr::V4(real), "{:?}", lines),
            Err(SourceIpRejection::NotAllowed { ip }) => {
                prop_assert!(!allowed);
                prop_assert_eq!(ip, IpAddr::V4(real), "{:?}", lines);
            }
            Err(rejection) => {
                prop_assert_eq!(rejection, SourceIpRejection::UntraceableClient, "{:?}", lines);
            }
        }
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_bearer(&bytes);
        let _ = parse_timestamp(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_node(&text);
        let _ = parse_forwarded_element(&text);
        let _ = parse_block(&text);
        let _ = Secret::new(text.as_ref());
    }

    #[test]
    fn bearer_token_round_trips(
        scheme in "[bB][eE][aA][rR][eE][rR]",
        spaces in " {1,4}",
        token in "[!-~]([ -~]{0,60}[!-~])?",
    ) {
        let value = format!("{scheme}{spaces}{token}");
        prop_assert_eq!(parse_bearer(value.as_bytes()), Ok(token.as_str()));
    }

    #[test]
    fn other_schemes_are_unsupported(scheme in "[A-Za-z]{1,10}", token in "[!-~]{1,20}") {
        prop_assume!(!scheme.eq_ignore_ascii_case("bearer"));
        let value = format!("{scheme} {token}");
        prop_assert_eq!(parse_bearer(value.as_bytes()), Err(AuthorizationError::UnsupportedScheme));
    }

    #[test]
    fn a_secret_matches_exactly_its_own_token(
        secret in "[!-~]{1,40}",
        other in "[!-~]{1,40}",
    ) {
        let set = SecretSet::new(Secret::new(secret.as_str()).unwrap());
        prop_assert!(set.matches(&secret));
        prop_assert_eq!(set.matches(&other), other == secret);
    }

    #[test]
    fn rfc_3339_timestamps_round_trip(seconds in 0_i64..253_402_300_799, nanos in 0_u32..1_000_000_000) {
        let at = chrono::DateTime::from_timestamp(seconds, nanos).unwrap();
        let text = at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        prop_assert_eq!(parse_timestamp(text.as_bytes()), Ok(at));
    }
}

//! Property tests of the pure header parsers: arbitrary input never panics, and the accepted
//! forms round-trip.

use proptest::prelude::*;

use crate::allowlist::{parse_block, parse_forwarded_element, parse_node};
use crate::authorization::{AuthorizationError, parse_bearer};
use crate::secret::{Secret, SecretSet};
use crate::timestamp::parse_timestamp;

proptest! {
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

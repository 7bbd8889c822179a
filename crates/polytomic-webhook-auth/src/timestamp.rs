//! The `Polytomic-Signature-Timestamp` header and the window of accepted delivery times.
//!
//! Polytomic stamps each delivery with the time it was created, as an RFC 3339 date-time such
//! as `2021-06-01T22:55:36Z`. Refusing deliveries stamped too long ago stops a delivery that
//! sat in a queue, was retried long after the fact, or was captured and sent again later, from
//! being processed as if it were fresh; refusing deliveries stamped in the future catches
//! badly skewed clocks.
//!
//! **The timestamp is not signed.** Polytomic authenticates deliveries only with the static
//! bearer secret, so anyone who holds the secret can send any timestamp they like. The window
//! protects against stale and replayed deliveries arising from ordinary failures, not against
//! an attacker who knows the secret.
//!
//! The parsing functions here are pure and return a typed [`TimestampError`], so they can be
//! tested and fuzzed on their own.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use http::header::{HeaderName, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue};
use polytomic_webhook_core::{__define_rejection, Problem};
use serde::{Deserialize, Deserializer};

use crate::authorization::CHALLENGE;

/// The `Polytomic-Signature-Timestamp` header name.
pub const SIGNATURE_TIMESTAMP: HeaderName =
    HeaderName::from_static("polytomic-signature-timestamp");

/// The longest header value parsed; an RFC 3339 date-time with nanoseconds and an offset is 35
/// bytes, so anything much longer is refused without parsing.
pub const MAX_TIMESTAMP_LEN: usize = 64;

/// When a delivery was created, according to its `Polytomic-Signature-Timestamp`.
///
/// The bearer layer inserts it into the request extensions once the header has been parsed, so
/// handlers and extractors can read it without parsing again.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use http::Request;
/// use polytomic_webhook_auth::DeliveredAt;
///
/// # let mut request = Request::new(());
/// # request.extensions_mut().insert(DeliveredAt(Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap()));
/// // In a handler or middleware after the bearer layer:
/// if let Some(DeliveredAt(at)) = request.extensions().get::<DeliveredAt>() {
///     assert_eq!(at.to_rfc3339(), "2021-06-01T22:55:36+00:00");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveredAt(pub DateTime<Utc>);

/// Reads the request's `Polytomic-Signature-Timestamp` header, `None` when absent.
///
/// More than one such header is malformed: there is no telling which one to trust.
///
/// ```
/// use http::HeaderMap;
/// use polytomic_webhook_auth::timestamp::{TimestampError, signature_timestamp};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(signature_timestamp(&headers), Ok(None));
/// headers.insert("polytomic-signature-timestamp", "2021-06-01T22:55:36Z".parse().unwrap());
/// assert_eq!(signature_timestamp(&headers).unwrap().unwrap().timestamp(), 1_622_588_136);
/// headers.append("polytomic-signature-timestamp", "2021-06-01T22:55:37Z".parse().unwrap());
/// assert_eq!(signature_timestamp(&headers), Err(TimestampError::Malformed));
/// ```
pub fn signature_timestamp(headers: &HeaderMap) -> Result<Option<DateTime<Utc>>, TimestampError> {
    let mut values = headers.get_all(&SIGNATURE_TIMESTAMP).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TimestampError::Malformed);
    }
    parse_timestamp(value.as_bytes()).map(Some)
}

/// Parses one header value as an RFC 3339 date-time.
///
/// Offsets and fractional seconds are accepted; epoch seconds, dates without a time, times
/// without an offset and other formats are [`TimestampError::Malformed`].
///
/// ```
/// use polytomic_webhook_auth::timestamp::{TimestampError, parse_timestamp};
///
/// let utc = parse_timestamp(b"2021-06-01T22:55:36Z")?;
/// assert_eq!(parse_timestamp(b"2021-06-02T00:55:36.000+02:00")?, utc);
/// assert_eq!(parse_timestamp(b"1622588136"), Err(TimestampError::Malformed));
/// assert_eq!(parse_timestamp(b"Tue, 01 Jun 2021 22:55:36 GMT"), Err(TimestampError::Malformed));
/// # Ok::<(), TimestampError>(())
/// ```
pub fn parse_timestamp(value: &[u8]) -> Result<DateTime<Utc>, TimestampError> {
    if value.len() > MAX_TIMESTAMP_LEN {
        return Err(TimestampError::Malformed);
    }
    let value = std::str::from_utf8(value).map_err(|_| TimestampError::Malformed)?;
    DateTime::parse_from_rfc3339(value.trim_matches([' ', '\t']))
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| TimestampError::Malformed)
}

/// How far a delivery's timestamp may lie from the receiver's clock.
///
/// A delivery stamped more than `max_age` before now is `timestamp_too_old`; one stamped more
/// than `max_future_skew` after now is `timestamp_in_future`. Both bounds are inclusive.
/// Deserializes from `{"max_age_secs": 300, "max_future_skew_secs": 60}`, either field
/// optional.
///
/// ```
/// use std::time::Duration;
/// use chrono::{TimeDelta, TimeZone, Utc};
/// use polytomic_webhook_auth::timestamp::{TimestampError, TimestampWindow};
///
/// let window = TimestampWindow::default();
/// assert_eq!(window.max_age, Duration::from_secs(300));
/// assert_eq!(window.max_future_skew, Duration::from_secs(60));
///
/// let now = Utc.with_ymd_and_hms(2021, 6, 1, 23, 0, 0).unwrap();
/// assert!(window.check(now - TimeDelta::seconds(300), now).is_ok());
/// assert!(matches!(
///     window.check(now - TimeDelta::seconds(301), now),
///     Err(TimestampError::TooOld { .. })
/// ));
/// assert!(matches!(
///     window.check(now + TimeDelta::seconds(61), now),
///     Err(TimestampError::InFuture { .. })
/// ));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampWindow {
    /// The oldest accepted timestamp, relative to now. Default: five minutes.
    #[serde(
        rename = "max_age_secs",
        default = "default_max_age",
        deserialize_with = "secs"
    )]
    pub max_age: Duration,
    /// The furthest accepted timestamp ahead of now. Default: one minute.
    #[serde(
        rename = "max_future_skew_secs",
        default = "default_max_future_skew",
        deserialize_with = "secs"
    )]
    pub max_future_skew: Duration,
}

const fn default_max_age() -> Duration {
    Duration::from_secs(5 * 60)
}

const fn default_max_future_skew() -> Duration {
    Duration::from_secs(60)
}

fn secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

impl Default for TimestampWindow {
    fn default() -> Self {
        Self::new(default_max_age(), default_max_future_skew())
    }
}

impl TimestampWindow {
    /// A window with the given bounds.
    pub const fn new(max_age: Duration, max_future_skew: Duration) -> Self {
        Self {
            max_age,
            max_future_skew,
        }
    }

    /// Checks `delivered` against `now`.
    pub fn check(
        &self,
        delivered: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TimestampError> {
        // Durations beyond chrono's range (hundreds of millions of years) mean "no bound".
        let max_age = TimeDelta::from_std(self.max_age).unwrap_or(TimeDelta::MAX);
        let max_future_skew = TimeDelta::from_std(self.max_future_skew).unwrap_or(TimeDelta::MAX);
        let age = now.signed_duration_since(delivered);
        if age > max_age {
            return Err(TimestampError::TooOld {
                age,
                max_age: self.max_age,
            });
        }
        let ahead = delivered.signed_duration_since(now);
        if ahead > max_future_skew {
            return Err(TimestampError::InFuture {
                ahead,
                max_future_skew: self.max_future_skew,
            });
        }
        Ok(())
    }
}

__define_rejection! {
    problem = Self::with_bounds;
    /// Why a delivery's timestamp was refused.
    ///
    /// All variants answer 401 with the bearer challenge: the delivery is not accepted as
    /// authentic.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum TimestampError {
        /// The header is absent but required (`missing_timestamp`).
        #[rejection(UNAUTHORIZED, "missing_timestamp")]
        Missing => "the request has no Polytomic-Signature-Timestamp header";
        /// The header is not one RFC 3339 date-time (`malformed_timestamp`).
        #[rejection(UNAUTHORIZED, "malformed_timestamp")]
        Malformed =>
            "the Polytomic-Signature-Timestamp header is not a single RFC 3339 date-time";
        /// The timestamp lies further in the past than allowed (`timestamp_too_old`).
        #[rejection(UNAUTHORIZED, "timestamp_too_old")]
        TooOld {
            /// How long before now the delivery is stamped.
            age: TimeDelta,
            /// The configured bound.
            max_age: Duration,
        } => "the delivery is stamped {} s in the past; at most {} s is accepted",
            age.num_seconds(), max_age.as_secs();
        /// The timestamp lies further in the future than allowed (`timestamp_in_future`).
        #[rejection(UNAUTHORIZED, "timestamp_in_future")]
        InFuture {
            /// How far after now the delivery is stamped.
            ahead: TimeDelta,
            /// The configured bound.
            max_future_skew: Duration,
        } => "the delivery is stamped {} s in the future; at most {} s is accepted",
            ahead.num_seconds(), max_future_skew.as_secs();
    }
}

impl TimestampError {
    /// The bearer challenge, and `max_age_secs` or `max_future_skew_secs` where they apply.
    fn with_bounds(&self, problem: Problem) -> Problem {
        let problem = problem.with_header(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        match self {
            Self::TooOld { max_age, .. } => problem.with_member("max_age_secs", max_age.as_secs()),
            Self::InFuture {
                max_future_skew, ..
            } => problem.with_member("max_future_skew_secs", max_future_skew.as_secs()),
            Self::Missing | Self::Malformed => problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 6, 1, h, m, s).unwrap()
    }

    #[test]
    fn accepts_rfc_3339_with_offsets_and_fractions() {
        let expected = at(22, 55, 36);
        for value in [
            "2021-06-01T22:55:36Z",
            "2021-06-01T22:55:36+00:00",
            "2021-06-01T18:55:36-04:00",
            "2021-06-01t22:55:36z",
            " 2021-06-01T22:55:36Z ",
        ] {
            assert_eq!(parse_timestamp(value.as_bytes()), Ok(expected), "{value}");
        }
        let fractional = parse_timestamp(b"2021-06-01T22:55:36.123456789Z").unwrap();
        assert_eq!(fractional.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn refuses_other_formats() {
        for value in [
            &b"1622588136"[..],
            b"2021-06-01",
            b"2021-06-01T22:55:36",
            b"Tue, 01 Jun 2021 22:55:36 GMT",
            b"2021-13-01T22:55:36Z",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_timestamp(value), Err(TimestampError::Malformed));
        }
        let long = format!("2021-06-01T22:55:36.{}Z", "1".repeat(100));
        assert_eq!(
            parse_timestamp(long.as_bytes()),
            Err(TimestampError::Malformed)
        );
    }

    #[test]
    fn window_bounds_are_inclusive_and_separate() {
        let window = TimestampWindow::new(Duration::from_secs(10), Duration::from_secs(2));
        let now = at(12, 0, 0);
        assert_eq!(window.check(now - TimeDelta::seconds(10), now), Ok(()));
        assert_eq!(window.check(now + TimeDelta::seconds(2), now), Ok(()));
        assert_eq!(
            window.check(now - TimeDelta::seconds(11), now),
            Err(TimestampError::TooOld {
                age: TimeDelta::seconds(11),
                max_age: Duration::from_secs(10)
            })
        );
        assert_eq!(
            window.check(now + TimeDelta::seconds(3), now),
            Err(TimestampError::InFuture {
                ahead: TimeDelta::seconds(3),
                max_future_skew: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn huge_bounds_do_not_overflow() {
        let window = TimestampWindow::new(Duration::MAX, Duration::MAX);
        let now = at(12, 0, 0);
        let ancient = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(window.check(ancient, now), Ok(()));
    }

    #[test]
    fn detail_says_by_how_much() {
        let error = TimestampError::TooOld {
            age: TimeDelta::seconds(412),
            max_age: Duration::from_secs(300),
        };
        assert_eq!(
            error.body_text(),
            "the delivery is stamped 412 s in the past; at most 300 s is accepted"
        );
        assert_eq!(error.to_problem().member("max_age_secs"), Some(&300.into()));
    }

    #[test]
    fn deserializes_seconds_with_defaults() {
        let window: TimestampWindow = serde_json::from_str(r#"{"max_age_secs": 120}"#).unwrap();
        assert_eq!(
            window,
            TimestampWindow::new(Duration::from_secs(120), Duration::from_secs(60))
        );
        let window: TimestampWindow = serde_json::from_str("{}").unwrap();
        assert_eq!(window, TimestampWindow::default());
        assert!(serde_json::from_str::<TimestampWindow>(r#"{"max_age": 1}"#).is_err());
    }
}

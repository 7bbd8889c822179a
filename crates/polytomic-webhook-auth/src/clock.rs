//! Where the timestamp window gets the current time from.
//!
//! The bearer layer asks a [`Clock`] for "now" once per request that carries a timestamp. The
//! default, [`SystemClock`], reads the system clock; tests and examples inject a
//! [`FixedClock`] or any `Fn() -> DateTime<Utc>` so they never sleep or race the clock.

use chrono::{DateTime, Utc};

/// A source of the current time.
///
/// Implemented by [`SystemClock`], [`FixedClock`] and every `Fn() -> DateTime<Utc>`.
///
/// ```
/// use chrono::{DateTime, TimeZone, Utc};
/// use polytomic_webhook_auth::Clock;
///
/// let clock = || Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap();
/// assert_eq!(clock.now().to_rfc3339(), "2021-06-01T22:55:36+00:00");
/// ```
pub trait Clock {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, [`Utc::now`].
///
/// ```
/// use polytomic_webhook_auth::{Clock, SystemClock};
///
/// assert!(SystemClock.now().timestamp() > 1_600_000_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant, for tests and documentation.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use polytomic_webhook_auth::{Clock, FixedClock};
///
/// let instant = Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap();
/// assert_eq!(FixedClock(instant).now(), instant);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc>,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

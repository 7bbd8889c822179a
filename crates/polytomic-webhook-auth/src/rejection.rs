//! Every way this crate's bearer layer refuses a request, as one type.

use polytomic_webhook_core::__composite_rejection;

use crate::authorization::AuthorizationError;
use crate::timestamp::TimestampError;

__composite_rejection! {
    /// Any rejection of the bearer layer.
    ///
    /// Each variant wraps the specific error; all of them render as `application/problem+json`
    /// with a stable `code`, and none of them carries any part of a presented token or
    /// configured secret. The allowlist refuses with its own
    /// [`SourceIpRejection`](crate::allowlist::SourceIpRejection), and the Events webhook's
    /// signature check with [`SignatureError`](crate::SignatureError).
    ///
    /// ```
    /// use polytomic_webhook_auth::AuthRejection;
    /// use polytomic_webhook_auth::authorization::AuthorizationError;
    ///
    /// let rejection = AuthRejection::from(AuthorizationError::Missing);
    /// assert_eq!(rejection.status(), 401);
    /// assert_eq!(rejection.code(), "missing_authorization");
    /// let response = rejection.to_problem().to_response();
    /// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="polytomic-webhook""#);
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum AuthRejection {
        /// The bearer credentials were missing or wrong.
        Authorization(AuthorizationError),
        /// The delivery timestamp was missing, malformed or outside the window.
        Timestamp(TimestampError),
    }
}

//! Rejections declared once: the [`Rejection`] trait and the macros every rejection family uses.
//!
//! A rejection is an error that answers with an RFC 9457 [`Problem`]. The families of the stack
//! (authorization, timestamp, signature, allowlist, decompression, event, store) are declared through
//! two macros modelled on axum-core's, so that each variant is listed once and its `Display`,
//! `Error`, `status()`, `code()`, `body_text()`, `to_problem()`, `IntoResponse` and, for
//! composites, `From` are generated from that list. One rejection is written by hand:
//! `UnknownEvent`, whose status (200 or 422) depends on the configured policy.
//!
//!
//! - `__define_rejection!` declares a leaf, either an enum whose variants each name their
//!   status, code and detail, or a hand-written struct with a fixed status and code whose
//!   `detail()` method says what went wrong;
//! - `__composite_rejection!` declares an enum wrapping one leaf per variant.
//!
//! The macros are exported only because the other crates of the workspace use them; they are
//! not part of the public API.

use std::error::Error;
use std::io;

use http::StatusCode;

use crate::body::BoxError;
use crate::problem::Problem;

/// An error that answers with an `application/problem+json` response.
///
/// Every rejection in the stack implements it, so code that answers requests itself (a
/// middleware, a plain hyper service) can turn any of them into the same response.
///
/// ```
/// use polytomic_webhook_core::Rejection;
/// use polytomic_webhook_core::body::{BoxError, InvalidCompressedBody};
///
/// fn answer(rejection: &dyn Rejection) -> http::Response<bytes::Bytes> {
///     rejection.to_problem().to_response()
/// }
///
/// let corrupt: BoxError = Box::new(std::io::Error::other("truncated"));
/// let response = answer(&InvalidCompressedBody::reading(corrupt));
/// assert_eq!(response.status(), 400);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
pub trait Rejection: Error {
    /// The HTTP status of the answer.
    fn status(&self) -> StatusCode;

    /// The stable machine-readable `code` of the problem.
    fn code(&self) -> &'static str;

    /// The problem the rejection answers with.
    fn to_problem(&self) -> Problem;
}

/// The field a struct rejection names as its `source`, whatever error type it holds.
#[doc(hidden)]
pub trait ErrorSource {
    fn error_source(&self) -> Option<&(dyn Error + 'static)>;
}

impl ErrorSource for BoxError {
    fn error_source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&**self)
    }
}

impl ErrorSource for Option<BoxError> {
    fn error_source(&self) -> Option<&(dyn Error + 'static)> {
        self.as_ref().and_then(ErrorSource::error_source)
    }
}

impl ErrorSource for io::Error {
    fn error_source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

impl ErrorSource for serde_json::Error {
    fn error_source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

/// Private API: declares a leaf rejection.
///
/// The enum form lists each variant once, with its status, `code` and the format of its
/// `detail`; struct and tuple variants name their fields so the format arguments can use them:
///
/// ```text
/// __define_rejection! {
///     [problem = Self::with_challenge;]   // optional: adds headers or members
///     /// docs, derives, #[non_exhaustive]
///     pub enum Name {
///         /// docs
///         #[rejection(UNAUTHORIZED, "code")]
///         Unit => "detail";
///         #[rejection(FORBIDDEN, "code")]
///         Fields { ip: IpAddr } => "detail {ip}";
///         #[rejection(BAD_REQUEST, "code")]
///         Tuple(inner: Inner) => "{}", inner.text();
///     }
/// }
/// ```
///
/// The struct form implements a hand-written struct whose `detail(&self) -> String` method
/// gives the `detail`: `__define_rejection!(Name: STATUS, "code" [, source = field]
/// [, problem = path]);`. It also defines the `CODE` constant.
#[doc(hidden)]
#[macro_export]
macro_rules! __define_rejection {
    (
        $(problem = $extend:path;)?
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[doc = $doc:literal])*
                #[rejection($status:ident, $code:expr)]
                $variant:ident
                    $({ $($(#[doc = $field_doc:literal])* $field:ident : $field_ty:ty),* $(,)? })?
                    $(( $($tuple_field:ident : $tuple_ty:ty),* $(,)? ))?
                    => $format:literal $(, $arg:expr)* ;
            )+
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $(
                $(#[doc = $doc])*
                $variant
                    $({ $($(#[doc = $field_doc])* $field : $field_ty),* })?
                    $(( $($tuple_ty),* ))?,
            )+
        }

        impl $name {
            /// The HTTP status of the answer.
            #[allow(clippy::match_same_arms)]
            pub fn status(&self) -> $crate::__private::http::StatusCode {
                match self {
                    $(Self::$variant { .. } => $crate::__private::http::StatusCode::$status,)+
                }
            }

            /// The stable problem `code`.
            #[allow(clippy::match_same_arms)]
            pub fn code(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $code,)+
                }
            }

            /// The human-readable detail.
            pub fn body_text(&self) -> String {
                self.to_string()
            }

            /// The problem the rejection answers with.
            pub fn to_problem(&self) -> $crate::Problem {
                let problem = $crate::Problem::new(self.status(), self.code(), self.body_text());
                $(let problem = $extend(self, problem);)?
                problem
            }
        }

        impl ::std::fmt::Display for $name {
            #[allow(unused_variables)]
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self {
                    $(
                        Self::$variant $({ $($field),* })? $(( $($tuple_field),* ))? => {
                            write!(f, $format $(, $arg)*)
                        }
                    )+
                }
            }
        }

        impl ::std::error::Error for $name {}

        $crate::__rejection_responses!($name);
    };

    (
        $name:ident : $status:ident, $code:literal
        $(, source = $source:ident)?
        $(, problem = $extend:path)?
        $(,)?
    ) => {
        impl $name {
            /// The stable `code` of the problem body.
            pub const CODE: &'static str = $code;

            /// The HTTP status of the rejection.
            pub fn status(&self) -> $crate::__private::http::StatusCode {
                $crate::__private::http::StatusCode::$status
            }

            /// The stable `code` of the problem body.
            pub fn code(&self) -> &'static str {
                $code
            }

            /// The human-readable explanation (the problem's `detail`).
            pub fn body_text(&self) -> String {
                self.detail()
            }

            /// The problem this rejection answers with.
            pub fn to_problem(&self) -> $crate::Problem {
                let problem = $crate::Problem::new(self.status(), $code, self.detail());
                $(let problem = $extend(self, problem);)?
                problem
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.detail())
            }
        }

        impl ::std::error::Error for $name {
            $(
                fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                    $crate::rejection::ErrorSource::error_source(&self.$source)
                }
            )?
        }

        $crate::__rejection_responses!($name);
    };
}

/// Private API: declares an enum with one leaf rejection per variant, and forwards everything
/// to the variant's leaf.
///
/// `source()` gives the leaf's source rather than the leaf itself: `Display` already shows the
/// leaf, and an error chain should not print the same text twice.
#[doc(hidden)]
#[macro_export]
macro_rules! __composite_rejection {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $variant:ident($inner:ty)
            ),+
            $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $(
                $(#[doc = $doc])*
                $variant($inner),
            )+
        }

        impl $name {
            /// The HTTP status of the answer.
            pub fn status(&self) -> $crate::__private::http::StatusCode {
                match self {
                    $(Self::$variant(inner) => inner.status(),)+
                }
            }

            /// The stable problem `code`.
            pub fn code(&self) -> &'static str {
                match self {
                    $(Self::$variant(inner) => inner.code(),)+
                }
            }

            /// The human-readable detail (what the leaf says it is).
            pub fn body_text(&self) -> String {
                match self {
                    $(Self::$variant(inner) => inner.body_text(),)+
                }
            }

            /// The problem response, for code that answers with it itself.
            pub fn to_problem(&self) -> $crate::Problem {
                match self {
                    $(Self::$variant(inner) => inner.to_problem(),)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self {
                    $(Self::$variant(inner) => ::std::fmt::Display::fmt(inner, f),)+
                }
            }
        }

        impl ::std::error::Error for $name {
            fn source(&self) -> Option<&(dyn ::std::error::Error + 'static)> {
                match self {
                    $(Self::$variant(inner) => ::std::error::Error::source(inner),)+
                }
            }
        }

        $(
            impl From<$inner> for $name {
                fn from(inner: $inner) -> Self {
                    Self::$variant(inner)
                }
            }
        )+

        impl $crate::__private::axum_core::response::IntoResponse for $name {
            fn into_response(self) -> $crate::__private::axum_core::response::Response {
                match self {
                    $(
                        Self::$variant(inner) => {
                            $crate::__private::axum_core::response::IntoResponse::into_response(
                                inner,
                            )
                        }
                    )+
                }
            }
        }

        $crate::__rejection_trait!($name);
    };
}

/// Private API: `IntoResponse` through the problem, and the [`Rejection`] trait, for a leaf.
#[doc(hidden)]
#[macro_export]
macro_rules! __rejection_responses {
    ($name:ident) => {
        impl $crate::__private::axum_core::response::IntoResponse for $name {
            fn into_response(self) -> $crate::__private::axum_core::response::Response {
                $crate::__private::axum_core::response::IntoResponse::into_response(
                    self.to_problem(),
                )
            }
        }

        $crate::__rejection_trait!($name);
    };
}

/// Private API: the [`Rejection`] trait, through the type's own methods.
#[doc(hidden)]
#[macro_export]
macro_rules! __rejection_trait {
    ($name:ident) => {
        impl $crate::Rejection for $name {
            fn status(&self) -> $crate::__private::http::StatusCode {
                Self::status(self)
            }

            fn code(&self) -> &'static str {
                Self::code(self)
            }

            fn to_problem(&self) -> $crate::Problem {
                Self::to_problem(self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use axum_core::response::IntoResponse;
    use http::header::{HeaderValue, WWW_AUTHENTICATE};

    use super::*;
    use crate::PROBLEM_JSON;

    // The macros expand to `pub` items, as they do in the crates that use them.
    #[allow(unreachable_pub)]
    mod defs {
        use super::*;

        crate::__define_rejection! {
            problem = Self::challenge;
            /// A family of three.
            #[derive(Debug, PartialEq)]
            pub enum Credentials {
                /// Nothing sent.
                #[rejection(UNAUTHORIZED, "missing")]
                Missing => "nothing was sent";
                /// Sent from the wrong place.
                #[rejection(FORBIDDEN, "not_allowed")]
                NotAllowed {
                    /// Where from.
                    from: &'static str,
                } => "requests from {from} are not allowed";
                /// Too many.
                #[rejection(PAYLOAD_TOO_LARGE, "too_many")]
                TooMany(count: u32) => "{} is too many", count + 1;
            }
        }

        impl Credentials {
            fn challenge(&self, problem: Problem) -> Problem {
                match self {
                    Self::Missing => {
                        problem.with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
                    }
                    Self::NotAllowed { .. } | Self::TooMany(_) => problem,
                }
            }
        }

        /// A leaf with a source.
        #[derive(Debug)]
        pub struct Unreadable {
            pub(super) source: BoxError,
        }

        impl Unreadable {
            fn detail(&self) -> String {
                format!("unreadable: {}", self.source)
            }

            fn with_members(&self, problem: Problem) -> Problem {
                problem.with_member("kind", "read")
            }
        }

        crate::__define_rejection!(Unreadable: BAD_REQUEST, "unreadable", source = source,
            problem = Self::with_members);

        crate::__composite_rejection! {
            /// Both.
            #[derive(Debug)]
            pub enum Outer {
                /// See [`Credentials`].
                Credentials(Credentials),
                /// See [`Unreadable`].
                Unreadable(Unreadable),
            }
        }
    }

    use defs::{Credentials, Outer, Unreadable};

    #[test]
    fn enum_variants_give_their_status_code_and_detail() {
        let missing = Credentials::Missing;
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.code(), "missing");
        assert_eq!(missing.body_text(), "nothing was sent");
        assert_eq!(missing.to_problem().headers()[WWW_AUTHENTICATE], "Bearer");

        let refused = Credentials::NotAllowed {
            from: "203.0.113.9",
        };
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.code(), "not_allowed");
        assert_eq!(
            refused.to_string(),
            "requests from 203.0.113.9 are not allowed"
        );
        assert!(refused.to_problem().headers().is_empty());

        let many = Credentials::TooMany(6);
        assert_eq!(many.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(many.to_problem().detail(), "7 is too many");
        assert!(many.source().is_none());
    }

    #[test]
    fn struct_leaf_keeps_its_source_and_members() {
        let leaf = Unreadable {
            source: Box::new(io::Error::other("reset")),
        };
        assert_eq!(Unreadable::CODE, "unreadable");
        assert_eq!(leaf.status(), StatusCode::BAD_REQUEST);
        assert_eq!(leaf.to_string(), "unreadable: reset");
        assert_eq!(leaf.source().map(ToString::to_string), Some("reset".into()));
        let problem = leaf.to_problem();
        assert_eq!(problem.member("kind").unwrap(), "read");
        assert_eq!(problem.detail(), "unreadable: reset");
    }

    #[test]
    fn composite_converts_forwards_and_skips_itself_in_the_source_chain() {
        let outer = Outer::from(Credentials::NotAllowed { from: "x" });
        assert!(matches!(outer, Outer::Credentials(_)));
        assert_eq!(outer.status(), StatusCode::FORBIDDEN);
        assert_eq!(outer.code(), "not_allowed");
        assert_eq!(outer.body_text(), "requests from x are not allowed");
        assert_eq!(outer.to_string(), outer.body_text());
        assert!(outer.source().is_none());

        let outer = Outer::from(Unreadable {
            source: Box::new(io::Error::other("reset")),
        });
        // The chain goes straight to the leaf's cause: the leaf's text is already `Display`.
        assert_eq!(outer.source().unwrap().to_string(), "reset");
        assert_eq!(outer.to_problem().member("kind").unwrap(), "read");
        let rejection: &dyn Rejection = &outer;
        assert_eq!(rejection.code(), "unreadable");
        assert_eq!(rejection.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn into_response_is_the_problem_response() {
        let response = Outer::from(Credentials::Missing).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            response
                .extensions()
                .get::<crate::ProblemCode>()
                .map(crate::ProblemCode::as_str),
            Some("missing")
        );
    }
}

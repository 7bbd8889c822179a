//! Shared pieces of the `polytomic-webhook` stack.
//!
//! Every middleware and the extractor in the stack reject bad deliveries the same way: an
//! `application/problem+json` body (RFC 9457) with a stable `code`. This crate holds the one
//! implementation of that format ([`problem`]), the generic response future and body that let a
//! middleware answer early without boxing ([`response`]), the [`Rejection`] trait with the
//! macros every rejection family is declared with ([`rejection`]), the check trait and service
//! that every stage is built from ([`check`], with [`drain`], [`timeout`] and [`peer`]), and the
//! vocabulary that a decoding body and the extractor share about size limits and corrupt data
//! ([`body`]).
//!
//! Users normally depend on the `polytomic-webhook` crate, which re-exports what they need.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod check;
pub mod drain;
#[cfg(feature = "testing")]
pub mod logs;
pub mod peer;
pub mod problem;
pub mod rejection;
pub mod response;
pub mod timeout;

pub use problem::{PROBLEM_JSON, Problem, ProblemCode};
pub use rejection::Rejection;

/// What the rejection macros expand to, so the crates using them need no dependency of their own.
#[doc(hidden)]
pub mod __private {
    pub use axum_core;
    pub use http;
}

/// Defines `get_ref`, `get_mut` and `into_inner` in an `impl` block of a middleware service
/// whose wrapped service is its field `inner`, as tower-http's services have.
///
/// Not part of the API: a macro shared by the stack's crates must be exported, so it is hidden
/// instead, and may change in any release.
///
/// ```
/// struct Logging<S> {
///     inner: S,
/// }
///
/// impl<S> Logging<S> {
///     polytomic_webhook_core::inner_service_accessors!();
/// }
///
/// let mut service = Logging { inner: 7 };
/// *service.get_mut() += 1;
/// assert_eq!(*service.get_ref(), 8);
/// assert_eq!(service.into_inner(), 8);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! inner_service_accessors {
    () => {
        /// The wrapped service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The wrapped service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

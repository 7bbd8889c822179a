//! Shared pieces of the `polytomic-webhook` stack.
//!
//! Every middleware and the extractor in the stack reject bad deliveries the same way: an
//! `application/problem+json` body (RFC 9457) with a stable `code`. This crate holds the one
//! implementation of that format ([`problem`]), the generic response future and body that let a
//! middleware answer early without boxing ([`response`]), and the vocabulary that a decoding
//! body and the extractor share about size limits and corrupt data ([`body`]).
//!
//! Users normally depend on the `polytomic-webhook` crate, which re-exports what they need.

#![forbid(unsafe_code)]

pub mod body;
pub mod problem;
pub mod response;

pub use problem::{PROBLEM_JSON, Problem, ProblemCode};

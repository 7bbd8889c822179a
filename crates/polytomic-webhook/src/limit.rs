//! Bounds on the whole server rather than on one request.

/// The problem `code` of a delivery refused because the server is at one of its bounds.
pub const OVERLOADED: &str = "overloaded";

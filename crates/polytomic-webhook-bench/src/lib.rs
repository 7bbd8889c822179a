//! Benchmarks of the polytomic-webhook stack (not published).
//!
//! Every pipeline handles the identical gzipped `sync.records` delivery; see this crate's
//! README.md for the figures and how to reproduce them:
//!
//! - `cargo bench -p polytomic-webhook-bench`: Criterion, one pipeline at a time;
//! - `cargo run --release -p polytomic-webhook-bench --bin report`: every pipeline interleaved
//!   in one process (the ratios to trust on a shared machine), the decompression-bomb cost, the
//!   heap of hostile body shapes, the Events route and the loopback server throughput.

#![forbid(unsafe_code)]

pub mod bomb;
pub mod events;
pub mod hostile;
pub mod payload;
pub mod pipelines;
pub mod server;

//! [`TimeoutBody`]: a deadline for receiving the whole request body, from the core crate so
//! that the stage layers apply the same one.

pub use polytomic_webhook_core::timeout::TimeoutBody;

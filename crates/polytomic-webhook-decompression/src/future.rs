//! The response future of [`Decompression`](crate::Decompression).

/// Response future of [`Decompression`](crate::Decompression): the inner service's response,
/// or a 413/415 problem when the request was refused before reaching it.
/// `B` is the request body type.
pub type ResponseFuture<F, B> =
    polytomic_webhook_core::check::CheckFuture<F, polytomic_webhook_core::timeout::TimeoutBody<B>>;

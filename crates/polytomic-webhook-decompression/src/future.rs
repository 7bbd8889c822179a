//! The response future of [`Decompression`](crate::Decompression).

/// Response future of [`Decompression`](crate::Decompression): the inner service's response,
/// or a 413/415 problem when the request was refused before reaching it.
pub type ResponseFuture<F> = polytomic_webhook_core::response::ResponseFuture<F>;

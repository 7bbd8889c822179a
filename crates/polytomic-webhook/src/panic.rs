//! [`handler_panicked`]: the answer to a handler that panicked.

use std::any::Any;

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use polytomic_webhook_core::Problem;

use crate::metrics::HANDLER_PANICKED;

/// The answer to a handler that panicked, for tower-http's `CatchPanicLayer::custom`: 500
/// `handler_panicked` as problem+json, so Polytomic marks the sync failed (the batch was not
/// kept) and shows a reason, and the layer's metrics count the delivery as `panicked`.
///
/// The panic message goes to the log only (`error`): it may describe the application's
/// internals, and the answer is for the sender.
///
/// Put the catch-panic layer inside [`PolytomicWebhookLayer`](crate::PolytomicWebhookLayer):
/// outside, a panic would unwind through the delivery's span before it records an outcome.
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook::handler_panicked;
/// use polytomic_webhook::prelude::*;
/// use tower_http::catch_panic::CatchPanicLayer;
///
/// async fn receive(batch: SyncRecords) -> Ack {
///     Ack::from(&batch)
/// }
///
/// let config = PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?);
/// let app: Router = Router::new()
///     .route("/webhooks/polytomic", post(receive))
///     .route_layer(CatchPanicLayer::custom(handler_panicked))
///     .route_layer(PolytomicWebhookLayer::new(config)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature `CatchPanicLayer::custom` calls"
)]
pub fn handler_panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "the webhook handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        HANDLER_PANICKED,
        "The receiving application failed while handling this batch.",
    )
    .into_response()
}

//! Plain hyper: the layer in a `tower::ServiceBuilder` around a `service_fn`, no framework.
//!
//! ```sh
//! POLYTOMIC_WEBHOOK_SECRET=the-connection-secret cargo run --example hyper_service
//! ```
//!
//! The server (`examples::serve_hyper`, in `src/lib.rs`) runs `PolytomicWebhookLayer` around a
//! `service_fn` that hands the request to `polytomic_webhook::event::read`, which reads the
//! decompressed body and parses it. The library's `server::serve` loop serves it,
//! HTTP/1 and HTTP/2 with `hyper-util`'s auto builder: per connection it records the peer
//! address as a `PeerAddr` extension (hyper does not, and an allowlist needs it), and it closes
//! a connection whose client does not send a request's headers within 10 seconds. The same
//! server-wide bounds as the receiver's route apply (`POLYTOMIC_WEBHOOK_MAX_IN_FLIGHT` and the
//! other variables `startup::server_limits` reads). A refusal of the parser becomes its
//! response through `IntoResponse`, exactly as the axum extractor would answer.
//!
//! `POLYTOMIC_WEBHOOK_ADDR` sets the address (default `127.0.0.1:3000`); every path is the
//! webhook here.

use std::error::Error;

use examples::{init_logging, listen_addr, serve_hyper, shutdown_signal, startup};
use polytomic_webhook::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    init_logging();
    let secret = startup::required_secret_var(startup::SECRET_VAR)?;
    let layer = PolytomicWebhookLayer::new(PolytomicWebhookConfig::default().secret(secret))?;
    let limits = startup::server_limits()?;

    let listener = startup::bind(listen_addr()?).await?;
    let shutdown = shutdown_signal();
    tracing::info!("listening on http://{}", listener.local_addr()?);
    serve_hyper(
        listener,
        layer,
        examples::sync_sink(|batch| {
            tracing::info!(records = batch.len(), "stored a batch");
            Ok(())
        }),
        &limits,
        shutdown,
    )
    .await;
    Ok(())
}

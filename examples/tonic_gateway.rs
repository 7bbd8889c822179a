//! A tonic gateway: gRPC services and the Polytomic webhook on one port.
//!
//! ```sh
//! POLYTOMIC_WEBHOOK_SECRET=the-connection-secret cargo run --example tonic_gateway
//! ```
//!
//! tonic's `Routes` is an axum `Router` underneath, so the webhook route merges into it; the
//! layer is applied to the webhook route only, and gRPC calls never see it. Here the gRPC side
//! is the standard health service (`grpc.health.v1.Health`, from `tonic-health`); add your
//! own generated services with `Routes::add_service` the same way. The library's server loop
//! (`polytomic_webhook::server::serve`) speaks HTTP/1 and HTTP/2 cleartext on the port, which
//! gRPC clients need, and closes connections that are slow to send a request head.
//!
//! `POLYTOMIC_WEBHOOK_ADDR` sets the address (default `127.0.0.1:3000`). Accepted batches are
//! logged with their record count; see the `receiver` example for printing them.

use std::error::Error;

use examples::{
    ServeOptions, WEBHOOK_PATH, init_logging, listen_addr, serve, shutdown_signal, startup,
    tonic_gateway,
};
use polytomic_webhook::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    init_logging();
    let secret = startup::required_secret_var(startup::SECRET_VAR)?;
    let layer = PolytomicWebhookLayer::new(PolytomicWebhookConfig::default().secret(secret))?;
    let (app, _health) = tonic_gateway(
        layer,
        examples::sync_sink(|batch| {
            tracing::info!(records = batch.len(), "stored a batch");
            Ok(())
        }),
    );

    let listener = startup::bind(listen_addr()?).await?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal();
    tracing::info!("gRPC and http://{addr}{WEBHOOK_PATH} on one port");
    serve(listener, app, ServeOptions::default(), shutdown).await;
    Ok(())
}

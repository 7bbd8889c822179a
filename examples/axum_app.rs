//! A complete axum receiver: `POLYTOMIC_WEBHOOK_SECRET=… cargo run --example axum_app`.

use std::net::SocketAddr;

use axum::{Router, routing::post};
use polytomic_webhook::prelude::*;

/// Runs only for a valid batch. Keep it before answering: a 200 tells Polytomic the batch is
/// delivered (answer a 5xx instead if it could not be stored).
async fn receive(batch: SyncRecords) -> Ack {
    for record in &batch {
        let (_hash, _fields) = (record.hash(), record.fields()); // store the record here
    }
    Ack::from(&batch) // 200 {"accepted": <records>}
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One line per delivery, refusals included (nothing else would show why a request got 401).
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .init();

    let secret = std::env::var("POLYTOMIC_WEBHOOK_SECRET")
        .map_err(|_| "set POLYTOMIC_WEBHOOK_SECRET to the webhook connection's secret")?;
    let config = PolytomicWebhookConfig::default().secret(Secret::new(secret)?);
    let app = Router::new()
        .route("/webhooks/polytomic", post(receive))
        .route_layer(PolytomicWebhookLayer::new(config)?);

    let addr = std::env::var("POLYTOMIC_WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "listening on http://{}/webhooks/polytomic",
        listener.local_addr()?
    );
    // With the peer address, which an allowlist (if configured) needs.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

//! The receiver: an axum server that accepts Polytomic deliveries on `POST /webhooks/polytomic`.
//!
//! For now it decodes the body (gzip with or without `Content-Encoding`, within limits) and
//! prints each accepted JSON document as one compact line on stdout. Authentication and the
//! typed extractor join as their crates land.
//!
//! ```sh
//! cargo run --release --example receiver
//! ```
//!
//! `POLYTOMIC_WEBHOOK_ADDR` sets the listening address (default `127.0.0.1:3000`).

use std::io::Write;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use polytomic_webhook_decompression::DecompressionLayer;

async fn receive(body: Bytes) -> (StatusCode, &'static str) {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON\n");
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout is the operator's business, not the sender's: still acknowledge.
    let _ = writeln!(stdout, "{document}").and_then(|()| stdout.flush());
    (StatusCode::OK, "{}\n")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address =
        std::env::var("POLYTOMIC_WEBHOOK_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let app = Router::new()
        .route(
            "/webhooks/polytomic",
            post(receive).layer(DecompressionLayer::new()),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

//! A ready server loop (feature `server`): HTTP/1 and HTTP/2 on one port with hyper, a deadline
//! for request headers, and graceful shutdown.
//!
//! `axum::serve` has no header-read deadline, so a client that opens a connection and sends
//! half a request head holds it for as long as it likes. [`serve`] closes such a connection
//! after the `header_read_timeout` it is given ([`HEADER_READ_TIMEOUT`] is a sensible one),
//! and records each connection's peer as a [`PeerAddr`] extension so an allowlist can see it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::Router;
//! use axum::routing::post;
//! use polytomic_webhook::prelude::*;
//! use polytomic_webhook::server::{HEADER_READ_TIMEOUT, serve, shutdown_signal};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! async fn receive(batch: SyncRecords) -> Ack {
//!     Ack::from(&batch)
//! }
//!
//! let layer = PolytomicWebhookLayer::new(
//!     PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?),
//! )?;
//! let app = Router::new()
//!     .route("/webhooks/polytomic", post(receive))
//!     .layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Before anyone is told the server is up: see `shutdown_signal`.
//! let shutdown = shutdown_signal();
//! println!("listening on http://127.0.0.1:3000");
//! serve(listener, app, HEADER_READ_TIMEOUT, shutdown).await;
//! # Ok(())
//! # }
//! ```

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use polytomic_webhook_auth::PeerAddr;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// Completes on Ctrl-C or, on Unix, SIGTERM, whichever comes first: the `shutdown` to give
/// [`serve`] for a graceful stop.
///
/// The signal handlers are installed when this function is called, not when the future is
/// first polled. Call it before saying that the server is listening: a SIGTERM that arrives
/// before any handler is installed gets the default action, which ends the process at once and
/// resets every open connection, the requests in flight included. Call it inside a tokio
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        [
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ]
    };
    async move {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = signals.map(|signal| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for a shutdown signal");
                        std::future::pending::<()>().await;
                    }
                }
            });
            tokio::select! {
                () = interrupt => {}
                () = terminate => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing the requests in flight");
    }
}

/// How long a client may take to send a request's head (request line and headers) before its
/// connection is closed: Polytomic sends its few headers at once, so this is generous.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` on every connection `listener` accepts, HTTP/1 and HTTP/2 (cleartext, prior
/// knowledge), until `shutdown` completes; then stops accepting and waits for the connections
/// in flight to finish their requests.
///
/// A client gets `header_read_timeout` to send its first byte, and then the same again for
/// each HTTP/1 request head, from the moment the server waits for it (an idle keep-alive
/// connection included); otherwise its connection is closed without an answer. Each request
/// carries the connection's peer as a [`PeerAddr`] extension; axum's `ConnectInfo` is not set.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: not fatal, but retrying at once would spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(WithPeer {
            inner: service.clone(),
            peer: remote,
        });
        let server = server.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if !sends_within(&stream, header_read_timeout).await {
                return;
            }
            let connection = server.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// Whether the client sends a first byte within `timeout`. hyper tells HTTP/1 from HTTP/2 by
/// the first bytes, and its header deadline only starts once it knows: a client that sends
/// nothing at all would hold the connection without this.
async fn sends_within(stream: &TcpStream, timeout: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut first)).await,
        Ok(Ok(1..))
    )
}

/// Inserts the connection's peer into each request, since hyper does not record it.
#[derive(Clone, Debug)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(request)
    }
}

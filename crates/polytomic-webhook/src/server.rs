//! A ready server loop (feature `server`): HTTP/1 and HTTP/2 on one port with hyper, a deadline
//! for request headers, and graceful shutdown.
//!
//! `axum::serve` has no header-read deadline, so a client that opens a connection and sends
//! half a request head holds it for as long as it likes. [`serve`] closes every connection
//! that goes [`ServeOptions::header_read_timeout`] without a request in progress, whatever
//! protocol state it stopped in, bounds the connections open at once, and records each
//! connection's peer as a [`PeerAddr`] extension so an allowlist can see it.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::Router;
//! use axum::routing::post;
//! use polytomic_webhook::prelude::*;
//! use polytomic_webhook::server::{ServeOptions, serve, shutdown_signal};
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
//! serve(listener, app, ServeOptions::default(), shutdown).await;
//! # Ok(())
//! # }
//! ```

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use polytomic_webhook_auth::PeerAddr;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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

/// How many connections [`serve`] keeps open at once by default.
pub const MAX_CONNECTIONS: usize = 4096;

/// The largest connection bound [`ServeOptions::max_connections`] keeps.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

/// The connection bounds of [`serve`]: how long a connection may go without a request, and how
/// many may be open at once.
///
/// ```
/// use std::time::Duration;
///
/// use polytomic_webhook::server::ServeOptions;
///
/// let options = ServeOptions::default()
///     .header_read_timeout(Duration::from_secs(5))
///     .max_connections(1024);
/// assert_eq!(options.get_header_read_timeout(), Duration::from_secs(5));
/// assert_eq!(options.get_max_connections(), 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    header_read_timeout: Duration,
    max_connections: usize,
}

impl Default for ServeOptions {
    /// [`HEADER_READ_TIMEOUT`] and [`MAX_CONNECTIONS`].
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl ServeOptions {
    /// How long a connection may stay open with no request in progress, from its accept or the
    /// end of its last request until the next request head is complete, whatever the protocol
    /// state: nothing sent, a partial HTTP/1 head, a byte that could begin either protocol, an
    /// HTTP/2 preface with nothing after it, an HTTP/2 header block never finished, or an idle
    /// keep-alive connection. A request's body has its own deadline (the layer's).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How many connections may be open at once (at least 1). Past it the loop stops accepting
    /// until one closes, so new connections wait in the listener's backlog; since every
    /// connection without a request in progress is closed after the header-read timeout,
    /// connections that never send a request free their places within it.
    pub fn max_connections(mut self, connections: usize) -> Self {
        // Within what a semaphore holds and `acquire_many` can take back at shutdown.
        self.max_connections = connections.clamp(1, MAX_CONNECTIONS_LIMIT);
        self
    }

    /// The header-read timeout.
    pub fn get_header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The connection bound.
    pub fn get_max_connections(&self) -> usize {
        self.max_connections
    }
}

/// Serves `service` on every connection `listener` accepts, HTTP/1 and HTTP/2 (cleartext, prior
/// knowledge), until `shutdown` completes; then stops accepting and waits for the connections
/// in flight to finish their requests.
///
/// A connection with no request in progress is closed, without an answer, once it has spent
/// [`ServeOptions::header_read_timeout`] so (see there), and at most
/// [`ServeOptions::max_connections`] are open at once. Each request carries the connection's
/// peer as a [`PeerAddr`] extension; axum's `ConnectInfo` is not set.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let ServeOptions {
        header_read_timeout,
        max_connections,
    } = options;
    let mut server = auto::Builder::new(TokioExecutor::new());
    // hyper's own deadline for each HTTP/1 head; the idle watch below covers every other state
    // (hyper has no deadline for the protocol sniff, the HTTP/2 preface or a header block).
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let places = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &places) => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote, place) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: not fatal, but retrying at once would spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (requests, idle) = watch::channel(0usize);
        let service = TowerToHyperService::new(Connection {
            inner: service.clone(),
            peer: remote,
            requests: Arc::new(requests),
        });
        let server = server.clone();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _place = place;
            let connection = server.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = idle_for(idle.clone(), header_read_timeout) => {
                    tracing::debug!(%remote, "closing a connection that sent no request in time");
                    None
                }
                _ = stopping.wait_for(|stopping| *stopping) => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    // Requests in progress finish; a connection with none is given a moment to
                    // say goodbye (HTTP/2's GOAWAY) and then dropped, whatever state it is in.
                    tokio::select! {
                        ended = connection.as_mut() => ended,
                        () = idle_for(idle, CLOSE_GRACE) => Ok(()),
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, %remote, "connection ended with an error");
            }
        });
    }
    let _ = stop.send(true);
    // Every connection holds a place until it ends: all of them back means all are done.
    let _ = places
        .acquire_many(max_connections_u32(max_connections))
        .await;
}

/// How long a connection closed for idleness (or by a graceful stop, once its requests are
/// done) may take to close by itself before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// The semaphore's permits as `acquire_many` counts them (the builder keeps the bound within).
fn max_connections_u32(max_connections: usize) -> u32 {
    u32::try_from(max_connections).unwrap_or(u32::MAX)
}

/// How many connections the kernel may queue for [`bind`]'s listener before the loop accepts
/// them (capped by the system's `somaxconn`). tokio's default, 1,024, is less than a burst of
/// connections a client can open at once: past it the kernel drops SYNs, and a genuine client
/// whose SYN is dropped waits a second for its retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Why a text is not an address to listen on, and the address its writer most likely meant:
/// what [`parse_listen_addr`] answers, for a start-up message that says what to do.
///
/// ```
/// use polytomic_webhook::server::parse_listen_addr;
///
/// let default = "127.0.0.1:8080".parse().unwrap();
/// let error = parse_listen_addr("localhost:9000", default).unwrap_err();
/// assert_eq!(error.problem(), "a host name is not looked up, only an IP address is accepted");
/// assert_eq!(error.suggestion(), "127.0.0.1:9000");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadListenAddr {
    problem: &'static str,
    suggestion: String,
}

impl BadListenAddr {
    /// What is wrong with the text, as a clause ("the port is missing").
    pub fn problem(&self) -> &'static str {
        self.problem
    }

    /// An address to listen on that is probably what was meant.
    pub fn suggestion(&self) -> &str {
        &self.suggestion
    }
}

impl std::fmt::Display for BadListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; try {}", self.problem, self.suggestion)
    }
}

impl Error for BadListenAddr {}

/// Parses an IP address and port to listen on (surrounding spaces ignored), explaining the
/// usual mistakes: a host name (which is not looked up), a missing port (suggesting
/// `default`'s), a missing IP address.
///
/// ```
/// use polytomic_webhook::server::parse_listen_addr;
///
/// let default = "127.0.0.1:8080".parse().unwrap();
/// assert_eq!(parse_listen_addr(" 0.0.0.0:80 ", default)?.port(), 80);
/// let error = parse_listen_addr("10.0.0.5", default).unwrap_err();
/// assert_eq!((error.problem(), error.suggestion()), ("the port is missing", "10.0.0.5:8080"));
/// # Ok::<(), polytomic_webhook::server::BadListenAddr>(())
/// ```
pub fn parse_listen_addr(text: &str, default: SocketAddr) -> Result<SocketAddr, BadListenAddr> {
    let trimmed = text.trim();
    if let Ok(addr) = trimmed.parse() {
        return Ok(addr);
    }
    let (problem, suggestion) = if let Ok(ip) = trimmed.parse::<std::net::IpAddr>() {
        (
            "the port is missing",
            SocketAddr::new(ip, default.port()).to_string(),
        )
    } else {
        match trimmed.rsplit_once(':') {
            Some(("", port)) => (
                "the IP address is missing (0.0.0.0 listens on every interface)",
                format!("127.0.0.1:{port}"),
            ),
            Some((_, port)) if port.parse::<u16>().is_ok() => (
                "a host name is not looked up, only an IP address is accepted",
                format!("127.0.0.1:{port}"),
            ),
            _ => ("it is not an IP address and port", default.to_string()),
        }
    };
    Err(BadListenAddr {
        problem,
        suggestion,
    })
}

/// A listener on `addr` with a backlog of [`LISTEN_BACKLOG`] (and `SO_REUSEADDR` on Unix, as
/// `TcpListener::bind` sets it), for [`serve`]. Call it inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = polytomic_webhook::server::bind("127.0.0.1:0".parse().unwrap())?;
/// assert!(listener.local_addr()?.port() > 0);
/// # Ok(())
/// # }
/// ```
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection, once a place is free for it.
async fn accept(
    listener: &TcpListener,
    places: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let place = Arc::clone(places)
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (stream, remote) = listener.accept().await?;
    Ok((stream, remote, place))
}

/// Completes once the connection has had no request in progress for `timeout` in one stretch.
async fn idle_for(mut requests: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if requests
            .wait_for(|in_progress| *in_progress == 0)
            .await
            .is_err()
        {
            // The service (and so the connection) is gone.
            return std::future::pending().await;
        }
        if tokio::time::timeout(timeout, requests.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Inserts the connection's peer into each request, since hyper does not record it, and
/// counts the connection's requests in progress for its idle watch.
#[derive(Clone, Debug)]
struct Connection<S> {
    inner: S,
    peer: SocketAddr,
    requests: Arc<watch::Sender<usize>>,
}

impl<S, B> Service<Request<B>> for Connection<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InProgress<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.requests.send_modify(|in_progress| *in_progress += 1);
        InProgress {
            inner: self.inner.call(request),
            _request: RequestInProgress(Arc::clone(&self.requests)),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, counted as in progress until it is dropped.
    struct InProgress<F> {
        #[pin]
        inner: F,
        _request: RequestInProgress,
    }
}

impl<F: Future> Future for InProgress<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Takes its request off the connection's count when dropped, finished or not.
#[derive(Debug)]
struct RequestInProgress(Arc<watch::Sender<usize>>);

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.send_modify(|in_progress| *in_progress -= 1);
    }
}

//! `server::serve` over loopback: slow or silent clients lose their connection after the
//! header-read timeout, each request carries its peer, and shutdown ends the loop.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use polytomic_webhook::auth::PeerAddr;
use polytomic_webhook::server::serve;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Short, so the tests are quick; the bound below is generous.
const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a closed connection may take to show as closed: "answered at all", not speed.
const BOUND: Duration = Duration::from_secs(20);

/// A server whose service answers each request with the peer address it was given. Dropping
/// (or sending on) the returned sender shuts it down.
async fn start() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map_or_else(|| "none".to_owned(), |PeerAddr(peer)| peer.to_string());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(peer))))
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, service, HEADER_READ_TIMEOUT, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// Reads until the server closes the connection; panics if it is still open after [`BOUND`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    // A reset counts as closed too; only the bound passing means the connection is held.
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the server still holds the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_connection_that_sent_half_its_headers_is_closed_after_the_timeout() {
    let (addr, _stop, _server) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /webhooks/polytomic HTTP/1.1\r\nHost: example.com\r\nContent-Ty")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(!received.contains("200 OK"), "{received}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_timeout() {
    let (addr, _stop, _server) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut stream).await, "");
}

#[tokio::test]
async fn a_whole_request_is_answered_with_its_peer_recorded() {
    let (addr, _stop, _server) = start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
    assert!(received.ends_with(&local.to_string()), "{received}");
}

#[tokio::test]
async fn shutdown_ends_the_loop() {
    let (_addr, stop, server) = start().await;
    stop.send(()).unwrap();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

//! `server::serve` over loopback: slow, silent or half-open clients lose their connection after
//! the header-read timeout whatever protocol state they stopped in, the connection bound holds,
//! each request carries its peer, and shutdown ends the loop.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use polytomic_webhook::auth::PeerAddr;
use polytomic_webhook::server::{ServeOptions, bind, serve};
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
    let server = tokio::spawn(serve(
        listener,
        service,
        ServeOptions::default().header_read_timeout(HEADER_READ_TIMEOUT),
        async {
            let _ = stopped.await;
        },
    ));
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

/// A server like [`start`]'s with `options`, for the tests of connection bounds.
async fn start_with(options: ServeOptions) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(|_: Request<hyper::body::Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, service, options, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A complete HTTP/1.1 request on a new connection: the time its answer took, and the answer.
async fn genuine_request(addr: SocketAddr) -> (Duration, String) {
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    (started.elapsed(), received)
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A HEADERS frame on stream 1 with END_STREAM but not END_HEADERS (one HPACK byte, `:method
/// GET`): the server must wait for a CONTINUATION that never comes.
const H2_HEADERS_WITHOUT_END: &[u8] = b"\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82";

/// Opens `count` connections that each send `bytes` and then nothing; each task returns how
/// long after its last byte the server closed the connection.
fn half_open(
    addr: SocketAddr,
    bytes: &'static [u8],
    count: usize,
) -> Vec<tokio::task::JoinHandle<Duration>> {
    (0..count)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(bytes).await.unwrap();
                let sent = tokio::time::Instant::now();
                read_until_closed(&mut stream).await;
                sent.elapsed()
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_of_every_kind_are_closed_on_time_while_genuine_requests_are_answered()
 {
    let timeout = Duration::from_secs(1);
    let (addr, _stop) = start_with(ServeOptions::default().header_read_timeout(timeout)).await;
    let h2_headers: &'static [u8] = [H2_PREFACE_AND_SETTINGS, H2_HEADERS_WITHOUT_END]
        .concat()
        .leak();
    // A lone `P` begins both `POST` and the HTTP/2 preface, so the protocol is never known.
    let kinds: [(&str, &'static [u8]); 3] = [
        ("a lone P", b"P"),
        ("the HTTP/2 preface and SETTINGS", H2_PREFACE_AND_SETTINGS),
        ("an HTTP/2 header block never ended", h2_headers),
    ];
    let attacks: Vec<_> = kinds
        .iter()
        .map(|(kind, bytes)| (*kind, half_open(addr, bytes, 500)))
        .collect();
    // A genuine request every 100 ms while the 1,500 connections are open and being closed.
    for _ in 0..25 {
        let (took, received) = genuine_request(addr).await;
        assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
        assert!(
            took < Duration::from_secs(1),
            "a genuine request took {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (kind, connections) in attacks {
        let mut longest = Duration::ZERO;
        for connection in connections {
            longest = longest.max(connection.await.unwrap());
        }
        eprintln!("{kind}: 500 connections, the longest held {longest:?}");
        assert!(
            longest < timeout + Duration::from_secs(1),
            "{kind}: held {longest:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_timeout() {
    let timeout = Duration::from_millis(500);
    let (addr, _stop) = start_with(ServeOptions::default().header_read_timeout(timeout)).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("http://example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The client keeps the connection; the server ends it once it has been idle long enough.
    tokio::time::timeout(BOUND, connection)
        .await
        .expect("the server still holds the idle HTTP/2 connection")
        .unwrap()
        .unwrap();
    assert!(sender.is_closed());
}

#[tokio::test]
async fn past_the_connection_bound_new_connections_wait_for_a_place() {
    let timeout = Duration::from_millis(500);
    let (addr, _stop) = start_with(
        ServeOptions::default()
            .header_read_timeout(timeout)
            .max_connections(4),
    )
    .await;
    let opened = tokio::time::Instant::now();
    let silent = half_open(addr, b"", 4);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every place is held, so the request waits until the silent connections are closed,
    // which is a timeout after they were accepted at the earliest.
    let (_, received) = genuine_request(addr).await;
    assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
    let answered = opened.elapsed();
    assert!(
        answered >= timeout,
        "answered {answered:?} after the silent connections opened"
    );
    for connection in silent {
        connection.await.unwrap();
    }
}

//! Servers on `127.0.0.1:0` and a real HTTP client over TCP, shared by the end-to-end tests.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of this module.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use polytomic_webhook::prelude::*;
use tokio::net::{TcpListener, TcpStream};

/// The secret every test server is configured with.
pub const SECRET: &str = "e2e-connection-secret";
pub const SYNC_ID: &str = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7";

/// A delivery shaped like Polytomic's sample, with two records.
pub fn sample_body() -> Vec<u8> {
    serde_json::json!({
        "event": "sync.records",
        "object": {
            "id": SYNC_ID,
            "name": "Webhook HTTP Endpoint sync",
            "records": [
                {"hash": "b7421c6c57bd49f7",
                 "fields": {"email": "nathan@polytomic.com", "last_login": "2020-12-02T00:00:00Z"}},
                {"hash": "0c1d2e3f4a5b6c7d",
                 "fields": {"email": "ada@example.com", "last_login": null}}
            ],
            "metadata": {"source": "e2e"}
        }
    })
    .to_string()
    .into_bytes()
}

/// Asserts that `batch` is [`sample_body`], record by record.
pub fn assert_sample(batch: &SyncRecords) {
    assert_eq!(batch.id().as_str(), SYNC_ID);
    assert_eq!(batch.name(), "Webhook HTTP Endpoint sync");
    assert_eq!(batch.len(), 2);
    assert_eq!(batch.records()[0].hash().as_str(), "b7421c6c57bd49f7");
    let field = |record: usize, name: &str| {
        let raw = batch.records()[record].fields().get(name).unwrap();
        serde_json::from_str::<serde_json::Value>(raw.get()).unwrap()
    };
    assert_eq!(field(0, "email"), "nathan@polytomic.com");
    assert_eq!(batch.records()[1].hash().as_str(), "0c1d2e3f4a5b6c7d");
    assert!(field(1, "last_login").is_null());
    assert_eq!(batch.metadata().get("source").unwrap().get(), r#""e2e""#);
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The current time as Polytomic writes it in `Polytomic-Signature-Timestamp`.
pub fn now() -> String {
    timestamp(0)
}

/// The time `offset_secs` from now, in the timestamp header's format.
pub fn timestamp(offset_secs: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(offset_secs)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn config() -> PolytomicWebhookConfig {
    PolytomicWebhookConfig::default().secret(Secret::new(SECRET).unwrap())
}

pub fn layer(config: PolytomicWebhookConfig) -> PolytomicWebhookLayer {
    PolytomicWebhookLayer::new(config).unwrap()
}

/// Every batch the server's handler received, in order.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<SyncRecords>>>);

impl Received {
    pub fn sink(&self) -> examples::Sink {
        let received = self.clone();
        examples::sync_sink(move |batch: &SyncRecords| {
            received.0.lock().unwrap().push(batch.clone());
            Ok(())
        })
    }

    pub fn take(&self) -> Vec<SyncRecords> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A server running on the test's runtime; it stops with the runtime.
pub struct Server {
    pub addr: SocketAddr,
    pub received: Received,
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The receiver example's router, served as the example serves it.
pub async fn start_axum(config: PolytomicWebhookConfig) -> Server {
    let received = Received::default();
    let addr = serve_axum(examples::receiver_app(layer(config), received.sink())).await;
    Server { addr, received }
}

/// Serves `app` as the receiver example does, on `127.0.0.1:0`, until the runtime stops.
pub async fn serve_axum(app: axum::Router) -> SocketAddr {
    let (listener, addr) = listener().await;
    tokio::spawn(examples::serve(
        listener,
        app,
        examples::ServeOptions::default(),
        std::future::pending(),
    ));
    addr
}

/// The tonic gateway example's router.
pub async fn start_tonic(config: PolytomicWebhookConfig) -> Server {
    let (listener, addr) = listener().await;
    let received = Received::default();
    let (app, reporter) = examples::tonic_gateway(layer(config), received.sink());
    tokio::spawn(async move {
        let _reporter = reporter; // The health service answers while its reporter lives.
        examples::serve(
            listener,
            app,
            examples::ServeOptions::default(),
            std::future::pending(),
        )
        .await;
    });
    Server { addr, received }
}

/// The hyper example's server.
pub async fn start_hyper(config: PolytomicWebhookConfig) -> Server {
    let (listener, addr) = listener().await;
    let received = Received::default();
    let sink = received.sink();
    let layer = layer(config);
    tokio::spawn(async move {
        let limits = polytomic_webhook::limit::ServerLimits::default();
        examples::serve_hyper(listener, layer, sink, &limits, std::future::pending()).await;
    });
    Server { addr, received }
}

pub type ClientBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body sent as several frames with no length known in advance, so HTTP/1 sends it with
/// `Transfer-Encoding: chunked`.
pub struct Chunked(VecDeque<Bytes>);

impl Chunked {
    pub fn body(data: &[u8], chunk_size: usize) -> ClientBody {
        Self(
            data.chunks(chunk_size)
                .map(Bytes::copy_from_slice)
                .collect(),
        )
        .boxed_unsync()
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

pub fn full(data: impl Into<Bytes>) -> ClientBody {
    Full::new(data.into()).boxed_unsync()
}

/// A delivery as Polytomic sends it, for `version`: the secret, a fresh timestamp, JSON.
pub fn delivery(addr: SocketAddr, version: Version) -> http::request::Builder {
    let builder = if version == Version::HTTP_2 {
        // HTTP/2 carries scheme and authority as pseudo-headers, taken from the URI.
        Request::post(format!("http://{addr}{}", examples::WEBHOOK_PATH))
    } else {
        Request::post(examples::WEBHOOK_PATH).header(HOST, addr.to_string())
    };
    builder
        .version(version)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {SECRET}"))
        .header("polytomic-signature-timestamp", now())
        .header("user-agent", "Polytomic/e2e")
}

/// Builds a delivery request; `edit` changes its headers before it is sent.
pub fn request(
    addr: SocketAddr,
    version: Version,
    body: ClientBody,
    edit: impl FnOnce(&mut HeaderMap),
) -> Request<ClientBody> {
    let mut request = delivery(addr, version).body(body).unwrap();
    edit(request.headers_mut());
    request
}

/// Marks the body as gzip-coded.
pub fn gzip_coded(headers: &mut HeaderMap) {
    headers.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
}

/// What came back, body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Asserts an RFC 9457 problem with this status and `code`.
    pub fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.headers[CONTENT_TYPE], "application/problem+json");
        let json = self.json();
        assert_eq!(json["code"], code, "{json}");
        assert_eq!(json["status"], status.as_u16());
    }

    /// Asserts `{"accepted": n}`.
    pub fn assert_accepted(&self, n: usize) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.json(), serde_json::json!({ "accepted": n }));
    }
}

/// One HTTP/1.1 connection, over which requests go one after the other (keep-alive).
pub async fn h1_connection(addr: SocketAddr) -> http1::SendRequest<ClientBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// One HTTP/2 cleartext connection with prior knowledge (no upgrade dance).
pub async fn h2_connection(addr: SocketAddr) -> http2::SendRequest<ClientBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
    read_reply(response).await
}

pub async fn send_h1(
    sender: &mut http1::SendRequest<ClientBody>,
    request: Request<ClientBody>,
) -> Reply {
    sender.ready().await.unwrap();
    read(sender.send_request(request).await.unwrap()).await
}

pub async fn send_h2(
    sender: &mut http2::SendRequest<ClientBody>,
    request: Request<ClientBody>,
) -> Reply {
    sender.ready().await.unwrap();
    read(sender.send_request(request).await.unwrap()).await
}

/// Sends `request` on a connection of its own.
pub async fn send(addr: SocketAddr, request: Request<ClientBody>) -> Reply {
    if request.version() == Version::HTTP_2 {
        send_h2(&mut h2_connection(addr).await, request).await
    } else {
        send_h1(&mut h1_connection(addr).await, request).await
    }
}

/// A delivery built with `polytomic_webhook::testing` (its headers and body, from
/// `Delivery::encode`) as an HTTP/1.1 request to the webhook route.
pub fn encoded(addr: SocketAddr, delivery: (HeaderMap, Bytes)) -> Request<ClientBody> {
    encoded_to(addr, examples::WEBHOOK_PATH, delivery)
}

/// Like [`encoded`], to another path (the events route, say).
pub fn encoded_to(
    addr: SocketAddr,
    path: &str,
    (headers, body): (HeaderMap, Bytes),
) -> Request<ClientBody> {
    let mut request = Request::post(format!("http://{addr}{path}"))
        .body(full(body))
        .unwrap();
    *request.headers_mut() = headers;
    request
}

/// Reads a response from any client to the end.
pub async fn read_reply<B>(response: http::Response<B>) -> Reply
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// The sample delivery, gzipped without `Content-Encoding` as Polytomic sends it.
pub fn sample(addr: SocketAddr, version: Version) -> Request<ClientBody> {
    request(addr, version, full(gzip(&sample_body())), |_| {})
}

/// The binary of the example `name` (`examples/<name>.rs`). `cargo test --workspace` builds
/// the examples in the same run, so it is normally there and fresh; otherwise (only this
/// package under test, or example sources newer than the binary) it is built here, once.
pub fn example_binary(name: &str) -> PathBuf {
    let workspace = workspace();
    let mut sources = vec![workspace.join(format!("examples/{name}.rs"))];
    sources.extend(files_in(&workspace.join("examples/src")));
    fresh_binary(
        &Path::new("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX)),
        &sources,
        &["--package", "examples", "--example", name],
    )
}

/// The `polytomic-webhook` command-line binary, built the same way as [`example_binary`]
/// (`cargo test --workspace` builds it for the CLI's own tests).
pub fn cli_binary() -> PathBuf {
    let workspace = workspace();
    let mut sources = files_in(&workspace.join("crates/polytomic-webhook-cli/src"));
    sources.extend(files_in(
        &workspace.join("crates/polytomic-webhook-store/src"),
    ));
    fresh_binary(
        Path::new(&format!(
            "polytomic-webhook{}",
            std::env::consts::EXE_SUFFIX
        )),
        &sources,
        &[
            "--package",
            "polytomic-webhook-cli",
            "--bin",
            "polytomic-webhook",
        ],
    )
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

/// `binary` (relative to the target profile directory), built with `cargo build <target>`
/// unless it is newer than every file of `sources`.
fn fresh_binary(binary: &Path, sources: &[PathBuf], target: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> -> target/<profile>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join(binary);
    // Tests run in parallel: one builds while the others wait, then find the binary fresh.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let built = |path: &Path| path.metadata().and_then(|meta| meta.modified()).ok();
    let fresh = built(&binary).is_some_and(|binary| {
        sources
            .iter()
            .all(|source| built(source).is_some_and(|source| source <= binary))
    });
    if !fresh {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.current_dir(workspace()).arg("build").args(target);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        assert!(cargo.status().unwrap().success(), "building {target:?}");
    }
    binary
}

/// Sends `request` on a connection of its own; `None` when there is no answer (nothing
/// listening, or the connection broke), as when the server was killed.
pub async fn try_send(addr: SocketAddr, request: Request<ClientBody>) -> Option<Reply> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.ok()?;
    let (parts, body) = response.into_parts();
    Some(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.ok()?.to_bytes(),
    })
}

/// Whether the external `tool` (Debian package `package`) runs: when it does not, `test` is
/// skipped, saying so loudly, except under CI (`CI` set), where that fails the test: CI must run
/// these tests (`.ci/run` installs the package).
pub fn installed_or_skipped(tool: &str, package: &str, test: &str) -> bool {
    let installed = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed, and CI must run {test} (.ci/run installs {package})"
        );
        eprintln!("!!! SKIPPED {test}: {tool} is not installed (apt-get install {package}) !!!");
    }
    installed
}

/// A `redis-server` of the test's own, on a free loopback port, with no persistence; killed
/// when dropped.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one, or returns `None` (saying so loudly) when `redis-server` is not installed,
    /// except under CI (`CI` set), where that fails the test: CI must run these tests.
    pub fn start(test: &str) -> Option<Self> {
        if !installed_or_skipped("redis-server", "redis-server", test) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = Self {
            child: Self::spawn(port, &dir),
            port,
            dir,
        };
        server.wait_until_up();
        Some(server)
    }

    fn spawn(port: u16, dir: &Path) -> std::process::Child {
        std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_until_up(&self) {
        use std::io::{Read as _, Write as _};
        // A generous bound for "started at all".
        for _ in 0..200 {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let mut answer = [0; 5];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut answer).is_ok()
                    && &answer == b"+PONG"
                {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL): it is unreachable until [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Pauses the server (SIGSTOP): connections stay open, and what they send waits, to be
    /// run once it is [`resume`](Self::resume)d, as with a Redis stalled by its host.
    #[cfg(unix)]
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Lets a [`pause`](Self::pause)d server run again (SIGCONT).
    #[cfg(unix)]
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    #[cfg(unix)]
    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Starts it again on the same port (empty: it keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.port, &self.dir);
        self.wait_until_up();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends half a request head to `addr` and then nothing; panics unless the server closes the
/// connection within its header-read timeout plus a generous bound (it must close, not be fast).
pub async fn assert_half_a_head_is_cut_off(addr: SocketAddr, name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bea",
        examples::WEBHOOK_PATH
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let bound = examples::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(20);
    let mut rest = Vec::new();
    // A reset counts as closed too; only the bound passing means the connection is held.
    let read = tokio::time::timeout(bound, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "{name}: the connection is still open");
}

/// The raw JSON of the `marker` field of a batch's first record.
pub fn marker(batch: &SyncRecords) -> &str {
    batch.records()[0].fields().get("marker").unwrap().get()
}

/// The receiver example's router with `ops`, on `127.0.0.1:0`. Its sink stores nothing and
/// acts on the first record's `marker`: `fail` cannot be stored, `panic` panics.
pub async fn start_marked(ops: &examples::Ops) -> SocketAddr {
    let sink: examples::Sink = examples::sync_sink(|batch| match marker(batch) {
        r#""fail""# => Err("the test sink refuses this batch".into()),
        r#""panic""# => panic!("the test sink panics"),
        _ => Ok(()),
    });
    serve_axum(examples::receiver_app_with(layer(config()), sink, ops)).await
}

/// `GET path` on `addr`, on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(full(Bytes::new()))
        .unwrap();
    send(addr, request).await
}

/// `GET /readyz` on `addr` until it answers `status`; panics if it has not within the probe's
/// interval and timeout (and a margin), since `/readyz` answers from the probe's last result.
pub async fn readyz_becomes(addr: SocketAddr, status: StatusCode) -> Reply {
    use polytomic_webhook::readiness::{PROBE_INTERVAL, PROBE_TIMEOUT};
    let deadline = std::time::Instant::now() + PROBE_INTERVAL + PROBE_TIMEOUT * 2;
    loop {
        let reply = get(addr, "/readyz").await;
        if reply.status == status || std::time::Instant::now() > deadline {
            assert_eq!(reply.status, status, "{reply:?}");
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A valid delivery whose one record carries `marker`.
pub fn marked(marker: &str) -> polytomic_webhook::testing::Delivery {
    polytomic_webhook::testing::Delivery::new()
        .secret(SECRET)
        .record_json(serde_json::json!({"marker": marker}))
}

//! Server throughput on loopback: our receiver route against a hand-written hyper handler.
//!
//! Both servers run in the same runtime as the load generator: 32 keep-alive HTTP/1.1
//! connections, each sending its share of a fixed number of requests one after another.

use std::convert::Infallible;
use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use polytomic_webhook::event::Fields;
use polytomic_webhook_store::{Sink, StoreService};
use tokio::net::{TcpListener, TcpStream};

use crate::payload::Payload;
use crate::pipelines::{BODY_LIMIT, Envelope, PATH, SECRET, TIMESTAMP, our_layer, ours_router};

/// Concurrent client connections.
pub const CONNECTIONS: usize = 32;

/// Which server a measurement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// axum serving the receiver route: `PolytomicWebhookLayer` + `SyncRecords<Fields>`.
    Receiver,
    /// hyper with a handler that checks the bearer, inflates with flate2 and parses with serde.
    HandWritten,
}

impl Server {
    /// Both servers, in report order.
    pub const ALL: [Self; 2] = [Self::Receiver, Self::HandWritten];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Receiver => "receiver (axum + our layer)",
            Self::HandWritten => "hand-written hyper",
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Starts `server` on an ephemeral loopback port; it runs until the runtime shuts down.
pub async fn start(server: Server) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    match server {
        Server::Receiver => serve_axum(listener, ours_router::<Fields>()),
        Server::HandWritten => {
            tokio::spawn(hand_written(listener));
        }
    }
    Ok(address)
}

/// Starts what `serve --sink` runs, storing into `sink`: our layer, then [`StoreService`].
pub async fn start_with_sink(sink: Arc<dyn Sink>) -> std::io::Result<SocketAddr> {
    start_router(
        axum::Router::new()
            .route_service(PATH, StoreService::new(sink))
            .layer(our_layer()),
    )
    .await
}

/// Starts `app` on an ephemeral loopback port, as the receiver is served.
pub async fn start_router(app: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    serve_axum(listener, app);
    Ok(address)
}

fn serve_axum(listener: TcpListener, app: axum::Router) {
    // Every server turns Nagle's algorithm off, as a receiver should for small answers.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
}

async fn hand_written(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a careful receiver writes without middleware: bearer, size limit, inflate, parse.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(SECRET);
    if !authorized {
        return Ok(answer(StatusCode::UNAUTHORIZED, String::new()));
    }
    let Ok(body) = Limited::new(request.into_body(), BODY_LIMIT)
        .collect()
        .await
    else {
        return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE, String::new()));
    };
    let body = body.to_bytes();
    let mut json = Vec::new();
    let inflated = flate2::read::GzDecoder::new(&body[..])
        .take(BODY_LIMIT as u64)
        .read_to_end(&mut json);
    if inflated.is_err() {
        return Ok(answer(StatusCode::BAD_REQUEST, String::new()));
    }
    match serde_json::from_slice::<Envelope>(&json) {
        Ok(envelope) => Ok(answer(
            StatusCode::OK,
            format!("{{\"accepted\":{}}}", envelope.object.records.len()),
        )),
        Err(_) => Ok(answer(StatusCode::UNPROCESSABLE_ENTITY, String::new())),
    }
}

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Wall-clock time from the first request to the last response.
    pub elapsed: Duration,
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Load {
    /// Completed requests per second.
    pub fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which `quantile` of the requests completed.
    pub fn latency(&self, quantile: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies.len() - 1;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let index = ((last as f64) * quantile).round() as usize;
        self.latencies[index.min(last)]
    }

    /// Pools several runs of the same server.
    pub fn merge(runs: &[Self]) -> Self {
        let mut latencies: Vec<Duration> = runs
            .iter()
            .flat_map(|run| run.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        Self {
            elapsed: runs.iter().map(|run| run.elapsed).sum(),
            latencies,
        }
    }
}

/// Sends `requests` deliveries of `payload` to `address` over [`CONNECTIONS`] connections;
/// fails on any answer but 200 with the right count.
pub async fn load(address: SocketAddr, payload: &Payload, requests: usize) -> Result<Load, String> {
    load_bodies(
        address,
        std::slice::from_ref(&payload.gzip),
        payload.records,
        requests,
    )
    .await
}

/// Like [`load`], with request `i` carrying `bodies[i % bodies.len()]` (gzipped deliveries
/// of `records` records each): distinct bodies make a sink store every request's records.
pub async fn load_bodies(
    address: SocketAddr,
    bodies: &[Bytes],
    records: usize,
    requests: usize,
) -> Result<Load, String> {
    // `{"accepted":N}`, or with a sink `{"accepted":N,"stored":…}`.
    let expected = Bytes::from(format!("{{\"accepted\":{records}"));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for client in 0..CONNECTIONS {
        let mine: Vec<Bytes> = (client..requests)
            .step_by(CONNECTIONS)
            .map(|request| bodies[request % bodies.len()].clone())
            .collect();
        let expected = expected.clone();
        clients.push(tokio::spawn(async move {
            client_loop(address, mine, expected).await
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for client in clients {
        let mut client = client
            .await
            .map_err(|error| format!("client task: {error}"))??;
        latencies.append(&mut client);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Load { elapsed, latencies })
}

async fn client_loop(
    address: SocketAddr,
    bodies: Vec<Bytes>,
    expected: Bytes,
) -> Result<Vec<Duration>, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("handshake: {error}"))?;
    tokio::spawn(connection);
    let mut latencies = Vec::with_capacity(bodies.len());
    for gzip in bodies {
        let request = Request::post(PATH)
            .header("host", address.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .header(CONTENT_LENGTH, gzip.len())
            .header(AUTHORIZATION, format!("Bearer {SECRET}"))
            .header("polytomic-signature-timestamp", TIMESTAMP)
            .body(Full::new(gzip))
            .map_err(|error| format!("request: {error}"))?;
        let started = Instant::now();
        sender
            .ready()
            .await
            .map_err(|error| format!("connection: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("send: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("response body: {error}"))?
            .to_bytes();
        latencies.push(started.elapsed());
        let complete = matches!(body.get(expected.len()), Some(b'}' | b','));
        if status != StatusCode::OK || !body.starts_with(&expected) || !complete {
            return Err(format!(
                "answer {status} {}, expected 200 {}}}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&expected)
            ));
        }
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn both_servers_answer_every_request_with_the_record_count() {
        block_on(async {
            let payload = Payload::generate(5);
            for server in Server::ALL {
                let address = start(server).await.unwrap();
                let load = load(address, &payload, CONNECTIONS + 3).await.unwrap();
                assert_eq!(load.latencies.len(), CONNECTIONS + 3);
                assert!(load.latency(0.99) >= load.latency(0.5));
            }
        });
    }

    #[test]
    fn a_sink_server_stores_every_distinct_batch() {
        use polytomic_webhook_store::{Identity, MemorySink};

        block_on(async {
            let payload = Payload::generate(5);
            let bodies = payload.from_syncs(0, CONNECTIONS + 3);
            let sink = Arc::new(MemorySink::new(Identity::hash()));
            let address = start_with_sink(Arc::clone(&sink) as Arc<dyn Sink>)
                .await
                .unwrap();
            let load = load_bodies(address, &bodies, 5, bodies.len())
                .await
                .unwrap();
            assert_eq!(load.latencies.len(), CONNECTIONS + 3);
            assert_eq!(sink.snapshot().len(), (CONNECTIONS + 3) * 5);
        });
    }
}

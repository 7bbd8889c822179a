//! Denial of service by clients without the secret, against the receiver example's default
//! configuration over TCP: while the attack runs, a genuine delivery every 100 ms must be
//! answered 200 within a second.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use polytomic_webhook::limit::{DEFAULT_MAX_DRAINING, ServerLimits};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a genuine delivery every 100 ms, `count` times, asserting each is answered 200 within
/// a second; the slowest answer's time.
async fn genuine_deliveries_are_answered(addr: SocketAddr, count: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for sent in 0..count {
        let started = Instant::now();
        let delivery = marked(&format!("genuine-{sent}")).encode();
        let reply =
            tokio::time::timeout(Duration::from_secs(1), send(addr, encoded(addr, delivery)))
                .await
                .unwrap_or_else(|_| panic!("genuine delivery {sent} was not answered within 1 s"));
        reply.assert_accepted(1);
        assert!(started.elapsed() < Duration::from_secs(1));
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

/// A client with a wrong secret that declares a 1 MB body and sends one byte of it every
/// 0.5 s, for as long as the connection is open; it counts itself in `answered` once the
/// server's answer (a 401) arrives.
fn trickler(addr: SocketAddr, answered: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer not-the-secret\r\n\
             Content-Type: application/json\r\nPolytomic-Signature-Timestamp: {}\r\n\
             Content-Length: 1000000\r\n\r\n",
            examples::WEBHOOK_PATH,
            now()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let reading = tokio::spawn(async move {
            let mut answer = [0u8; 12];
            if reader.read_exact(&mut answer).await.is_ok() && answer.starts_with(b"HTTP/1.1 401") {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = reading.await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_clients_trickling_bodies_hold_no_place_a_genuine_delivery_needs() {
    // Fewer places than drains, so that draining refusals holding places would take them all.
    let ops = examples::Ops {
        limits: ServerLimits::default().max_in_flight(DEFAULT_MAX_DRAINING / 2),
        ..examples::Ops::default()
    };
    let sink: examples::Sink = examples::sync_sink(|_| Ok(()));
    let addr = serve_axum(examples::receiver_app_with(layer(config()), sink, &ops)).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let tricklers: Vec<_> = (0..100)
        .map(|_| trickler(addr, Arc::clone(&answered)))
        .collect();
    // Every trickler has sent its head (and so been refused) before the first genuine one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    genuine_deliveries_are_answered(addr, 25).await;
    // Those that found no drain free were answered at once, with the connection closed.
    let answered = answered.load(Ordering::Relaxed);
    assert!(
        answered >= 100 - DEFAULT_MAX_DRAINING,
        "only {answered} of 100 refused tricklers were answered"
    );
    for trickler in tricklers {
        trickler.abort();
    }
}

/// The receiver's router with its Events route, both with `limits`.
async fn start_with_events(limits: ServerLimits) -> SocketAddr {
    start_with_events_and(limits, examples::sync_sink(|_| Ok(()))).await
}

/// [`start_with_events`] with batches going to `sink`.
async fn start_with_events_and(limits: ServerLimits, sink: examples::Sink) -> SocketAddr {
    use polytomic_webhook::dedup::MemoryEventIdStore;
    use polytomic_webhook::prelude::*;

    let ops = examples::Ops {
        limits,
        ..examples::Ops::default()
    };
    let events = PolytomicOrgEventsLayer::new(
        PolytomicOrgEventsConfig::default().secrets(SigningSecrets::new(EVENTS_SECRET).unwrap()),
    )
    .unwrap();
    let app =
        examples::receiver_app_with(layer(config()), sink, &ops).merge(examples::events_router(
            events,
            examples::sync_event_sink(|_| Ok(())),
            &ops,
            MemoryEventIdStore::new(1000),
        ));
    serve_axum(app).await
}

const EVENTS_SECRET: &str = "e2e-events-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_a_wrong_signature_trickling_bodies_hold_no_place_a_genuine_event_needs() {
    use polytomic_webhook::testing::EventDelivery;

    let addr = start_with_events(ServerLimits::default().max_in_flight(16)).await;
    // A well-formed signature (of another body, under another secret): only the whole body
    // can show it is wrong, so each trickler is read, never refused from its head.
    let (headers, _) = EventDelivery::new("sync.completed")
        .secret("not-the-secret")
        .encode();
    let signature = headers["polytomic-signature"].to_str().unwrap().to_owned();
    let tricklers: Vec<_> = (0..100)
        .map(|_| {
            let signature = signature.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST {} HTTP/1.1\r\nHost: {addr}\r\nPolytomic-Signature: {signature}\r\n\
                     Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                    examples::EVENTS_PATH,
                );
                stream.write_all(head.as_bytes()).await.unwrap();
                while stream.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for sent in 0..25 {
        let started = Instant::now();
        let event = EventDelivery::new("sync.completed")
            .id(format!("genuine-{sent}"))
            .secret(EVENTS_SECRET)
            .encode();
        let request = encoded_to(addr, examples::EVENTS_PATH, event);
        let reply = tokio::time::timeout(Duration::from_secs(1), send(addr, request))
            .await
            .unwrap_or_else(|_| panic!("genuine event {sent} was not answered within 1 s"));
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for trickler in tricklers {
        trickler.abort();
    }
}

/// Batches and events draw their decoded bytes from one budget: with room for one delivery's
/// reserve, a batch whose handler is still working leaves none for a signed event (503
/// `overloaded`), and once the batch is answered the same event is accepted. With a budget per
/// route the event would have been accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_events_draw_from_one_decoded_budget() {
    use polytomic_webhook::limit::PER_DELIVERY_RESERVE;
    use polytomic_webhook::testing::EventDelivery;

    let slow: examples::Sink = Arc::new(|_| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        })
    });
    let limits = ServerLimits::default()
        .max_decoded_in_flight(PER_DELIVERY_RESERVE + PER_DELIVERY_RESERVE / 2);
    let addr = start_with_events_and(limits, slow).await;
    let event = || {
        let event = EventDelivery::new("sync.completed")
            .id("evt-budget")
            .secret(EVENTS_SECRET)
            .encode();
        encoded_to(addr, examples::EVENTS_PATH, event)
    };
    let batch = tokio::spawn(send(addr, sample(addr, http::Version::HTTP_11)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(addr, event())
        .await
        .assert_problem(http::StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    batch.await.unwrap().assert_accepted(2);
    let reply = send(addr, event()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// A client without the secret that pipelines `GET /readyz` on one connection for as long as it
/// runs: a window of requests, their answers, a pause, and again; it counts the answers it
/// reads into `answered`. 500 of them offer about 10,000 requests a second, more than the
/// unoptimised test server answers on a loaded 2-core machine (about 3,500 a second), without
/// starving it of CPU for the test's own clients.
fn readyz_pipeliner(addr: SocketAddr, answered: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    const WINDOW: usize = 2;
    tokio::spawn(async move {
        let Ok(stream) = TcpStream::connect(addr).await else {
            return;
        };
        let (mut reader, mut writer) = stream.into_split();
        let window = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(WINDOW);
        let mut buf = vec![0; 16 * 1024];
        // The end of the last read, so that a status line split between reads is counted.
        let mut tail = Vec::new();
        loop {
            if writer.write_all(window.as_bytes()).await.is_err() {
                return;
            }
            let mut seen = 0;
            while seen < WINDOW {
                let Ok(read @ 1..) = reader.read(&mut buf).await else {
                    return;
                };
                tail.extend_from_slice(&buf[..read]);
                seen += tail.windows(9).filter(|at| at == b"HTTP/1.1 ").count();
                tail.drain(..tail.len().saturating_sub(8));
            }
            answered.fetch_add(seen, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_connections_pipelining_readyz_cost_nothing_an_sqlite_delivery_needs() {
    use polytomic_webhook::readiness::{PROBE_INTERVAL, Readiness};
    use polytomic_webhook_store::{Durability, Identity, Sink as _, SqliteSink};

    let path = std::env::temp_dir().join(format!("denial-readyz-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sqlite = Arc::new(
        SqliteSink::open(&path, Identity::hash(), Durability::Process)
            .await
            .unwrap(),
    );
    let (probe, store) = (Arc::clone(&sqlite), Arc::clone(&sqlite));
    // Each run of the probe is a job in the SQLite writer's queue, ahead of the deliveries'.
    let probed = Arc::new(AtomicUsize::new(0));
    let probes_run = Arc::clone(&probed);
    let ops = examples::Ops {
        readiness: Readiness::new(move || {
            probes_run.fetch_add(1, Ordering::Relaxed);
            let sqlite = Arc::clone(&probe);
            async move { sqlite.ready().await.is_ok() }
        }),
        ..examples::Ops::default()
    };
    let sink: examples::Sink = Arc::new(move |batch| {
        let sqlite = Arc::clone(&store);
        Box::pin(async move { Ok(sqlite.store(batch).await.map(drop)?) })
    });
    let addr = serve_axum(examples::receiver_app_with(layer(config()), sink, &ops)).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..500)
        .map(|_| readyz_pipeliner(addr, Arc::clone(&answered)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (before, probed_before) = (
        answered.load(Ordering::Relaxed),
        probed.load(Ordering::Relaxed),
    );
    let slowest = genuine_deliveries_are_answered(addr, 10).await;
    let elapsed = started.elapsed();
    let answers = answered.load(Ordering::Relaxed) - before;
    let probed = probed.load(Ordering::Relaxed) - probed_before;
    // A figure for the README, not an assertion.
    eprintln!(
        "readyz flood: {answers} answers in {elapsed:?}, {probed} probes of the sink, while 10 \
         genuine deliveries were stored, the slowest answered in {slowest:?}"
    );
    assert!(answers > 1000, "the flood hardly ran: {answers} answers");
    // At most one probe a second, whatever the flood: it costs the sink nothing more.
    let intervals = elapsed.as_secs_f64() / PROBE_INTERVAL.as_secs_f64();
    assert!(
        probed as f64 <= intervals.ceil() + 1.0,
        "{probed} probes of the sink in {elapsed:?}"
    );
    for pipeliner in flood {
        pipeliner.abort();
    }
    let stored = sqlite.records().await.unwrap();
    assert_eq!(stored.len(), 10);
    let _ = std::fs::remove_file(&path);
}

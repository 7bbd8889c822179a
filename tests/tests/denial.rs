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
/// a second.
async fn genuine_deliveries_are_answered(addr: SocketAddr, count: usize) {
    for sent in 0..count {
        let started = Instant::now();
        let delivery = marked(&format!("genuine-{sent}")).encode();
        let reply =
            tokio::time::timeout(Duration::from_secs(1), send(addr, encoded(addr, delivery)))
                .await
                .unwrap_or_else(|_| panic!("genuine delivery {sent} was not answered within 1 s"));
        reply.assert_accepted(1);
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let sink: examples::Sink = examples::sync_sink(|_| Ok(()));
    let app =
        examples::receiver_app_with(layer(config()), sink, &ops).merge(examples::events_router(
            events,
            examples::sync_event_sink(|_| Ok(())),
            &ops.limits,
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

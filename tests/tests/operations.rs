//! The receiver example's operations over TCP: `/metrics` after a mix of deliveries, `/readyz`
//! following its probe, and the server-wide bound.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use http::header::RETRY_AFTER;
use polytomic_webhook::limit::ServerLimits;
use polytomic_webhook::readiness::Readiness;
use support::*;

#[tokio::test]
async fn readyz_follows_its_probe_and_healthz_does_not() {
    let up = Arc::new(AtomicBool::new(false));
    let probe = Arc::clone(&up);
    let readiness = Readiness::new(move || {
        let up = probe.load(Ordering::SeqCst);
        async move { up }
    });
    let addr = start_marked(&examples::Ops {
        readiness,
        ..examples::Ops::default()
    })
    .await;

    get(addr, "/readyz")
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(get(addr, "/healthz").await.status, StatusCode::OK);
    up.store(true, Ordering::SeqCst);
    // The probe's last result answers until it is PROBE_INTERVAL old.
    let ready = readyz_becomes(addr, StatusCode::OK).await;
    assert_eq!(&ready.body[..], b"ready\n");
    up.store(false, Ordering::SeqCst);
    readyz_becomes(addr, StatusCode::SERVICE_UNAVAILABLE)
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    // Without metrics in the options, there is no /metrics route.
    assert_eq!(get(addr, "/metrics").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_probe_that_hangs_counts_as_not_ready() {
    let addr = start_marked(&examples::Ops {
        readiness: Readiness::new(std::future::pending::<bool>),
        ..examples::Ops::default()
    })
    .await;
    get(addr, "/readyz")
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
}

/// A receiver with `limits` whose sink holds the delivery marked `hold` until the test
/// releases it.
struct Holding {
    addr: std::net::SocketAddr,
    entered: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl Holding {
    async fn start(
        config: polytomic_webhook::PolytomicWebhookConfig,
        limits: ServerLimits,
    ) -> Self {
        Self::start_on(Example::Axum, config, limits).await
    }

    async fn start_on(
        example: Example,
        config: polytomic_webhook::PolytomicWebhookConfig,
        limits: ServerLimits,
    ) -> Self {
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (entered_tx, released) = (Mutex::new(entered_tx), Mutex::new(released));
        let sink: examples::Sink = examples::sync_sink(move |batch| {
            if marker(batch) == r#""hold""# {
                entered_tx.lock().unwrap().send(()).unwrap();
                // The sink is synchronous, so it waits on a runtime worker: `block_in_place`
                // hands that worker's queued tasks to another thread first. Without it, the
                // next delivery's task could sit in this worker's own queue until the release,
                // and find the place free by then. A generous bound, so a failed test cannot
                // hang forever.
                tokio::task::block_in_place(|| {
                    let _ = released
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(30));
                });
            }
            Ok(())
        });
        let addr = match example {
            Example::Axum => {
                let ops = examples::Ops {
                    limits,
                    ..examples::Ops::default()
                };
                serve_axum(examples::receiver_app_with(layer(config), sink, &ops)).await
            }
            Example::Hyper => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let layer = layer(config);
                tokio::spawn(async move {
                    examples::serve_hyper(listener, layer, sink, &limits, std::future::pending())
                        .await;
                });
                addr
            }
        };
        Self {
            addr,
            entered,
            release,
        }
    }

    /// Sends `delivery` (marked `hold`) and returns once the sink holds it.
    async fn hold(
        &self,
        delivery: polytomic_webhook::testing::Delivery,
    ) -> tokio::task::JoinHandle<Reply> {
        let addr = self.addr;
        let held = tokio::spawn(async move { send(addr, encoded(addr, delivery.encode())).await });
        self.entered.recv_timeout(Duration::from_secs(30)).unwrap();
        held
    }

    async fn send(&self, delivery: polytomic_webhook::testing::Delivery) -> Reply {
        send(self.addr, encoded(self.addr, delivery.encode())).await
    }
}

/// Which example server a test runs.
#[derive(Clone, Copy, Debug)]
enum Example {
    /// The axum receiver (`examples::receiver_app_with`).
    Axum,
    /// The plain hyper service (`examples::serve_hyper`).
    Hyper,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_beyond_the_in_flight_bound_gets_503_overloaded_and_the_next_one_is_served() {
    for on in [Example::Axum, Example::Hyper] {
        let limits = ServerLimits::default()
            .max_in_flight(1)
            .queue_wait(Duration::from_millis(100));
        let server = Holding::start_on(on, config(), limits).await;

        let held = server.hold(marked("hold")).await;
        let refused = server.send(marked("second")).await;
        refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
        assert_eq!(refused.headers[RETRY_AFTER], "1", "{on:?}");

        server.release.send(()).unwrap();
        held.await.unwrap().assert_accepted(1);
        server.send(marked("third")).await.assert_accepted(1);
    }
}

/// A delivery whose records come to about `mib` MiB, sent uncompressed (zeros would trip the
/// ratio limit first).
fn large(marker: &str, mib: usize) -> polytomic_webhook::testing::Delivery {
    let filler = "x".repeat(1 << 20);
    (0..mib)
        .fold(
            polytomic_webhook::testing::Delivery::new().secret(SECRET),
            |delivery, _| {
                delivery.record_json(serde_json::json!({ "marker": marker, "filler": filler }))
            },
        )
        .form(polytomic_webhook::testing::BodyForm::Identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_that_would_pass_the_decoded_budget_gets_503_overloaded_until_room_is_back() {
    // Room for one 3 MiB delivery and a small one (each with its reserve), not two large ones.
    let reserve = polytomic_webhook::limit::PER_DELIVERY_RESERVE;
    let limits = ServerLimits::default().max_decoded_in_flight(2 * reserve + (4 << 20));
    let server = Holding::start(config(), limits).await;

    let held = server.hold(large("hold", 3)).await;
    let refused = server.send(large("second", 3)).await;
    refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(refused.headers[RETRY_AFTER], "1");
    // A small one still fits beside it.
    server.send(marked("small")).await.assert_accepted(1);

    server.release.send(()).unwrap();
    held.await.unwrap().assert_accepted(3);
    // The held delivery gave its share back once answered.
    server.send(large("after", 3)).await.assert_accepted(3);
}

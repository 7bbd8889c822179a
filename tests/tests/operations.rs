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
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(&ready.body[..], b"ready\n");
    up.store(false, Ordering::SeqCst);
    get(addr, "/readyz")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_beyond_the_in_flight_bound_gets_503_overloaded_and_the_next_one_is_served() {
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (entered_tx, released) = (Mutex::new(entered_tx), Mutex::new(released));
    // Holds the delivery marked `hold` inside the sink until the test releases it.
    let sink: examples::Sink = Arc::new(move |batch| {
        if marker(batch) == r#""hold""# {
            entered_tx.lock().unwrap().send(()).unwrap();
            // A generous bound, so a failed test cannot hang forever.
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
        Ok(())
    });
    let ops = examples::Ops {
        limits: ServerLimits::default()
            .max_in_flight(1)
            .queue_wait(Duration::from_millis(100)),
        ..examples::Ops::default()
    };
    let addr = serve_axum(examples::receiver_app_with(layer(config()), sink, &ops)).await;

    let held =
        tokio::spawn(async move { send(addr, encoded(addr, marked("hold").encode())).await });
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    let refused = send(addr, encoded(addr, marked("second").encode())).await;
    refused.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert_eq!(refused.headers[RETRY_AFTER], "1");

    release.send(()).unwrap();
    held.await.unwrap().assert_accepted(1);
    send(addr, encoded(addr, marked("third").encode()))
        .await
        .assert_accepted(1);
}

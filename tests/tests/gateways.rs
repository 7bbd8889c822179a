//! The same deliveries through the three servers of the examples: the axum receiver, the tonic
//! gateway (gRPC and the webhook on one port) and the plain hyper service.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::net::SocketAddr;

use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The sample delivery over HTTP/1.1 and HTTP/2 reaches the handler intact, and a refusal
/// keeps it away, whichever server runs the layer.
async fn the_same_delivery_is_received(server: Server, name: &str) {
    for version in [Version::HTTP_11, Version::HTTP_2] {
        send(server.addr, sample(server.addr, version))
            .await
            .assert_accepted(2);
        let received = server.received.take();
        assert_eq!(received.len(), 1, "{name} {version:?}");
        assert_sample(&received[0]);

        let wrong = request(
            server.addr,
            version,
            full(gzip(&sample_body())),
            |headers| {
                headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
            },
        );
        send(server.addr, wrong)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        assert!(server.received.take().is_empty(), "{name} {version:?}");
    }
}

#[tokio::test]
async fn through_the_axum_router() {
    the_same_delivery_is_received(start_axum(config()).await, "axum").await;
}

#[tokio::test]
async fn through_the_tonic_gateway() {
    the_same_delivery_is_received(start_tonic(config()).await, "tonic").await;
}

#[tokio::test]
async fn through_the_hyper_service() {
    the_same_delivery_is_received(start_hyper(config()).await, "hyper").await;
}

async fn grpc_health(addr: SocketAddr) -> Result<ServingStatus, tonic::Status> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build::<_, tonic::body::Body>(HttpConnector::new());
    let origin = format!("http://{addr}").parse().unwrap();
    let mut health = HealthClient::with_origin(client, origin);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// gRPC on the gateway's port does not go through the layer: no secret, no timestamp.
#[tokio::test]
async fn the_tonic_gateway_answers_grpc_health_checks_on_the_same_port() {
    let server = start_tonic(config()).await;
    assert_eq!(
        grpc_health(server.addr).await.unwrap(),
        ServingStatus::Serving
    );
    // And a delivery right after, on the same port.
    send(server.addr, sample(server.addr, Version::HTTP_2))
        .await
        .assert_accepted(2);
    assert_eq!(server.received.take().len(), 1);
}

/// The hyper service reads the body itself; its refusals are the extractor's.
#[tokio::test]
async fn the_hyper_service_answers_body_and_parse_refusals_like_the_extractor() {
    let server = start_hyper(config()).await;
    let addr = server.addr;
    let bomb = gzip(&vec![0u8; 16 << 20]);
    let reply = send(
        addr,
        request(addr, Version::HTTP_11, full(bomb), gzip_coded),
    )
    .await;
    reply.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(reply.json()["limit"], "ratio");

    let corrupt = full(&b"\x1f\x8b\x08\0garbage"[..]);
    send(addr, request(addr, Version::HTTP_11, corrupt, |_| {}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_compressed_body");

    let malformed = full(gzip(b"{\"event\":"));
    send(addr, request(addr, Version::HTTP_11, malformed, |_| {}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_json");

    let unknown = full(gzip(br#"{"event":"sync.something_new","object":{}}"#));
    let reply = send(addr, request(addr, Version::HTTP_11, unknown, |_| {})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["ignored_event"], "sync.something_new");

    assert!(server.received.take().is_empty());
}

/// Large refused bodies over one keep-alive connection of the hyper server: each refusal
/// arrives, and the connection carries the next delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_service_answers_refused_large_bodies_without_resetting() {
    let server = start_hyper(config()).await;
    let addr = server.addr;
    let mut senders = Vec::new();
    for i in 0..20 {
        senders.push(tokio::spawn(async move {
            let mut connection = h1_connection(addr).await;
            let body = full(vec![b'z'; (1 << 20) + i * (3 << 20) / 20]);
            let wrong = request(addr, Version::HTTP_11, body, |headers| {
                headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
            });
            send_h1(&mut connection, wrong)
                .await
                .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
            send_h1(&mut connection, sample(addr, Version::HTTP_11))
                .await
                .assert_accepted(2);
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(server.received.take().len(), 20);
}

/// A client that sends half a request head and then nothing: each example server closes the
/// connection once the header-read timeout has passed, instead of holding it open.
#[tokio::test]
async fn every_server_closes_a_connection_that_sent_half_its_headers() {
    let axum = start_axum(config()).await.addr;
    let tonic = start_tonic(config()).await.addr;
    let hyper = start_hyper(config()).await.addr;
    tokio::join!(
        assert_half_a_head_is_cut_off(axum, "axum"),
        assert_half_a_head_is_cut_off(tonic, "tonic"),
        assert_half_a_head_is_cut_off(hyper, "hyper"),
    );
}

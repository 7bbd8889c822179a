//! The receiver's router (the `receiver` example's app) served as the example serves it on
//! `127.0.0.1:0`, driven by hyper's client over TCP.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Version};
use polytomic_webhook::prelude::*;
use support::*;

#[tokio::test]
async fn gzip_with_and_without_content_encoding_and_identity_give_the_same_records() {
    let server = start_axum(config()).await;
    let body = sample_body();
    let gzipped = gzip(&body);
    let cases: [(&str, Request<ClientBody>); 3] = [
        (
            "gzip with Content-Encoding",
            request(
                server.addr,
                Version::HTTP_11,
                full(gzipped.clone()),
                gzip_coded,
            ),
        ),
        (
            "gzip without Content-Encoding",
            request(server.addr, Version::HTTP_11, full(gzipped), |_| {}),
        ),
        (
            "identity",
            request(server.addr, Version::HTTP_11, full(body), |_| {}),
        ),
    ];
    for (name, request) in cases {
        let reply = send(server.addr, request).await;
        reply.assert_accepted(2);
        let received = server.received.take();
        assert_eq!(received.len(), 1, "{name}");
        assert_sample(&received[0]);
    }
}

#[tokio::test]
async fn a_chunked_body_is_received_whole() {
    let server = start_axum(config()).await;
    // Small chunks, so the gzip header itself is split across frames.
    let request = request(
        server.addr,
        Version::HTTP_11,
        Chunked::body(&gzip(&sample_body()), 7),
        gzip_coded,
    );
    assert!(request.headers().get("content-length").is_none());
    send(server.addr, request).await.assert_accepted(2);
    let received = server.received.take();
    assert_eq!(received.len(), 1);
    assert_sample(&received[0]);
}

#[tokio::test]
async fn several_deliveries_share_one_keep_alive_connection() {
    let server = start_axum(config()).await;
    let mut connection = h1_connection(server.addr).await;
    // Accepted and rejected deliveries alternate: a refusal must not cost the connection.
    for round in 0..3 {
        send_h1(&mut connection, sample(server.addr, Version::HTTP_11))
            .await
            .assert_accepted(2);
        let wrong = request(
            server.addr,
            Version::HTTP_11,
            full(gzip(&sample_body())),
            |headers| {
                headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
            },
        );
        send_h1(&mut connection, wrong)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(server.received.take().len(), 1, "round {round}");
    }
    assert!(!connection.is_closed());
}

#[tokio::test]
async fn http2_cleartext_with_prior_knowledge() {
    let server = start_axum(config()).await;
    let mut connection = h2_connection(server.addr).await;
    for _ in 0..2 {
        send_h2(&mut connection, sample(server.addr, Version::HTTP_2))
            .await
            .assert_accepted(2);
    }
    let received = server.received.take();
    assert_eq!(received.len(), 2);
    received.iter().for_each(assert_sample);
}

#[tokio::test]
async fn the_health_route_needs_no_secret() {
    let server = start_axum(config()).await;
    let request = Request::get("/healthz")
        .header("host", server.addr.to_string())
        .body(full(""))
        .unwrap();
    let reply = send(server.addr, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"ok\n");
}

/// Every refusal of the documented table that a sender can cause, over the wire; the handler
/// never runs for any of them.
#[tokio::test]
async fn refusals_answer_their_documented_status_and_code_and_never_reach_the_handler() {
    let server = start_axum(config()).await;
    let addr = server.addr;
    let sample = || full(gzip(&sample_body()));
    // Zeros compress about 1000:1, so the 100:1 ratio limit fires after the first MiB.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    let cases: Vec<(&str, Request<ClientBody>, StatusCode, &str)> = vec![
        (
            "wrong secret",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
            }),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "no Authorization",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.remove(AUTHORIZATION);
            }),
            StatusCode::UNAUTHORIZED,
            "missing_authorization",
        ),
        (
            "stale timestamp",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.insert(
                    "polytomic-signature-timestamp",
                    timestamp(-10 * 60).parse().unwrap(),
                );
            }),
            StatusCode::UNAUTHORIZED,
            "timestamp_too_old",
        ),
        (
            "future timestamp",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.insert(
                    "polytomic-signature-timestamp",
                    timestamp(10 * 60).parse().unwrap(),
                );
            }),
            StatusCode::UNAUTHORIZED,
            "timestamp_in_future",
        ),
        (
            "decompression bomb",
            request(addr, Version::HTTP_11, full(bomb), gzip_coded),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "corrupt gzip",
            request(
                addr,
                Version::HTTP_11,
                full(&b"\x1f\x8b\x08\0garbage"[..]),
                |_| {},
            ),
            StatusCode::BAD_REQUEST,
            "invalid_compressed_body",
        ),
        (
            "unsupported coding",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.insert("content-encoding", HeaderValue::from_static("compress"));
            }),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
        ),
        (
            "malformed JSON",
            request(addr, Version::HTTP_11, full(gzip(b"{\"event\":")), |_| {}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not a batch",
            request(
                addr,
                Version::HTTP_11,
                full(gzip(br#"{"event":"sync.records","object":{"id":"x"}}"#)),
                |_| {},
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_envelope",
        ),
        (
            "not JSON content",
            request(addr, Version::HTTP_11, sample(), |headers| {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (name, request, status, code) in cases {
        let reply = send(addr, request).await;
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        reply.assert_problem(status, code);
        assert!(
            server.received.take().is_empty(),
            "{name} reached the handler"
        );
    }
    // The bomb's answer says which limit fired.
    let bomb = gzip(&vec![0u8; 16 << 20]);
    let reply = send(
        addr,
        request(addr, Version::HTTP_11, full(bomb), gzip_coded),
    )
    .await;
    assert_eq!(reply.json()["limit"], "ratio");
}

#[tokio::test]
async fn an_unknown_event_is_acknowledged_or_rejected_as_configured_without_the_handler() {
    let unknown = || full(gzip(br#"{"event":"sync.something_new","object":{}}"#));

    let server = start_axum(config()).await;
    let reply = send(
        server.addr,
        request(server.addr, Version::HTTP_11, unknown(), |_| {}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        serde_json::json!({"ignored_event": "sync.something_new"})
    );
    assert!(server.received.take().is_empty());

    let strict = config().event(EventConfig::default().unknown_events(UnknownEventPolicy::Reject));
    let server = start_axum(strict).await;
    let reply = send(
        server.addr,
        request(server.addr, Version::HTTP_11, unknown(), |_| {}),
    )
    .await;
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown_event");
    assert!(server.received.take().is_empty());
}

/// A body of `len` bytes that is not gzip, so nothing would decode it even if it were read.
fn filler(len: usize, seed: u8) -> Vec<u8> {
    vec![b'a' + seed % 26; len]
}

/// Polytomic must be able to show "401 invalid_token", not "connection reset by peer": the
/// server answers before reading the body, and the client is still sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_that_was_never_read_still_gets_its_answer_under_load() {
    let server = start_axum(config()).await;
    let addr = server.addr;
    let mut senders = Vec::new();
    for i in 0..50u8 {
        senders.push(tokio::spawn(async move {
            let len = (1 << 20) + usize::from(i) * (3 << 20) / 50; // 1 to 4 MiB
            let request = request(addr, Version::HTTP_11, full(filler(len, i)), |headers| {
                headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
            });
            let mut connection = h1_connection(addr).await;
            let reply = send_h1(&mut connection, request).await;
            reply.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
            // The connection survives the refusal: the next delivery on it is accepted.
            send_h1(&mut connection, sample(addr, Version::HTTP_11))
                .await
                .assert_accepted(2);
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let received = server.received.take();
    assert_eq!(received.len(), 50, "only the 50 valid deliveries");
    received.iter().for_each(assert_sample);
}

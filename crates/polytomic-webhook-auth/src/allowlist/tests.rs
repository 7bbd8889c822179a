use std::net::{IpAddr, SocketAddr};

use http::{Request, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::test_support::{CountedBody, Recorder, assert_passed, assert_problem, capture_logs};
use crate::{ClientIp, PeerAddr};

fn layer() -> SourceIpAllowlistLayer {
    SourceIpAllowlistLayer::new([
        parse_block("203.0.113.0/24").unwrap(),
        parse_block("2001:db8:7::/48").unwrap(),
    ])
    .trusted_proxies([parse_block("10.0.0.0/8").unwrap()])
}

fn request_from(peer: &str, headers: &[(&str, &str)]) -> Request<CountedBody> {
    let mut builder = Request::post("/webhook");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(CountedBody::default()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    request
}

async fn assert_allowed(request: Request<CountedBody>, client: &str) {
    let recorder = Recorder::default();
    let response = layer()
        .layer(recorder.service())
        .oneshot(request)
        .await
        .unwrap();
    assert_passed(response).await;
    let expected = ClientIp(client.parse::<IpAddr>().unwrap());
    assert_eq!(recorder.extensions().get::<ClientIp>(), Some(&expected));
}

async fn assert_forbidden(request: Request<CountedBody>) -> serde_json::Value {
    assert_forbidden_by(layer(), request).await
}

async fn assert_forbidden_by(
    layer: SourceIpAllowlistLayer,
    request: Request<CountedBody>,
) -> serde_json::Value {
    let recorder = Recorder::default();
    let response = layer
        .layer(recorder.service())
        .oneshot(request)
        .await
        .unwrap();
    let json = assert_problem(response, StatusCode::FORBIDDEN, "source_ip_not_allowed").await;
    assert!(!recorder.called());
    json
}

#[tokio::test]
async fn peer_inside_a_block_is_allowed() {
    assert_allowed(request_from("203.0.113.20:5000", &[]), "203.0.113.20").await;
    assert_allowed(
        request_from("[2001:db8:7:1::9]:443", &[]),
        "2001:db8:7:1::9",
    )
    .await;
}

#[tokio::test]
async fn peer_outside_every_block_is_forbidden() {
    let json = assert_forbidden(request_from("198.51.100.20:5000", &[])).await;
    assert_eq!(
        json["detail"],
        "the source address 198.51.100.20 is not allowed"
    );
    assert_forbidden(request_from("[2001:db8:8::1]:443", &[])).await;
}

#[tokio::test]
async fn ipv4_mapped_peer_matches_the_ipv4_block() {
    assert_allowed(
        request_from("[::ffff:203.0.113.20]:5000", &[]),
        "::ffff:203.0.113.20",
    )
    .await;
    assert_forbidden(request_from("[::ffff:198.51.100.20]:5000", &[])).await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let request = request_from("198.51.100.20:5000", &[("x-forwarded-for", "203.0.113.20")]);
    assert_forbidden(request).await;
    let request = request_from("198.51.100.20:5000", &[("forwarded", "for=203.0.113.20")]);
    assert_forbidden(request).await;
}

#[tokio::test]
async fn client_behind_a_trusted_proxy() {
    let request = request_from(
        "10.1.2.3:5000",
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.20")],
    );
    assert_allowed(request, "203.0.113.20").await;
    let request = request_from(
        "10.1.2.3:5000",
        &[("forwarded", r#"for="[2001:db8:7::5]:1234""#)],
    );
    let recorder = Recorder::default();
    let service = layer()
        .forwarded_header(ForwardedHeader::Forwarded)
        .layer(recorder.service());
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(recorder.called());
}

#[tokio::test]
async fn a_forged_header_the_proxy_does_not_write_is_ignored() {
    // The proxy appends to X-Forwarded-For and passes the sender's `Forwarded` through.
    let request = request_from(
        "10.1.2.3:5000",
        &[
            ("forwarded", "for=203.0.113.20"),
            ("x-forwarded-for", "198.51.100.1"),
        ],
    );
    let json = assert_forbidden(request).await;
    assert_eq!(
        json["detail"],
        "the source address 198.51.100.1 is not allowed"
    );
}

#[tokio::test]
async fn forged_entries_left_of_the_real_client_do_not_help() {
    // The sender wrote an allowed address; the proxy appended the sender's real one.
    let request = request_from(
        "10.1.2.3:5000",
        &[("x-forwarded-for", "203.0.113.20, 198.51.100.1")],
    );
    let json = assert_forbidden(request).await;
    assert_eq!(
        json["detail"],
        "the source address 198.51.100.1 is not allowed"
    );
}

#[tokio::test]
async fn unreadable_forwarded_entry_is_forbidden() {
    let request = request_from("10.1.2.3:5000", &[("x-forwarded-for", "unknown")]);
    assert_forbidden(request).await;
}

/// The detail of a refusal for a client the forwarding header does not identify.
const UNTRACEABLE: &str =
    "the forwarding headers set by a trusted proxy do not identify the client";

/// Issue 12, point 1: the client leaves a quoted string open (or closes it with an escaped
/// quote) so that the `, for=…` its trusted proxy appends to the same line falls inside it.
/// The header cannot be read as a whole, so the request is refused, never attributed to the
/// allowed address the client wrote.
#[tokio::test]
async fn forwarded_quoting_cannot_hide_the_proxys_entry() {
    for client in [r#"for=203.0.113.5;x=""#, r#"for=203.0.113.5;x="\""#] {
        let same_line = format!("{client}, for=198.51.100.66");
        let lines = [
            vec![("forwarded", same_line.as_str())],
            vec![("forwarded", client), ("forwarded", "for=198.51.100.66")],
        ];
        for headers in lines {
            let layer = layer().forwarded_header(ForwardedHeader::Forwarded);
            let json = assert_forbidden_by(layer, request_from("10.1.2.3:5000", &headers)).await;
            assert_eq!(
                json["detail"], UNTRACEABLE,
                "{headers:?}: attributed, not refused"
            );
        }
    }
}

#[tokio::test]
async fn garbage_in_x_forwarded_for_is_forbidden() {
    let request = request_from(
        "10.1.2.3:5000",
        &[("x-forwarded-for", "garbage, 203.0.113.20")],
    );
    let json = assert_forbidden(request).await;
    assert_eq!(json["detail"], UNTRACEABLE);
}

#[tokio::test]
async fn missing_peer_address_fails_closed_with_a_clear_log() {
    let recorder = Recorder::default();
    let mut service = layer().layer(recorder.service());
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let request = Request::post("/webhook")
        .body(CountedBody::default())
        .unwrap();
    let (future, logs) = capture_logs(|| service.call(request));
    let json = assert_problem(
        future.await.unwrap(),
        StatusCode::FORBIDDEN,
        "source_ip_not_allowed",
    )
    .await;
    assert!(!recorder.called());
    assert_eq!(
        json["detail"],
        "the source address of the request is unknown"
    );
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("did not provide the peer address"), "{logs}");
    assert!(logs.contains("code=\"source_ip_not_allowed\""), "{logs}");
}

#[tokio::test]
async fn refusals_are_logged_with_the_peer() {
    let recorder = Recorder::default();
    let mut service = layer().layer(recorder.service());
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let request = request_from("198.51.100.20:5000", &[]);
    let (future, logs) = capture_logs(|| service.call(request));
    assert_problem(
        future.await.unwrap(),
        StatusCode::FORBIDDEN,
        "source_ip_not_allowed",
    )
    .await;
    assert!(logs.contains("peer=198.51.100.20:5000"), "{logs}");
}

#[tokio::test]
async fn empty_allowlist_refuses_everything() {
    let recorder = Recorder::default();
    let service = SourceIpAllowlistLayer::new([]).layer(recorder.service());
    let response = service
        .oneshot(request_from("203.0.113.20:1", &[]))
        .await
        .unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, "source_ip_not_allowed").await;
    assert!(!recorder.called());
}

#[tokio::test]
async fn built_from_config() {
    let config: AllowlistConfig = serde_json::from_value(serde_json::json!({
        "allow": ["198.51.100.20"],
    }))
    .unwrap();
    let recorder = Recorder::default();
    let service = SourceIpAllowlistLayer::from_config(config).layer(recorder.service());
    let response = service
        .oneshot(request_from("198.51.100.20:1", &[]))
        .await
        .unwrap();
    assert_passed(response).await;
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn reads_axum_connect_info() {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::routing::post;

    let app = |peer: &str| {
        Router::new()
            .route("/webhook", post(|| async { "ok" }))
            .layer(layer())
            .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    };
    let request = || Request::post("/webhook").body(Body::empty()).unwrap();

    let response = app("203.0.113.20:5000").oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app("198.51.100.20:5000").oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

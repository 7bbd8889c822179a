use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::authorization::{AuthorizationError, CHALLENGE, INVALID_TOKEN_CHALLENGE};
use crate::test_support::{CountedBody, Recorder, assert_passed, assert_problem, capture_logs};
use crate::timestamp::{SIGNATURE_TIMESTAMP, TimestampError};
use crate::{DeliveredAt, DrainPolicy, FixedClock, PeerAddr, Secret, SecretSet, TimestampWindow};

/// The bearer token of the sample delivery in Polytomic's documentation.
const SAMPLE_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJ3ZWJob29rIiwianRpIjoiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIiwiaXNzIjoiaHR0cHM6Ly9hcHAucG9seXRvbWljLWxvY2FsLmNvbTo4NDQzLyJ9.FBSU_fC1YFyWhMSPErRono4BPfkIeT3MkRdZrepiP3c";
const SAMPLE_TIMESTAMP: &str = "2021-06-01T22:55:36Z";
const SECRET: &str = "correct-horse-battery-staple";

fn sample_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap()
}

fn layer() -> BearerAuthLayer<FixedClock> {
    BearerAuthLayer::new(Secret::new(SECRET).unwrap()).clock(FixedClock(sample_instant()))
}

fn request(headers: &[(&str, &str)]) -> Request<CountedBody> {
    let mut builder = Request::post("/webhook");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(CountedBody::default()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr("203.0.113.9:4711".parse::<SocketAddr>().unwrap()));
    request
}

fn authorized(timestamp: &str) -> Request<CountedBody> {
    request(&[
        ("authorization", &format!("Bearer {SECRET}")),
        ("polytomic-signature-timestamp", timestamp),
    ])
}

/// Sends `request` through `layer` and checks it was refused with `code` and `challenge`,
/// without calling the inner service.
async fn assert_refused<C>(
    layer: &BearerAuthLayer<C>,
    request: Request<CountedBody>,
    code: &str,
    challenge: &str,
) -> serde_json::Value
where
    C: crate::Clock + Clone + Send + Sync + 'static,
{
    let recorder = Recorder::default();
    let response = layer
        .layer(recorder.service())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(
        response.headers().get_all(WWW_AUTHENTICATE).iter().count(),
        1
    );
    assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
    let json = assert_problem(response, StatusCode::UNAUTHORIZED, code).await;
    assert!(
        !recorder.called(),
        "the inner service was called for {code}"
    );
    json
}

/// Sends `request` through `layer`, checks it reached the inner service, and returns what the
/// inner service saw as `DeliveredAt`.
async fn assert_accepted<C>(
    layer: &BearerAuthLayer<C>,
    request: Request<CountedBody>,
) -> Option<DeliveredAt>
where
    C: crate::Clock + Clone + Send + Sync + 'static,
{
    let recorder = Recorder::default();
    let response = layer
        .layer(recorder.service())
        .oneshot(request)
        .await
        .unwrap();
    assert_passed(response).await;
    recorder.extensions().get::<DeliveredAt>().copied()
}

#[tokio::test]
async fn polytomic_sample_delivery_passes() {
    let layer =
        BearerAuthLayer::new(Secret::new(SAMPLE_JWT).unwrap()).clock(FixedClock(sample_instant()));
    let request = request(&[
        ("authorization", &format!("Bearer {SAMPLE_JWT}")),
        ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
        ("content-type", "application/json"),
        ("accept-encoding", "gzip"),
        ("user-agent", "Polytomic/rel2021.05.25"),
    ]);
    let delivered = assert_accepted(&layer, request).await;
    assert_eq!(delivered, Some(DeliveredAt(sample_instant())));
}

#[tokio::test]
async fn scheme_is_case_insensitive_and_spaces_are_tolerated() {
    for value in [
        format!("Bearer {SECRET}"),
        format!("bearer {SECRET}"),
        format!("BEARER   {SECRET}"),
        format!("Bearer {SECRET}  "),
    ] {
        let request = request(&[
            ("authorization", &value),
            ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
        ]);
        assert!(
            assert_accepted(&layer(), request).await.is_some(),
            "{value}"
        );
    }
}

#[tokio::test]
async fn missing_authorization() {
    let request = request(&[("polytomic-signature-timestamp", SAMPLE_TIMESTAMP)]);
    assert_refused(&layer(), request, "missing_authorization", CHALLENGE).await;
}

#[tokio::test]
async fn other_scheme() {
    let request = request(&[
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
    ]);
    assert_refused(
        &layer(),
        request,
        "unsupported_authorization_scheme",
        CHALLENGE,
    )
    .await;
}

#[tokio::test]
async fn empty_token() {
    let request = request(&[
        ("authorization", "Bearer   "),
        ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
    ]);
    assert_refused(&layer(), request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
}

#[tokio::test]
async fn non_visible_ascii_header() {
    let mut request = authorized(SAMPLE_TIMESTAMP);
    let value = format!("Bearer {SECRET}\u{e9}");
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(value.as_bytes()).unwrap(),
    );
    assert_refused(&layer(), request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
}

#[tokio::test]
async fn two_authorization_headers() {
    let mut request = authorized(SAMPLE_TIMESTAMP);
    request.headers_mut().append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
    );
    assert_refused(&layer(), request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
}

#[tokio::test]
async fn wrong_token() {
    for token in [
        "wrong",
        "correct-horse-battery-stapl",
        "correct-horse-battery-staplee",
    ] {
        let request = request(&[
            ("authorization", &format!("Bearer {token}")),
            ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
        ]);
        let json =
            assert_refused(&layer(), request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
        assert!(!json.to_string().contains(token));
    }
}

#[tokio::test]
async fn rotation_accepts_both_configured_secrets_and_refuses_a_third() {
    let secrets = SecretSet::try_from_iter(["old-secret", "new-secret"]).unwrap();
    let layer = BearerAuthLayer::new(secrets).clock(FixedClock(sample_instant()));
    for token in ["old-secret", "new-secret"] {
        let request = request(&[
            ("authorization", &format!("Bearer {token}")),
            ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
        ]);
        assert!(assert_accepted(&layer, request).await.is_some(), "{token}");
    }
    let request = request(&[
        ("authorization", "Bearer third-secret"),
        ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
    ]);
    assert_refused(&layer, request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
}

#[tokio::test]
async fn token_is_checked_before_the_timestamp() {
    let request = request(&[
        ("authorization", "Bearer wrong"),
        ("polytomic-signature-timestamp", "not a time"),
    ]);
    assert_refused(&layer(), request, "invalid_token", INVALID_TOKEN_CHALLENGE).await;
}

#[tokio::test]
async fn missing_timestamp() {
    let request = request(&[("authorization", &format!("Bearer {SECRET}"))]);
    assert_refused(&layer(), request, "missing_timestamp", CHALLENGE).await;
}

#[tokio::test]
async fn malformed_timestamps() {
    for value in [
        "1622588136",
        "2021-06-01 22:55",
        "Tue, 01 Jun 2021 22:55:36 GMT",
        "",
    ] {
        assert_refused(
            &layer(),
            authorized(value),
            "malformed_timestamp",
            CHALLENGE,
        )
        .await;
    }
    let mut request = authorized(SAMPLE_TIMESTAMP);
    request.headers_mut().append(
        SIGNATURE_TIMESTAMP,
        HeaderValue::from_static(SAMPLE_TIMESTAMP),
    );
    assert_refused(&layer(), request, "malformed_timestamp", CHALLENGE).await;
}

#[tokio::test]
async fn offsets_and_fractional_seconds_are_accepted() {
    let delivered = assert_accepted(&layer(), authorized("2021-06-02T00:55:35.5+02:00")).await;
    let expected = sample_instant() - chrono::TimeDelta::milliseconds(500);
    assert_eq!(delivered, Some(DeliveredAt(expected)));
}

#[tokio::test]
async fn timestamp_too_old() {
    // Default max age: five minutes. 22:50:36 is exactly five minutes before the clock.
    assert!(
        assert_accepted(&layer(), authorized("2021-06-01T22:50:36Z"))
            .await
            .is_some()
    );
    let json = assert_refused(
        &layer(),
        authorized("2021-06-01T22:50:35Z"),
        "timestamp_too_old",
        CHALLENGE,
    )
    .await;
    assert_eq!(
        json["detail"],
        "the delivery is stamped 301 s in the past; at most 300 s is accepted"
    );
    assert_eq!(json["max_age_secs"], 300);
}

#[tokio::test]
async fn timestamp_in_future() {
    // Default future skew: one minute.
    assert!(
        assert_accepted(&layer(), authorized("2021-06-01T22:56:36Z"))
            .await
            .is_some()
    );
    let json = assert_refused(
        &layer(),
        authorized("2021-06-01T22:56:37Z"),
        "timestamp_in_future",
        CHALLENGE,
    )
    .await;
    assert_eq!(
        json["detail"],
        "the delivery is stamped 61 s in the future; at most 60 s is accepted"
    );
}

#[tokio::test]
async fn window_bounds_are_configurable() {
    let layer = layer().timestamp_window(Some(TimestampWindow::new(
        Duration::from_secs(10),
        Duration::from_secs(0),
    )));
    assert!(
        assert_accepted(&layer, authorized("2021-06-01T22:55:26Z"))
            .await
            .is_some()
    );
    assert_refused(
        &layer,
        authorized("2021-06-01T22:55:25Z"),
        "timestamp_too_old",
        CHALLENGE,
    )
    .await;
    assert_refused(
        &layer,
        authorized("2021-06-01T22:55:37Z"),
        "timestamp_in_future",
        CHALLENGE,
    )
    .await;
}

#[tokio::test]
async fn window_can_be_disabled() {
    let layer = layer().timestamp_window(None);
    let delivered = assert_accepted(&layer, authorized("2001-01-01T00:00:00Z")).await;
    assert_eq!(
        delivered,
        Some(DeliveredAt(
            Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap()
        ))
    );
    assert_eq!(assert_accepted(&layer, authorized("garbage")).await, None);
    let request = request(&[("authorization", &format!("Bearer {SECRET}"))]);
    assert_eq!(assert_accepted(&layer, request).await, None);
}

#[tokio::test]
async fn timestamp_can_be_optional() {
    let layer = layer().require_timestamp(false);
    let request = request(&[("authorization", &format!("Bearer {SECRET}"))]);
    assert_eq!(assert_accepted(&layer, request).await, None);
    // A timestamp that is present is still checked.
    assert_refused(
        &layer,
        authorized("2021-06-01T22:00:00Z"),
        "timestamp_too_old",
        CHALLENGE,
    )
    .await;
    assert_refused(
        &layer,
        authorized("yesterday"),
        "malformed_timestamp",
        CHALLENGE,
    )
    .await;
}

#[tokio::test]
async fn clock_can_be_a_closure() {
    let layer = layer().clock(|| Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    assert_refused(
        &layer,
        authorized(SAMPLE_TIMESTAMP),
        "timestamp_too_old",
        CHALLENGE,
    )
    .await;
}

#[tokio::test]
async fn built_from_config() {
    let config: BearerAuthConfig = serde_json::from_value(serde_json::json!({
        "secrets": [SECRET, "next"],
        "check_timestamp": false,
    }))
    .unwrap();
    let layer = BearerAuthLayer::from_config(config);
    let request = request(&[("authorization", "Bearer next")]);
    assert_eq!(assert_accepted(&layer, request).await, None);

    let config: BearerAuthConfig = serde_json::from_value(serde_json::json!({
        "secrets": SECRET,
        "timestamp_window": {"max_age_secs": 1},
    }))
    .unwrap();
    let layer = BearerAuthLayer::from_config(config).clock(FixedClock(sample_instant()));
    assert_refused(
        &layer,
        authorized("2021-06-01T22:55:34Z"),
        "timestamp_too_old",
        CHALLENGE,
    )
    .await;
}

#[test]
fn debug_output_never_contains_a_secret() {
    let secrets = SecretSet::try_from_iter([SECRET, SAMPLE_JWT]).unwrap();
    let layer = BearerAuthLayer::new(secrets.clone()).clock(FixedClock(sample_instant()));
    let service = layer.layer(tower::service_fn(|_: Request<CountedBody>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let config: BearerAuthConfig =
        serde_json::from_value(serde_json::json!({ "secrets": [SECRET] })).unwrap();
    let errors: Vec<crate::AuthRejection> = vec![
        AuthorizationError::Missing.into(),
        AuthorizationError::Multiple.into(),
        AuthorizationError::UnsupportedScheme.into(),
        AuthorizationError::EmptyToken.into(),
        AuthorizationError::InvalidCharacters.into(),
        AuthorizationError::NoMatch.into(),
        TimestampError::Missing.into(),
        TimestampError::Malformed.into(),
        TimestampError::TooOld {
            age: chrono::TimeDelta::seconds(1),
            max_age: Duration::ZERO,
        }
        .into(),
        TimestampError::InFuture {
            ahead: chrono::TimeDelta::seconds(1),
            max_future_skew: Duration::ZERO,
        }
        .into(),
    ];
    let mut texts = vec![
        format!("{layer:?}"),
        format!("{layer:#?}"),
        format!("{service:?}"),
        format!("{secrets:?}"),
        format!("{config:?}"),
    ];
    for error in &errors {
        texts.push(format!("{error:?} {error} {}", error.to_problem()));
        texts.push(String::from_utf8(error.to_problem().to_json().to_vec()).unwrap());
    }
    for text in texts {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("eyJ"), "{text}");
    }
    // The layer's Debug still says something useful.
    assert!(format!("{layer:?}").contains("len: 2"));
}

#[tokio::test]
async fn rejections_are_logged_with_code_and_peer_but_not_the_token() {
    let presented = "presented-but-wrong-token";
    let recorder = Recorder::default();
    let mut service = layer().layer(recorder.service());
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let request = request(&[
        ("authorization", &format!("Bearer {presented}")),
        ("polytomic-signature-timestamp", SAMPLE_TIMESTAMP),
    ]);
    let (future, logs) = capture_logs(|| service.call(request));
    let response = future.await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("code=\"invalid_token\""), "{logs}");
    assert!(logs.contains("peer=203.0.113.9:4711"), "{logs}");
    assert!(!logs.contains(presented), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}

#[tokio::test]
async fn accepted_requests_are_not_logged_as_rejections() {
    let recorder = Recorder::default();
    let mut service = layer().layer(recorder.service());
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let (future, logs) = capture_logs(|| service.call(authorized(SAMPLE_TIMESTAMP)));
    assert_passed(future.await.unwrap()).await;
    assert!(logs.is_empty(), "{logs}");
}

#[tokio::test]
async fn works_in_an_axum_router() {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;

    let app = Router::new()
        .route(
            "/webhook",
            post(
                |axum::Extension(DeliveredAt(at)): axum::Extension<DeliveredAt>| async move {
                    at.to_rfc3339()
                },
            ),
        )
        .layer(layer());
    let request = Request::post("/webhook")
        .header("authorization", format!("Bearer {SECRET}"))
        .header("polytomic-signature-timestamp", SAMPLE_TIMESTAMP)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"2021-06-01T22:55:36+00:00");

    let request = Request::post("/webhook").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], CHALLENGE);
}

/// Alone, the stage drains a refused body as the composed layer does (so an HTTP/1.1 client
/// still sending hears the 401), leaves it unread with `DrainPolicy::none()`, and never reads
/// the body of a request it lets through.
#[tokio::test]
async fn a_refused_body_is_drained_by_default_and_an_accepted_one_is_left_to_the_service() {
    let refused = |body: &CountedBody| {
        let mut request = request(&[]);
        *request.body_mut() = body.clone();
        request
    };
    let body = CountedBody::of_len(4096);
    assert_refused(&layer(), refused(&body), "missing_authorization", CHALLENGE).await;
    // One poll for the frame, one for the end.
    assert_eq!(
        body.polls(),
        2,
        "the refused body was not drained to its end"
    );

    let body = CountedBody::of_len(4096);
    let undrained = layer().drain(DrainPolicy::none());
    assert_refused(
        &undrained,
        refused(&body),
        "missing_authorization",
        CHALLENGE,
    )
    .await;
    assert_eq!(body.polls(), 0, "DrainPolicy::none() read the refused body");

    let body = CountedBody::of_len(4096);
    let mut accepted = authorized(SAMPLE_TIMESTAMP);
    *accepted.body_mut() = body.clone();
    assert!(assert_accepted(&layer(), accepted).await.is_some());
    assert_eq!(body.polls(), 0, "the stage read a body it let through");
}

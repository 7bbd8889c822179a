//! The stage layers composed by hand (allowlist, then bearer, then decompression, then the
//! extractor) answer every delivery as `PolytomicWebhookLayer` does: the same status, headers
//! and problem body, the same refused body drained (or not), under the same deadline, and a
//! log line naming the same code.
//!
//! The stages leave the body type of a request they pass alone, so the hand-made stack puts
//! the body deadline on with `TimeoutBody` in front of them, as the composed layer does first
//! thing; for the bodies they refuse, the auth stages' `DrainPolicy` carries the same deadline.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use polytomic_webhook::auth::allowlist::{AllowlistConfig, SourceIpAllowlistLayer};
use polytomic_webhook::auth::{BearerAuthLayer, DrainPolicy, FixedClock, PeerAddr};
use polytomic_webhook::decompression::{DecompressionConfig, DecompressionLayer};
use polytomic_webhook::event::WithoutLayer;
use polytomic_webhook::prelude::*;
use polytomic_webhook::testing::{BodyForm, Delivery, capture_logs};
use polytomic_webhook::{PolytomicWebhook, TimeoutBody};
use tokio::time::{Instant, Interval, interval};
use tower::{Layer, ServiceBuilder, ServiceExt};

const SECRET: &str = "stage-equivalence-secret";
const ALLOWED_PEER: &str = "203.0.113.9:4711";
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_COMPRESSED: u64 = 64 * 1024;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 6, 1, 22, 55, 36).unwrap()
}

fn allowlist() -> AllowlistConfig {
    serde_json::from_value(serde_json::json!({"allow": ["203.0.113.0/24"]})).unwrap()
}

fn decompression() -> DecompressionConfig {
    serde_json::from_value(serde_json::json!({
        "max_compressed_bytes": MAX_COMPRESSED,
        "max_decompressed_bytes": 1024 * 1024,
    }))
    .unwrap()
}

/// Serves both stacks, so it parses without asking for the composed layer's admission: the
/// stages composed by hand do not give it (the extractors fail closed without the layer).
async fn receive(WithoutLayer(batch): WithoutLayer<SyncRecords>) -> Ack {
    Ack::from(&batch)
}

/// A request body that records whether it was read to its end, optionally followed by one byte
/// every half second forever (a sender that trickles, too slowly to ever finish).
struct Observed {
    chunks: VecDeque<Bytes>,
    ended: Arc<AtomicBool>,
    trickle: Option<Interval>,
}

impl From<Bytes> for Observed {
    fn from(bytes: Bytes) -> Self {
        // Several frames, as a body arriving over the network would.
        let chunks = bytes
            .chunks(64)
            .map(Bytes::copy_from_slice)
            .collect::<VecDeque<_>>();
        Self {
            chunks,
            ended: Arc::default(),
            trickle: None,
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trickle) = &mut self.trickle {
            std::task::ready!(trickle.poll_tick(cx));
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" ")))));
        }
        self.ended.store(true, Ordering::SeqCst);
        Poll::Ready(None)
    }
}

/// Which part of the stack refuses a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    /// Nobody: the handler answers.
    Handler,
    /// The allowlist or the bearer check, from the head: the body is drained.
    Head,
    /// The decompression check, from the head: the body is left unread.
    Decompression,
    /// The extractor, while reading the body.
    Extractor,
}

/// One delivery, built twice (once per stack), each time with its own end-of-body flag.
#[derive(Clone)]
struct Case {
    name: &'static str,
    by: By,
    delivery: Delivery,
    peer: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    trickle: bool,
}

impl Case {
    fn new(name: &'static str, by: By, delivery: Delivery) -> Self {
        Self {
            name,
            by,
            delivery,
            peer: Some(ALLOWED_PEER),
            headers: Vec::new(),
            trickle: false,
        }
    }

    fn peer(mut self, peer: Option<&'static str>) -> Self {
        self.peer = peer;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn trickle(mut self) -> Self {
        self.trickle = true;
        self
    }

    fn request(&self) -> (Request<Observed>, Arc<AtomicBool>) {
        let mut request = self.delivery.clone().build_with::<Observed>();
        for (name, value) in &self.headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        if let Some(peer) = self.peer {
            request
                .extensions_mut()
                .insert(PeerAddr(peer.parse().unwrap()));
        }
        if self.trickle {
            request.body_mut().trickle = Some(interval(Duration::from_millis(500)));
        }
        let ended = Arc::clone(&request.body().ended);
        (request, ended)
    }
}

/// What a client and an operator see of one answer.
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Whether the request body was read to its end.
    drained: bool,
    /// How long the answer took, on tokio's paused clock.
    waited: Duration,
}

async fn answer<S, B>(service: S, case: &Case) -> (Seen, String)
where
    S: tower::Service<Request<Observed>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let (request, ended) = case.request();
    let started = Instant::now();
    let (response, logs) = capture_logs(service.oneshot(request)).await;
    let response = response.unwrap();
    let waited = started.elapsed();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let drained = ended.load(Ordering::SeqCst);
    let seen = Seen {
        status,
        headers,
        body,
        drained,
        waited,
    };
    (seen, logs)
}

fn composed(router: Router) -> PolytomicWebhook<Router, FixedClock> {
    let config = PolytomicWebhookConfig::default()
        .secret(Secret::new(SECRET).unwrap())
        .allowlist(allowlist())
        .decompression(decompression())
        .body_timeout(Some(BODY_TIMEOUT));
    let layer = PolytomicWebhookLayer::new(config)
        .unwrap()
        .clock(FixedClock(now()));
    layer.layer(router)
}

fn by_hand(
    router: Router,
) -> impl tower::Service<
    Request<Observed>,
    Response = http::Response<impl Body<Data = Bytes, Error = axum::Error>>,
    Error = Infallible,
> {
    // What the composed layer does with a body it refuses unread: drain it within the
    // compressed-size limit, under the body deadline.
    let drain = DrainPolicy::drain(MAX_COMPRESSED, Some(BODY_TIMEOUT));
    ServiceBuilder::new()
        // The deadline for a body that passes the checks: the stages leave its type alone.
        .map_request(|request: Request<Observed>| {
            request.map(|body| TimeoutBody::new(body, Some(BODY_TIMEOUT)))
        })
        .layer(SourceIpAllowlistLayer::from_config(allowlist()).drain(drain))
        .layer(
            BearerAuthLayer::new(Secret::new(SECRET).unwrap())
                .clock(FixedClock(now()))
                .drain(drain),
        )
        .layer(DecompressionLayer::from_config(decompression()))
        .layer(axum::Extension(EventConfig::default()))
        .layer(DefaultBodyLimit::disable())
        .service(router)
}

fn cases() -> Vec<Case> {
    let record = || serde_json::json!({"email": "a@example.com"});
    let valid = || {
        Delivery::new()
            .secret(SECRET)
            .timestamp(now())
            .record_json(record())
    };
    vec![
        Case::new("accepted", By::Handler, valid()),
        Case::new("source ip outside the list", By::Head, valid()).peer(Some("198.51.100.1:5000")),
        Case::new("no peer address", By::Head, valid()).peer(None),
        Case::new(
            "missing authorization",
            By::Head,
            Delivery::new().timestamp(now()).record_json(record()),
        ),
        Case::new("basic scheme", By::Head, valid()).header("authorization", "Basic Zm9vOmJhcg=="),
        Case::new("wrong secret", By::Head, valid().wrong_secret()),
        Case::new("missing timestamp", By::Head, valid().without_timestamp()),
        Case::new("malformed timestamp", By::Head, valid())
            .header("polytomic-signature-timestamp", "yesterday"),
        Case::new(
            "stale timestamp",
            By::Head,
            valid().timestamp(now() - TimeDelta::hours(1)),
        ),
        Case::new(
            "future timestamp",
            By::Head,
            valid().timestamp(now() + TimeDelta::hours(1)),
        ),
        Case::new("declared too large", By::Decompression, valid())
            .header("content-length", "1000000"),
        Case::new("unsupported coding", By::Decompression, valid())
            .header("content-encoding", "compress"),
        Case::new("stacked codings", By::Decompression, valid())
            .header("content-encoding", "gzip, gzip"),
        Case::new(
            "corrupt gzip",
            By::Extractor,
            valid().raw_json(b"{}").form(BodyForm::Identity),
        )
        .header("content-encoding", "gzip"),
        Case::new(
            "decoded too large",
            By::Extractor,
            valid().bomb(4 * 1024 * 1024),
        ),
        Case::new("malformed json", By::Extractor, valid().malformed_json()),
        Case::new("refused while trickling", By::Head, valid().wrong_secret()).trickle(),
    ]
}

/// The problem `code` of an answer, from its body.
fn code_of(seen: &Seen) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&seen.body).ok()?;
    json["code"].as_str().map(str::to_owned)
}

#[tokio::test(start_paused = true)]
async fn stages_composed_by_hand_answer_every_delivery_as_the_composed_layer_does() {
    let router = Router::new().route("/", post(receive));
    let mut refusals = 0;
    for case in cases() {
        let (layer, layer_logs) = answer(composed(router.clone()), &case).await;
        let (stages, stage_logs) = answer(by_hand(router.clone()), &case).await;
        assert_eq!(layer, stages, "{}", case.name);

        let code = code_of(&layer);
        let Some(code) = code else {
            assert_eq!(case.by, By::Handler, "{}: {layer:?}", case.name);
            assert!(layer.status.is_success(), "{}: {layer:?}", case.name);
            assert!(
                !stage_logs.contains("refused"),
                "{}: {stage_logs}",
                case.name
            );
            continue;
        };
        refusals += 1;
        // The composed layer's delivery line and, when a stage refused, that stage's own line
        // name the same code; the extractor's refusals are logged by neither stage.
        assert!(
            layer_logs.contains(&format!("outcome=\"{code}\"")),
            "{}: {layer_logs}",
            case.name
        );
        let stage_line = stage_logs
            .lines()
            .find(|line| line.contains("refused a webhook delivery"));
        match (case.by, stage_line) {
            (By::Head | By::Decompression, Some(line)) => {
                assert!(line.contains(&format!("code=\"{code}\"")), "{line}");
            }
            (By::Extractor, None) => {}
            (by, line) => panic!("{}: refused by {by:?}, stage line {line:?}", case.name),
        }
        // Refused from its head by the allowlist or the bearer check, a body is drained (or,
        // trickling, cut off at the deadline with the connection closed); the decompression
        // check leaves it unread.
        match case.by {
            _ if case.trickle => {
                assert!(!layer.drained, "{}", case.name);
                assert_eq!(layer.headers["connection"], "close", "{}", case.name);
                assert!(layer.waited >= BODY_TIMEOUT, "{}", case.name);
            }
            By::Head => assert!(layer.drained, "{}", case.name),
            By::Decompression => assert!(!layer.drained, "{}", case.name),
            By::Handler | By::Extractor => {}
        }
    }
    assert!(refusals >= 15, "only {refusals} refusals");
}

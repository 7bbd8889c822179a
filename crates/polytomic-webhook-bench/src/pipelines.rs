//! The pipelines under comparison, each turning the same gzipped delivery into the same records.
//!
//! Every HTTP pipeline checks the bearer secret, inflates the body and parses it into a batch of
//! [`Record`]s before answering `{"accepted":N}`; [`Pipelines::verify`] proves it once per
//! pipeline (right count on the valid request, 401 on a wrong secret) before anything is timed.

use std::convert::Infallible;
use std::fmt;
use std::io::Read as _;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Json, Request as AxumRequest};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use polytomic_webhook::DeliveryBody;
use polytomic_webhook::PolytomicWebhookLayer;
use polytomic_webhook::auth::FixedClock;
use polytomic_webhook::event::{self, Ack, Fields, RawFields, Record, SyncRecords};
use polytomic_webhook::prelude::{PolytomicWebhookConfig, Secret};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_http::decompression::RequestDecompressionLayer;

use crate::payload::Payload;

/// The bearer secret every pipeline checks.
pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
/// The `Polytomic-Signature-Timestamp` of every request; the layer's clock is fixed to it, so
/// no request ever expires however long a run takes.
pub const TIMESTAMP: &str = "2025-06-01T12:00:00Z";
/// The route every HTTP pipeline serves.
pub const PATH: &str = "/webhooks/polytomic";
/// The decoded-size limit every pipeline enforces: our default, and the baseline's raised
/// `DefaultBodyLimit`.
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The plain serde shape of a delivery, for the floor and the baseline: the same records
/// ([`Record<T>`]) as our extractor yields, with no validation beyond what serde does.
#[derive(Debug, Deserialize)]
pub struct Envelope<T = Fields> {
    /// `sync.records`.
    pub event: String,
    /// The batch.
    pub object: Batch<T>,
}

/// The `object` of [`Envelope`].
#[derive(Debug, Deserialize)]
pub struct Batch<T = Fields> {
    /// The sync id.
    pub id: String,
    /// The sync name.
    pub name: String,
    /// The records.
    pub records: Vec<Record<T>>,
    /// The sync's metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The borrowed serde shape of a delivery, for [`Pipeline::FloorRaw`]: every string and each
/// record's `fields` a view into the inflated body, as cheap as a parse that keeps the records
/// can be.
#[derive(Debug, Deserialize)]
pub struct RawEnvelope<'a> {
    /// `sync.records`.
    pub event: &'a str,
    /// The batch.
    #[serde(borrow)]
    pub object: RawBatch<'a>,
}

/// The `object` of [`RawEnvelope`].
#[derive(Debug, Deserialize)]
pub struct RawBatch<'a> {
    /// The sync id.
    pub id: &'a str,
    /// The sync name.
    pub name: &'a str,
    /// The records.
    #[serde(borrow)]
    pub records: Vec<RawRecord<'a>>,
    /// The sync's metadata, as its JSON text.
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
}

/// One record of [`RawBatch`].
#[derive(Debug, Deserialize)]
pub struct RawRecord<'a> {
    /// The record's hash.
    pub hash: &'a str,
    /// The record's fields, as their JSON text.
    #[serde(borrow)]
    pub fields: &'a RawValue,
}

/// A typed record, for the `*_typed` pipelines: what a receiver that knows its sync would write.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Only deserialized: the point is the cost of building it.
pub struct Contact {
    id: u64,
    email: String,
    first_name: String,
    last_name: String,
    company: String,
    plan: String,
    created_at: DateTime<Utc>,
    last_login: Option<DateTime<Utc>>,
    seats: u32,
    lifetime_value: f64,
    score: f64,
    is_active: bool,
    tags: Vec<String>,
}

/// One of the compared pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// flate2 into a `Vec`, then `serde_json::from_slice` into [`Envelope`]: no HTTP at all.
    Floor,
    /// [`Pipeline::Floor`] into [`RawEnvelope`]: strings and `fields` borrowed from the
    /// inflated body.
    FloorRaw,
    /// [`Pipeline::Floor`] with [`Contact`] records.
    FloorTyped,
    /// axum `Router` + tower-http `RequestDecompressionLayer` + raised `DefaultBodyLimit` +
    /// a `middleware::from_fn` bearer check + `Json<Envelope>`.
    Baseline,
    /// axum `Router` + `PolytomicWebhookLayer` + `SyncRecords<Fields>`.
    OursAxum,
    /// [`Pipeline::OursAxum`] with the default `SyncRecords` (`SyncRecords<RawFields>`).
    OursRaw,
    /// [`Pipeline::OursAxum`] with `SyncRecords<Contact>`.
    OursTyped,
    /// `PolytomicWebhookLayer` around a `tower::service_fn` calling `event::read`.
    OursTower,
}

impl Pipeline {
    /// Every pipeline, in report order.
    pub const ALL: [Self; 8] = [
        Self::Floor,
        Self::FloorRaw,
        Self::FloorTyped,
        Self::Baseline,
        Self::OursAxum,
        Self::OursRaw,
        Self::OursTyped,
        Self::OursTower,
    ];

    /// The name in tables and benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::Floor => "floor",
            Self::FloorRaw => "floor_raw",
            Self::FloorTyped => "floor_typed",
            Self::Baseline => "baseline",
            Self::OursAxum => "ours_axum",
            Self::OursRaw => "ours_raw",
            Self::OursTyped => "ours_typed",
            Self::OursTower => "ours_tower",
        }
    }

    /// Whether the pipeline takes an HTTP request (every one but the floors).
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Floor | Self::FloorRaw | Self::FloorTyped)
    }

    /// The floor this pipeline is compared with: the one that builds the same records.
    pub fn own_floor(self) -> Self {
        match self {
            Self::FloorTyped | Self::OursTyped => Self::FloorTyped,
            Self::FloorRaw | Self::OursRaw => Self::FloorRaw,
            _ => Self::Floor,
        }
    }

    /// Runs a floor pipeline on `gzip`: the record count, or why it failed (also for a
    /// pipeline that is not a floor: those take an HTTP request).
    pub fn run_floor(self, gzip: &[u8]) -> Result<usize, String> {
        match self {
            Self::Floor => floor::<Fields>(gzip),
            Self::FloorRaw => floor_raw(gzip),
            Self::FloorTyped => floor::<Contact>(gzip),
            _ => Err(format!("{self} is not a floor: it takes an HTTP request")),
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The floor: inflate, then parse once. Returns the record count.
pub fn floor<T: DeserializeOwned>(gzip: &[u8]) -> Result<usize, String> {
    let json = inflate(gzip)?;
    let envelope: Envelope<T> =
        serde_json::from_slice(&json).map_err(|error| format!("parse: {error}"))?;
    Ok(envelope.object.records.len())
}

/// The raw floor: inflate, then parse once into borrowed records. Returns the record count.
pub fn floor_raw(gzip: &[u8]) -> Result<usize, String> {
    let json = inflate(gzip)?;
    let envelope: RawEnvelope<'_> =
        serde_json::from_slice(&json).map_err(|error| format!("parse: {error}"))?;
    Ok(envelope.object.records.len())
}

fn inflate(gzip: &[u8]) -> Result<Vec<u8>, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gzip)
        .read_to_end(&mut json)
        .map_err(|error| format!("inflate: {error}"))?;
    Ok(json)
}

/// The delivery request every HTTP pipeline receives, as Polytomic sends it.
pub fn request(gzip: &Bytes, secret: &str) -> Request<axum::body::Body> {
    Request::post(PATH)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .header(CONTENT_LENGTH, gzip.len())
        .header(AUTHORIZATION, format!("Bearer {secret}"))
        .header("polytomic-signature-timestamp", TIMESTAMP)
        .header(USER_AGENT, "Polytomic/rel2025.05.27")
        .body(axum::body::Body::from(gzip.clone()))
        .unwrap_or_default()
}

fn fixed_clock() -> FixedClock {
    FixedClock(TIMESTAMP.parse().unwrap_or_default())
}

/// Our layer with default settings, the bench secret and a clock fixed at [`TIMESTAMP`].
pub fn our_layer() -> PolytomicWebhookLayer<FixedClock> {
    our_layer_with(PolytomicWebhookConfig::default())
}

/// Our layer with `config`, the bench secret and a clock fixed at [`TIMESTAMP`].
pub fn our_layer_with(config: PolytomicWebhookConfig) -> PolytomicWebhookLayer<FixedClock> {
    let secret = Secret::new(SECRET).unwrap_or_else(|_| unreachable!("a valid secret"));
    PolytomicWebhookLayer::new(config.secret(secret))
        .unwrap_or_else(|_| unreachable!("a secret is configured"))
        .clock(fixed_clock())
}

async fn receive<T>(batch: SyncRecords<T>) -> Ack {
    Ack::from(&batch)
}

/// `ours_axum` (with `T = Fields`), `ours_raw` (`RawFields`) and `ours_typed`: also the server
/// throughput's receiver route.
pub fn ours_router<T: DeserializeOwned + Send + 'static>() -> Router {
    ours_router_with::<T>(our_layer())
}

/// The receiver route behind `layer`.
pub fn ours_router_with<T: DeserializeOwned + Send + 'static>(
    layer: PolytomicWebhookLayer<FixedClock>,
) -> Router {
    Router::new().route(PATH, post(receive::<T>)).layer(layer)
}

async fn bearer(request: AxumRequest, next: Next) -> Response {
    let authorized = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(SECRET);
    if authorized {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn receive_json(Json(envelope): Json<Envelope>) -> Ack {
    Ack::new(envelope.object.records.len())
}

/// `baseline`: what an axum user would assemble from tower-http and axum alone.
pub fn baseline_router() -> Router {
    Router::new()
        .route(PATH, post(receive_json))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn(bearer))
}

async fn tower_handler(
    request: Request<DeliveryBody<axum::body::Body>>,
) -> Result<Response, Infallible> {
    Ok(match event::read::<Fields, _>(request).await {
        Ok(batch) => Ack::from(&batch).into_response(),
        Err(rejection) => rejection.into_response(),
    })
}

/// The HTTP response type every HTTP pipeline is reduced to.
pub type HttpResponse = http::Response<axum::body::Body>;

/// Every pipeline, built once and cloned per request as a server would.
#[derive(Debug)]
pub struct Pipelines<S> {
    baseline: Router,
    ours_axum: Router,
    ours_raw: Router,
    ours_typed: Router,
    ours_tower: S,
}

/// Builds every pipeline.
///
/// ```
/// use polytomic_webhook_bench::payload::Payload;
/// use polytomic_webhook_bench::pipelines::{Pipeline, pipelines};
///
/// let pipelines = pipelines();
/// let payload = Payload::generate(10);
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// for pipeline in Pipeline::ALL {
///     runtime.block_on(pipelines.verify(pipeline, &payload)).unwrap();
/// }
/// ```
pub fn pipelines() -> Pipelines<
    impl Service<
        Request<axum::body::Body>,
        Response = http::Response<impl http_body::Body<Data = Bytes, Error = impl fmt::Debug>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + fmt::Debug,
> {
    Pipelines {
        baseline: baseline_router(),
        // Named explicitly: `SyncRecords` alone now means `SyncRecords<RawFields>`.
        ours_axum: ours_router::<Fields>(),
        ours_raw: ours_router::<RawFields>(),
        ours_typed: ours_router::<Contact>(),
        ours_tower: our_layer().layer(service_fn(tower_handler)),
    }
}

impl<S, B> Pipelines<S>
where
    S: Service<Request<axum::body::Body>, Response = http::Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: fmt::Debug,
{
    /// Runs one request through an HTTP pipeline and returns its status (and body when
    /// `read_body`). Panics on a floor pipeline: those take no request.
    pub async fn call(
        &self,
        pipeline: Pipeline,
        request: Request<axum::body::Body>,
    ) -> (StatusCode, Option<Bytes>) {
        match pipeline {
            Pipeline::Baseline => read(self.baseline.clone().oneshot(request).await).await,
            Pipeline::OursAxum => read(self.ours_axum.clone().oneshot(request).await).await,
            Pipeline::OursRaw => read(self.ours_raw.clone().oneshot(request).await).await,
            Pipeline::OursTyped => read(self.ours_typed.clone().oneshot(request).await).await,
            Pipeline::OursTower => read(self.ours_tower.clone().oneshot(request).await).await,
            Pipeline::Floor | Pipeline::FloorRaw | Pipeline::FloorTyped => {
                unreachable!("the floors take no HTTP request")
            }
        }
    }

    /// Runs `payload` through `pipeline` once; the record count it accepted, or why it failed.
    pub async fn run(&self, pipeline: Pipeline, payload: &Payload) -> Result<usize, String> {
        if !pipeline.is_http() {
            return pipeline.run_floor(&payload.gzip);
        }
        let (status, body) = self.call(pipeline, request(&payload.gzip, SECRET)).await;
        let body = body.unwrap_or_default();
        if status != StatusCode::OK {
            return Err(format!(
                "{pipeline}: status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let ack: Value = serde_json::from_slice(&body)
            .map_err(|error| format!("{pipeline}: response body: {error}"))?;
        ack["accepted"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{pipeline}: no count in {ack}"))
    }

    /// Checks that `pipeline` really does the work: the valid delivery yields every record, and
    /// (for HTTP pipelines) a wrong secret is refused with 401.
    pub async fn verify(&self, pipeline: Pipeline, payload: &Payload) -> Result<(), String> {
        let accepted = self.run(pipeline, payload).await?;
        if accepted != payload.records {
            return Err(format!(
                "{pipeline}: accepted {accepted} records, expected {}",
                payload.records
            ));
        }
        if pipeline.is_http() {
            let (status, _) = self
                .call(pipeline, request(&payload.gzip, "not-the-secret"))
                .await;
            if status != StatusCode::UNAUTHORIZED {
                return Err(format!("{pipeline}: a wrong secret got {status}, not 401"));
            }
        }
        Ok(())
    }
}

/// Reads the response body, as a server writing it out would.
pub(crate) async fn read<B>(
    response: Result<http::Response<B>, Infallible>,
) -> (StatusCode, Option<Bytes>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: fmt::Debug,
{
    let Ok(response) = response;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes);
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_checks_the_secret_and_parses_every_record() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pipelines = pipelines();
        let payload = Payload::generate(20);
        for pipeline in Pipeline::ALL {
            runtime
                .block_on(pipelines.verify(pipeline, &payload))
                .unwrap();
        }
    }

    #[test]
    fn the_floors_refuse_what_is_not_gzip() {
        let json = Payload::generate(1).json;
        let floors: Vec<Pipeline> = Pipeline::ALL.into_iter().filter(|p| !p.is_http()).collect();
        assert_eq!(floors.len(), 3);
        for pipeline in floors {
            let error = pipeline.run_floor(&json).unwrap_err();
            assert!(error.starts_with("inflate:"), "{pipeline}: {error}");
        }
    }

    #[test]
    fn an_http_pipeline_is_not_run_as_a_floor() {
        let payload = Payload::generate(1);
        assert!(Pipeline::OursRaw.run_floor(&payload.gzip).is_err());
        assert_eq!(Pipeline::FloorRaw.run_floor(&payload.gzip), Ok(1));
    }

    #[test]
    fn each_pipeline_is_compared_with_the_floor_that_builds_its_records() {
        assert_eq!(Pipeline::OursRaw.own_floor(), Pipeline::FloorRaw);
        assert_eq!(Pipeline::OursAxum.own_floor(), Pipeline::Floor);
        assert_eq!(Pipeline::OursTower.own_floor(), Pipeline::Floor);
        assert_eq!(Pipeline::OursTyped.own_floor(), Pipeline::FloorTyped);
    }
}

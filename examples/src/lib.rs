//! The servers of the runnable examples, as functions, so the end-to-end tests drive exactly
//! what the examples run.
//!
//! - [`receiver_app`]: an axum `Router` with the webhook route behind the layer and
//!   unauthenticated health, readiness and metrics routes (the `receiver` example).
//! - [`tonic_gateway`]: gRPC (the standard health service) and the webhook route on one port
//!   (the `tonic_gateway` example).
//! - [`serve_hyper`]: a plain hyper server whose service is the layer around a `service_fn`
//!   (the `hyper_service` example).
//! - [`startup`]: the examples' settings from the environment, with start-up errors that say
//!   how to fix them.
//!
//! All three are served by the library's [`serve`] loop (re-exported here), with
//! [`HEADER_READ_TIMEOUT`] for request heads.
//!
//! Each server takes a [`Sink`], the application's part: what to do with an accepted batch.
//! The examples print it; the tests record it.

#![forbid(unsafe_code)]

// The README's Rust snippets are compiled as doc tests here, where their dependencies are.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

pub mod startup;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{Request, StatusCode};
#[cfg(doc)]
use polytomic_webhook::dedup::MemoryEventIdStore;
use polytomic_webhook::dedup::{DedupLayer, EventIdStore};
use polytomic_webhook::event::read;
use polytomic_webhook::handler_panicked;
use polytomic_webhook::limit::{DecodedBudgetLayer, InFlightLimitLayer, ServerLimits};
use polytomic_webhook::metrics::{PrometheusHandle, prometheus_answer};
use polytomic_webhook::prelude::*;
use polytomic_webhook::problem::Problem;
use polytomic_webhook::readiness::Readiness;
pub use polytomic_webhook::server::{HEADER_READ_TIMEOUT, ServeOptions, serve, shutdown_signal};
use polytomic_webhook_store::lines::NotWritten;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, service_fn};
use tower_http::add_extension::AddExtensionLayer;
use tower_http::catch_panic::CatchPanicLayer;

pub use startup::listen_addr;

/// The path Polytomic is configured to deliver to, in every example.
pub const WEBHOOK_PATH: &str = "/webhooks/polytomic";

/// The path of the organisation Events webhook, in the receiver example.
pub const EVENTS_PATH: &str = "/webhooks/polytomic/events";

/// How many event ids the receiver remembers to recognise a retry: far more than a day of an
/// organisation's sync runs, in a few megabytes.
pub const REMEMBERED_EVENT_IDS: usize = 100_000;

/// What the application does with each new organisation event (a retry of a handled one never
/// reaches it). `Ok` is answered 200; an error 503 `event_not_stored`, so Polytomic sends the
/// event again. Like a [`Sink`], it returns a future, so that it can wait (for a line writer,
/// a store) without blocking a runtime worker; [`sync_event_sink`] wraps a quick `Fn`.
pub type EventSink = Arc<dyn for<'a> Fn(&'a PolytomicOrgEvent) -> SinkFuture<'a> + Send + Sync>;

/// An [`EventSink`] whose work is done at once, in `store` (which must not block: it runs on a
/// runtime worker).
///
/// ```
/// let sink = examples::sync_event_sink(|event| {
///     eprintln!("event {}", event.id());
///     Ok(())
/// });
/// ```
pub fn sync_event_sink<F>(store: F) -> EventSink
where
    F: Fn(&PolytomicOrgEvent) -> Result<(), StoreError> + Send + Sync + 'static,
{
    Arc::new(move |event| Box::pin(std::future::ready(store(event))))
}

/// `POST /webhooks/polytomic/events`: the signature-checking layer, then deduplication by
/// event id in `store`, then the `sink`. Merge it into [`receiver_app`]'s router. The route
/// gets its own bound of `limits.max_in_flight` events in flight and its own budget of
/// `limits.max_decoded_in_flight` decoded bytes, both counted once an event's signature has
/// matched, and its own drain budget.
///
/// One process can use a [`MemoryEventIdStore`]; replicas behind one address need a shared
/// store such as `polytomic_webhook_store::RedisEventIdStore`, or a retry that reaches another
/// replica runs the handler again.
///
/// ```
/// use polytomic_webhook::dedup::MemoryEventIdStore;
/// use polytomic_webhook::prelude::*;
///
/// let config = PolytomicOrgEventsConfig::default()
///     .secrets(SigningSecrets::new("the-events-secret")?);
/// let layer = PolytomicOrgEventsLayer::new(config)?;
/// let store = MemoryEventIdStore::new(examples::REMEMBERED_EVENT_IDS);
/// let sink = examples::sync_event_sink(|_| Ok(()));
/// let events = examples::events_router(layer, sink, &examples::Ops::default(), store);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn events_router<St: EventIdStore>(
    layer: PolytomicOrgEventsLayer,
    sink: EventSink,
    ops: &Ops,
    store: St,
) -> Router {
    // A place of its own, so events and batches never wait for each other's places; the
    // decoded bytes from the budget batches draw from, so the process holds at most one.
    let in_flight = InFlightLimitLayer::new(&ops.limits);
    let layer = layer.decoded_budget(&ops.decoded_budget());
    Router::new()
        .route(EVENTS_PATH, post(receive_event))
        .route_layer(CatchPanicLayer::custom(handler_panicked))
        .route_layer(DedupLayer::new(store))
        // Inside the Events layer, which reads the body to verify its signature: only an event
        // whose signature matched takes a place, so a sender without the secret trickling a
        // body holds none.
        .route_layer(in_flight.clone())
        .route_layer(layer)
        // The Events layer's refusals from the head drain within the route's drain budget.
        .route_layer(AddExtensionLayer::new(in_flight.drain_budget()))
        .with_state(sink)
}

async fn receive_event(State(sink): State<EventSink>, event: PolytomicOrgEvent) -> Response {
    match sink(&event).await {
        Ok(()) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"accepted":true}"#,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot store an event");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "event_not_stored",
                "The receiving application could not store this event; send it again later.",
            )
            .into_response()
        }
    }
}

/// What the application does with each accepted batch. It runs after every check has passed
/// and before the answer is sent: `Ok` is answered 200, an error (the batch could not be kept)
/// 503 `batch_not_stored`, so a batch is acknowledged only once the sink has stored it.
///
/// It returns a future, so that a sink that waits (for a line writer's thread, a store) does
/// not block a runtime worker meanwhile; [`sync_sink`] wraps a quick `Fn`.
///
/// ```
/// use std::sync::Arc;
///
/// let sink: examples::Sink = Arc::new(|batch| {
///     let records = batch.len();
///     Box::pin(async move {
///         eprintln!("{records} records");
///         Ok(())
///     })
/// });
/// ```
pub type Sink = Arc<dyn for<'a> Fn(&'a SyncRecords) -> SinkFuture<'a> + Send + Sync>;

/// The future a [`Sink`] or an [`EventSink`] returns: `Ok` once the batch or event is kept.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A [`Sink`] whose work is done at once, in `store` (which must not block: it runs on a
/// runtime worker).
///
/// ```
/// let sink = examples::sync_sink(|batch| {
///     eprintln!("{} records", batch.len());
///     Ok(())
/// });
/// ```
pub fn sync_sink<F>(store: F) -> Sink
where
    F: Fn(&SyncRecords) -> Result<(), StoreError> + Send + Sync + 'static,
{
    Arc::new(move |batch| Box::pin(std::future::ready(store(batch))))
}

/// Why a [`Sink`] could not store a batch; it goes to the log, never to the sender.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The receiver: `POST /webhooks/polytomic` behind `layer`, `GET /healthz` without it.
///
/// A handler (here, the `sink`) that panics is answered 500 `handler_panicked`
/// (application/problem+json) and the server keeps serving: tower-http's catch-panic layer
/// turns the panic into that answer inside the webhook layer, so the delivery's log line
/// records the failure like any other outcome.
///
/// Serve it with [`serve`], which closes connections that are slow to send a request head and
/// records each connection's peer address for an allowlist.
///
/// ```
/// use polytomic_webhook::prelude::*;
///
/// let layer = PolytomicWebhookLayer::new(
///     PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?),
/// )?;
/// let app = examples::receiver_app(layer, examples::sync_sink(|_batch| Ok(())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn receiver_app(layer: PolytomicWebhookLayer, sink: Sink) -> Router {
    receiver_app_with(layer, sink, &Ops::default())
}

/// What a receiver serves besides its webhook route.
#[derive(Clone, Debug, Default)]
pub struct Ops {
    /// Renders `GET /metrics` on the webhook's port; `None` leaves the route out (it is
    /// served on an address of its own with [`metrics_router`], or not at all).
    pub metrics: Option<PrometheusHandle>,
    /// What `GET /readyz` asks.
    pub readiness: Readiness,
    /// The server-wide bounds on the webhook route.
    pub limits: ServerLimits,
    /// The decoded-bytes budget of `limits`, made when a route first asks and then shared by
    /// the batch route and [`events_router`] (and by clones of these `Ops`).
    pub decoded_budget: SharedBudget,
}

impl Ops {
    /// The budget both routes draw their decoded bytes from: made from
    /// [`limits`](Self::limits) on the first call, the same one on every later call.
    ///
    /// ```
    /// let ops = examples::Ops::default();
    /// let _budget = ops.decoded_budget();
    /// ```
    pub fn decoded_budget(&self) -> DecodedBudgetLayer {
        self.decoded_budget
            .0
            .get_or_init(|| DecodedBudgetLayer::new(&self.limits))
            .clone()
    }
}

/// Where [`Ops::decoded_budget`] keeps the budget once made; empty by default.
///
/// ```
/// let ops = examples::Ops {
///     decoded_budget: examples::SharedBudget::default(),
///     ..examples::Ops::default()
/// };
/// # let _ = ops;
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedBudget(Arc<std::sync::OnceLock<DecodedBudgetLayer>>);

/// [`receiver_app`] with `GET /readyz` asking `ops.readiness` (200 when ready, 503
/// `not_ready` otherwise) and, when `ops.metrics` is set, `GET /metrics` (Prometheus text).
/// Neither route is behind the webhook layer: they answer anyone who reaches the port.
pub fn receiver_app_with(layer: PolytomicWebhookLayer, sink: Sink, ops: &Ops) -> Router {
    let readiness = ops.readiness.clone();
    let router = webhook_router(layer, sink, ops)
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.answer().await }
            }),
        );
    match &ops.metrics {
        Some(handle) => router.merge(metrics_router(handle.clone())),
        None => router,
    }
}

/// `GET /metrics` alone, for serving the metrics on an address of their own.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || async move { prometheus_answer(&handle) }),
    )
}

/// The webhook route alone. `route_layer` wraps only the routes added before it, so routes
/// merged or added later are untouched by the layer.
///
/// Catch-panic sits inside the webhook layer: outside, a panic would unwind through the
/// delivery's span before it records an outcome, and the answer would not be a problem. The
/// decoded-bytes budget sits inside it too, where the body is the decoded one; the in-flight
/// bound outside, so a delivery waiting for a place has cost nothing yet.
fn webhook_router(layer: PolytomicWebhookLayer, sink: Sink, ops: &Ops) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .route_layer(CatchPanicLayer::custom(handler_panicked))
        .route_layer(ops.decoded_budget())
        .route_layer(layer)
        .route_layer(InFlightLimitLayer::new(&ops.limits))
        .with_state(sink)
}

/// The handler runs only for a valid `sync.records` batch: every refusal has been answered by
/// the layer or the extractor before.
async fn receive(State(sink): State<Sink>, batch: SyncRecords) -> Response {
    store(&sink, &batch).await
}

/// Hands the batch to the sink: 200 once it is stored, 503 `batch_not_stored` when it could not
/// be, so that Polytomic counts the batch as failed rather than delivered. A line writer's
/// error gives its own answer, which says when the line may still appear.
async fn store(sink: &Sink, batch: &SyncRecords) -> Response {
    match sink(batch).await {
        Ok(()) => Ack::from(batch).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot store a batch");
            match error.downcast_ref::<NotWritten>() {
                Some(not_written) => not_written.problem().into_response(),
                None => NotStored.into_response(),
            }
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// One router for gRPC and HTTP: the standard gRPC health service and the webhook route,
/// the layer applied to the webhook route only. Serve it with [`serve`], which speaks HTTP/1
/// and HTTP/2 (gRPC's) on the same port.
///
/// The returned reporter lets the application change what the health service answers;
/// the overall status (service name `""`) starts as `SERVING`.
///
/// ```
/// use polytomic_webhook::prelude::*;
///
/// let layer = PolytomicWebhookLayer::new(
///     PolytomicWebhookConfig::default().secret(Secret::new("the-connection-secret")?),
/// )?;
/// let (app, _health) = examples::tonic_gateway(layer, examples::sync_sink(|_batch| Ok(())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tonic_gateway(
    layer: PolytomicWebhookLayer,
    sink: Sink,
) -> (Router, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let grpc = tonic::service::Routes::new(health).into_axum_router();
    (
        grpc.merge(webhook_router(layer, sink, &Ops::default())),
        reporter,
    )
}

/// Serves `layer` around a plain `service_fn` with hyper, HTTP/1 and HTTP/2 (cleartext, prior
/// knowledge) on the same port, until `shutdown` completes; then stops accepting and waits for
/// the connections in flight to finish their requests. The server loop is the library's
/// [`serve`], the one every example uses: it gives clients [`HEADER_READ_TIMEOUT`] to send a
/// request head and records each connection's peer for the allowlist.
///
/// Every request reaching the `service_fn` has passed the layer's checks; its body is the
/// decompressed one, and the layer attached the extractor's configuration as an extension.
/// `limits` bounds the deliveries in flight and the decoded bytes they hold, as the axum
/// receiver's route does.
pub async fn serve_hyper(
    listener: TcpListener,
    layer: PolytomicWebhookLayer,
    sink: Sink,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    // The same order as the axum route: the in-flight bound outside the webhook layer, the
    // decoded-bytes budget inside it, where the body is the decoded one.
    let service = ServiceBuilder::new()
        .layer(InFlightLimitLayer::new(limits))
        .layer(layer)
        .layer(DecodedBudgetLayer::new(limits))
        .service(service_fn(move |request| {
            handle(Arc::clone(&sink), request)
        }));
    serve(listener, service, ServeOptions::default(), shutdown).await;
}

/// The hyper service's handler: the extractor's work through `event::read`, then the sink.
async fn handle<B>(sink: Sink, request: Request<B>) -> Result<Response, Infallible>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Ok(match read(request).await {
        Ok(batch) => store(&sink, &batch).await,
        Err(rejection) => rejection.into_response(),
    })
}

/// Logs to stderr, at `info` unless `RUST_LOG` says otherwise; stdout stays free for data.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        // Colour codes would garble a log file.
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

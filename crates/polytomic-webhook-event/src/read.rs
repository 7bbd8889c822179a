//! Reading a delivery from any `http::Request`: what the extractors do, for code without axum.

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use polytomic_webhook_core::body::{BodyStats, BoxError};
use serde::de::DeserializeOwned;

use crate::admitted::Gate;
use crate::config::EventConfig;
use crate::event::{PolytomicEvent, SyncId, SyncRecords};
use crate::extract::check_content_type;
use crate::parse::{only_sync_records, parse_shared};
#[cfg(doc)]
use crate::rejection::LayerMissing;
use crate::rejection::{BodyTooLarge, EventRejection, TooLargeLimit};

/// Reads a `sync.records` delivery from a request: the [`SyncRecords`] extractor's work, for
/// hyper, tonic or a plain tower `service_fn`.
///
/// It checks the `Content-Type`, reads the whole body under
/// [`EventConfig::max_body_bytes`], names the decompression layer's limit when one stopped the
/// body (from the request's [`BodyStats`] extension), then parses and validates the batch as
/// [`parse_sync_records`](crate::parse_sync_records) does. An unknown event type is an
/// [`EventRejection::UnknownEvent`] answered as [`EventConfig::unknown_events`] says. Every
/// rejection converts into its `application/problem+json` response.
///
/// It reads only a request the composed layer (`PolytomicWebhookLayer`) admitted: any other is
/// refused with [`LayerMissing`] (500 `layer_missing`) before its body is touched, and an
/// `error` log line says how to fix the stack. Code that authenticates the request by itself
/// calls [`read_without_layer`] instead.
///
/// The configuration is the request's [`EventConfig`] extension, which the composed layer
/// attaches. axum's `DefaultBodyLimit` is an extractor matter; `read` does not look for it.
///
/// When the request carries a [`BatchObserver`] (the composed layer puts one in), it is told
/// the sync id, name and record count of the accepted batch.
///
/// ```
/// use std::convert::Infallible;
/// use axum::response::{IntoResponse, Response};
/// use polytomic_webhook_event::{Ack, RawFields, read, read_without_layer};
///
/// async fn handle<B>(request: http::Request<B>) -> Result<Response, Infallible>
/// where
///     B: http_body::Body,
///     B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
/// {
///     // This service has no layer in front (a real one would authenticate first).
///     Ok(match read_without_layer::<RawFields, _>(request).await {
///         Ok(batch) => Ack::from(&batch).into_response(), // store the batch first
///         Err(rejection) => rejection.into_response(),
///     })
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let body = r#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"Users","records":[]}}"#;
/// let request = http::Request::post("/")
///     .header("content-type", "application/json")
///     .body(http_body_util::Full::new(bytes::Bytes::from(body)))
///     .unwrap();
/// assert_eq!(handle(request).await.unwrap().status(), 200);
///
/// let request = http::Request::post("/")
///     .header("content-type", "text/plain")
///     .body(http_body_util::Full::new(bytes::Bytes::from(body)))
///     .unwrap();
/// assert_eq!(handle(request).await.unwrap().status(), 415);
///
/// // `read` itself refuses a request no layer admitted.
/// let request = http::Request::post("/")
///     .header("content-type", "application/json")
///     .body(http_body_util::Full::new(bytes::Bytes::from(body)))
///     .unwrap();
/// let rejection = read::<RawFields, _>(request).await.unwrap_err();
/// assert_eq!((rejection.status().as_u16(), rejection.code()), (500, "layer_missing"));
/// # });
/// ```
pub async fn read<T, B>(request: Request<B>) -> Result<SyncRecords<T>, EventRejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    Gate::Batch.require(request.extensions())?;
    read_without_layer(request).await
}

/// [`read`] for a request that no composed layer admitted: a pipeline of your own that has
/// authenticated it (or a test, or a benchmark). Nothing here checks who sent the request.
///
/// A request without an [`EventConfig`] extension is read under `EventConfig::default()`.
pub async fn read_without_layer<T, B>(request: Request<B>) -> Result<SyncRecords<T>, EventRejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (config, event) = read_parsed(request).await?;
    only_sync_records(event, &config)
}

/// Reads any Polytomic custom-webhook event from a request: the [`PolytomicEvent`] extractor's
/// work, for code without axum.
///
/// Like [`read`], but an unknown event type is returned as [`PolytomicEvent::Unknown`] rather
/// than refused. Like [`read`], it refuses a request the composed layer did not admit.
pub async fn read_event<T, B>(request: Request<B>) -> Result<PolytomicEvent<T>, EventRejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    Gate::Batch.require(request.extensions())?;
    read_event_without_layer(request).await
}

/// [`read_event`] for a request that no composed layer admitted, as [`read_without_layer`] is
/// for [`read`]: nothing here checks who sent the request.
pub async fn read_event_without_layer<T, B>(
    request: Request<B>,
) -> Result<PolytomicEvent<T>, EventRejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    read_parsed(request).await.map(|(_, event)| event)
}

/// Reads and parses the request's body, and tells the request's observer about a batch.
async fn read_parsed<T, B>(
    request: Request<B>,
) -> Result<(EventConfig, PolytomicEvent<T>), EventRejection>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<BoxError>,
{
    let observer = request.extensions().get::<BatchObserver>().cloned();
    let (config, body) = read_body(request).await?;
    let event = parse_shared(&body, &config)?;
    if let (Some(observer), PolytomicEvent::SyncRecords(batch)) = (observer, &event) {
        observer.observe(batch);
    }
    Ok((config, event))
}

/// What [`read`] found in an accepted batch: its identity and size, never its records.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct BatchSummary<'a> {
    /// `object.id`.
    pub sync_id: &'a SyncId,
    /// `object.name`.
    pub sync_name: &'a str,
    /// How many records the batch holds.
    pub record_count: usize,
}

/// A request extension that [`read`], [`read_event`] and the extractors tell about each batch
/// they accept.
///
/// The composed layer inserts one that fills its delivery span's `sync_id`, `sync_name` and
/// `record_count`, so the parser never has to know that span or its field names. Insert your
/// own to learn the same in a stack of your making.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use polytomic_webhook_event::BatchObserver;
///
/// let seen = Arc::new(Mutex::new(None));
/// let observer = BatchObserver::new({
///     let seen = Arc::clone(&seen);
///     move |batch| *seen.lock().unwrap() = Some(batch.record_count)
/// });
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(observer);
/// ```
#[derive(Clone)]
pub struct BatchObserver(Arc<dyn Fn(BatchSummary<'_>) + Send + Sync>);

impl BatchObserver {
    /// An observer that calls `observe` once per accepted batch.
    pub fn new(observe: impl Fn(BatchSummary<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(observe))
    }

    fn observe<T>(&self, batch: &SyncRecords<T>) {
        (self.0)(BatchSummary {
            sync_id: batch.id(),
            sync_name: batch.name(),
            record_count: batch.len(),
        });
    }
}

impl fmt::Debug for BatchObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchObserver").finish_non_exhaustive()
    }
}

/// Checks the `Content-Type` and reads the whole body once, under the configured limit; the
/// configuration comes with it.
pub(crate) async fn read_body<B>(
    request: Request<B>,
) -> Result<(EventConfig, Bytes), EventRejection>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let config = request
        .extensions()
        .get::<EventConfig>()
        .cloned()
        .unwrap_or_default();
    check_content_type(request.headers())?;
    // Taken before the body is consumed: it is how the decompression layer says which of its
    // limits fired, which the body error itself cannot.
    let stats = request.extensions().get::<BodyStats>().cloned();
    let mut body = std::pin::pin!(request.into_body());
    let limit = config.max_body_bytes;
    let too_large = || {
        BodyTooLarge::new(TooLargeLimit::Extractor(
            u64::try_from(limit).unwrap_or(u64::MAX),
        ))
    };
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_large().into());
    }

    // Frames are kept as they arrive and joined once at the end into a buffer of the exact size:
    // no regrowth copies, so the peak stays near twice the body, and a body refused at a limit
    // (a decompression bomb) is never copied at all. A body that arrives in one frame is kept as is.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| EventRejection::from_body_error(error, stats.as_ref()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.remaining());
        if len > limit {
            return Err(too_large().into());
        }
        if data.has_remaining() {
            // No copy for `Bytes`, the data type of every body in this stack.
            frames.push(data.copy_to_bytes(data.remaining()));
        }
    }
    let body = if frames.len() == 1 {
        frames.pop().unwrap_or_default()
    } else {
        let mut joined = BytesMut::with_capacity(len);
        for frame in &frames {
            joined.extend_from_slice(frame);
        }
        joined.freeze()
    };
    Ok((config, body))
}

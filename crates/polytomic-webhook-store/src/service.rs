//! The answer to a delivery once its batch went to a sink: 200 with the counts, or 503.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::extract::{FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, HeaderValue};
use polytomic_webhook_core::__define_rejection;
use polytomic_webhook_core::rejection::ErrorSource;
use polytomic_webhook_event::{Ack, SyncRecords};

use crate::{Sink, SinkError, Stored};

/// Stores `batch` in `sink` and gives the answer for Polytomic: [`StoreAck`] (200) once the
/// batch is kept, [`SinkUnavailable`] (503) when it is not.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use polytomic_webhook_event::{Ack, EventConfig, parse_sync_records};
/// use polytomic_webhook_store::{Identity, MemorySink, store};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let body = br#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
///     "name":"Users","records":[{"hash":"a1","fields":{"id":7}},{"hash":"a1","fields":{"id":7}}]}}"#;
/// let batch = parse_sync_records(body, &EventConfig::default()).unwrap();
/// let ack = store(&MemorySink::new(Identity::key_field("id")), &batch).await.unwrap();
/// // The two records have one identity: the first is superseded by the second.
/// assert_eq!((ack.accepted(), ack.stored(), ack.unchanged(), ack.superseded()), (2, 1, 0, 1));
/// let response = ack.into_response(); // {"accepted":2,"stored":1,"unchanged":0,"superseded":1}
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.extensions().get::<Ack>(), Some(&Ack::new(2)));
/// # });
/// ```
pub async fn store<S: Sink + ?Sized>(
    sink: &S,
    batch: &SyncRecords,
) -> Result<StoreAck, SinkUnavailable> {
    match sink.store(batch).await {
        Ok(stored) => Ok(StoreAck {
            accepted: batch.len(),
            stored,
        }),
        Err(error) => Err(SinkUnavailable { error }),
    }
}

/// 200 `{"accepted":N,"stored":S,"unchanged":U,"superseded":P}`: the batch is kept.
///
/// `accepted` counts the batch's records, `stored` those written because they were new or
/// changed, `unchanged` those whose hash was already their identity's last one, `superseded`
/// those followed in the batch by a record of the same identity; the last three add up to
/// `accepted`. The response carries an [`Ack`] of `accepted` records and the [`Stored`]
/// counts as extensions, so that the webhook layer's metrics count the batch as acknowledged
/// and count what the sink did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct StoreAck {
    accepted: usize,
    stored: Stored,
}

impl StoreAck {
    /// The records in the batch.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// The records written.
    pub fn stored(&self) -> usize {
        self.stored.stored
    }

    /// The records already stored with the same hash.
    pub fn unchanged(&self) -> usize {
        self.stored.unchanged
    }

    /// The records followed in the batch by a record of the same identity, not stored.
    pub fn superseded(&self) -> usize {
        self.stored.superseded
    }
}

impl IntoResponse for StoreAck {
    fn into_response(self) -> Response {
        let Stored {
            stored,
            unchanged,
            superseded,
        } = self.stored;
        let body = format!(
            r#"{{"accepted":{},"stored":{stored},"unchanged":{unchanged},"superseded":{superseded}}}"#,
            self.accepted
        );
        let mut response = Response::new(Body::from(body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.extensions_mut().insert(Ack::new(self.accepted));
        response.extensions_mut().insert(self.stored);
        response
    }
}

/// 503 `sink_unavailable`: the sink failed, so nothing of the batch was kept.
///
/// 503 makes Polytomic count the delivery as failed rather than delivered. The body names
/// neither the cause nor any record; [`error`](Self::error) has the cause, for the log.
#[derive(Clone, Debug)]
#[must_use]
pub struct SinkUnavailable {
    error: SinkError,
}

impl SinkUnavailable {
    /// Why the sink failed.
    pub fn error(&self) -> &SinkError {
        &self.error
    }

    fn detail(&self) -> String {
        "The receiver's storage is unavailable, so this batch was not kept; deliver it again later."
            .to_owned()
    }
}

__define_rejection!(SinkUnavailable: SERVICE_UNAVAILABLE, "sink_unavailable", source = error);

impl ErrorSource for SinkError {
    fn error_source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

/// A ready tower service: extracts the [`SyncRecords`] batch, stores it, answers.
///
/// Put it behind the webhook layer (which checks the secret, the timestamp and the body), for
/// example with axum's `Router::route_service`: like the extractor, it refuses a request that
/// layer did not admit (500 `layer_missing`). Requests that are not a valid batch get the
/// extractor's own answers; a sink failure is logged (the cause only, never a record) and
/// answered 503 `sink_unavailable`.
///
/// ```
/// use std::sync::Arc;
/// use polytomic_webhook_store::{Identity, MemorySink, StoreService};
///
/// let service = StoreService::new(Arc::new(MemorySink::new(Identity::hash())));
/// # let _ = service;
/// ```
#[derive(Debug)]
pub struct StoreService<S: ?Sized> {
    sink: Arc<S>,
}

impl<S: ?Sized> StoreService<S> {
    /// A service storing into `sink`.
    pub fn new(sink: Arc<S>) -> Self {
        Self { sink }
    }
}

impl<S: ?Sized> Clone for StoreService<S> {
    fn clone(&self) -> Self {
        Self {
            sink: Arc::clone(&self.sink),
        }
    }
}

impl<S: Sink + ?Sized> tower_service::Service<Request> for StoreService<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let sink = Arc::clone(&self.sink);
        Box::pin(async move {
            let batch = match SyncRecords::from_request(request, &()).await {
                Ok(batch) => batch,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            Ok(match store(&*sink, &batch).await {
                Ok(ack) => ack.into_response(),
                Err(unavailable) => {
                    tracing::warn!(error = %unavailable.error(), "the sink could not store a batch");
                    unavailable.into_response()
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower_service::Service;

    use super::*;
    use crate::testing::fresh_sync_id;
    use crate::{Identity, MemorySink, SinkFuture, StoredRecord};

    /// A sink whose storage is down.
    struct Down;

    impl Sink for Down {
        fn store<'a>(&'a self, _batch: &'a SyncRecords) -> SinkFuture<'a, Stored> {
            Box::pin(async { Err(SinkError::new("connection refused")) })
        }
        fn ready(&self) -> SinkFuture<'_, ()> {
            Box::pin(async { Err(SinkError::new("connection refused")) })
        }
        fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>> {
            Box::pin(async { Err(SinkError::new("connection refused")) })
        }
    }

    fn delivery(records: &str) -> Request {
        let body = format!(
            r#"{{"event":"sync.records","object":{{"id":"{}","name":"n","records":[{records}]}}}}"#,
            fresh_sync_id()
        );
        admitted(body)
    }

    /// A JSON request with `body`, as the composed layer passes it on: the layer (which this
    /// crate does not depend on) marks what it admitted, and the service's extractor refuses
    /// anything else.
    fn admitted(body: impl Into<Body>) -> Request {
        let mut request = http::Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        polytomic_webhook_event::__private::admit_batch(request.extensions_mut());
        request
    }

    async fn answer<S: Sink + ?Sized>(
        service: &mut StoreService<S>,
        request: Request,
    ) -> (StatusCode, String, serde_json::Value) {
        let response = service.call(request).await.unwrap();
        let status = response.status();
        let kind = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, kind, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_stored_batch_is_answered_with_its_counts() {
        let sink = Arc::new(MemorySink::new(Identity::key_field("id")));
        let mut service = StoreService::new(Arc::clone(&sink));
        let records = r#"{"hash":"a","fields":{"id":1}},{"hash":"a","fields":{"id":1}},
                         {"hash":"b","fields":{"id":2,"secret":"s3"}}"#;
        let (status, kind, body) = answer(&mut service, delivery(records)).await;
        assert_eq!(
            (status, kind.as_str()),
            (StatusCode::OK, "application/json")
        );
        assert_eq!(
            body,
            serde_json::json!({"accepted": 3, "stored": 2, "unchanged": 0, "superseded": 1})
        );
        assert_eq!(sink.snapshot().len(), 2);
    }

    #[tokio::test]
    async fn a_failing_sink_is_503_sink_unavailable_without_values_or_cause() {
        let mut service = StoreService::new(Arc::new(Down));
        let records = r#"{"hash":"a","fields":{"email":"ada@example.com"}}"#;
        let (status, kind, body) = answer(&mut service, delivery(records)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kind, "application/problem+json");
        assert_eq!(body["code"], "sink_unavailable");
        let text = body.to_string();
        assert!(
            !text.contains("ada@example.com") && !text.contains("refused"),
            "{text}"
        );
    }

    #[test]
    fn sink_unavailable_keeps_the_cause_out_of_its_text_and_in_its_source() {
        let unavailable = SinkUnavailable {
            error: SinkError::new("connection refused"),
        };
        assert_eq!(SinkUnavailable::CODE, "sink_unavailable");
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!unavailable.to_string().contains("refused"));
        assert_eq!(
            std::error::Error::source(&unavailable).map(ToString::to_string),
            Some("connection refused".to_owned())
        );
    }

    #[tokio::test]
    async fn a_request_that_is_not_a_batch_gets_the_extractors_answer() {
        let sink = Arc::new(MemorySink::new(Identity::hash()));
        let mut service = StoreService::new(Arc::clone(&sink) as Arc<dyn Sink>);
        let (status, _, body) = answer(&mut service, admitted("{not json")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        // A valid batch that no layer admitted is refused, not stored.
        let mut unadmitted = delivery(r#"{"hash":"a","fields":{"id":1}}"#);
        *unadmitted.extensions_mut() = http::Extensions::new();
        let (status, _, body) = answer(&mut service, unadmitted).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("layer_missing"))
        );
        assert!(sink.snapshot().is_empty());
    }
}

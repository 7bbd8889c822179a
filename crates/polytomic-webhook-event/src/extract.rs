//! The axum-core extractors: axum's body limit, then [`read`](crate::read).

use axum_core::RequestExt;
use axum_core::extract::{FromRequest, Request};
use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::config::EventConfig;
use crate::event::{PolytomicEvent, SyncRecords};
use crate::org::{PolytomicOrgEvent, parse_org_event_shared};
use crate::read::{read, read_body, read_event, read_event_without_layer, read_without_layer};
use crate::rejection::{EventRejection, UnsupportedMediaType};

impl<T, S> FromRequest<S> for PolytomicEvent<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_event(req.with_limited_body()).await
    }
}

impl<T, S> FromRequest<S> for SyncRecords<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read(req.with_limited_body()).await
    }
}

/// An extractor that parses a delivery no composed layer admitted: `WithoutLayer<SyncRecords<T>>`,
/// `WithoutLayer<PolytomicEvent<T>>` or `WithoutLayer<PolytomicOrgEvent<T>>`.
///
/// The extractors on their own refuse such a request (500 `layer_missing`), so that a router
/// whose layer does not wrap the route cannot turn authentication off by accident. This
/// wrapper is the deliberate way round, for a route that authenticates by other means (or a
/// test of a handler): nothing in it checks who sent the request. Everything else is the inner
/// extractor's work, with `EventConfig::default()` unless the request carries an
/// [`EventConfig`].
///
/// ```
/// use axum::{Router, routing::post};
/// use polytomic_webhook_event::{Ack, SyncRecords, WithoutLayer};
///
/// async fn receive(WithoutLayer(batch): WithoutLayer<SyncRecords>) -> Ack {
///     Ack::from(&batch)
/// }
///
/// // Only for a route whose requests something else has authenticated.
/// let app: Router = Router::new().route("/polytomic", post(receive));
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// # use tower::ServiceExt;
/// # let body = r#"{"event":"sync.records","object":{"id":"1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
/// #   "name":"Users","records":[]}}"#;
/// # let request = http::Request::post("/polytomic")
/// #     .header("content-type", "application/json")
/// #     .body(axum::body::Body::from(body))
/// #     .unwrap();
/// # assert_eq!(app.oneshot(request).await.unwrap().status(), 200);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct WithoutLayer<E>(pub E);

impl<E> WithoutLayer<E> {
    /// The inner extractor's value.
    pub fn into_inner(self) -> E {
        self.0
    }
}

impl<E> std::ops::Deref for WithoutLayer<E> {
    type Target = E;

    fn deref(&self) -> &E {
        &self.0
    }
}

impl<T, S> FromRequest<S> for WithoutLayer<SyncRecords<T>>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_without_layer(req.with_limited_body()).await.map(Self)
    }
}

impl<T, S> FromRequest<S> for WithoutLayer<PolytomicEvent<T>>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_event_without_layer(req.with_limited_body())
            .await
            .map(Self)
    }
}

impl<T, S> FromRequest<S> for WithoutLayer<PolytomicOrgEvent<T>>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = EventRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (_config, body) = buffer(req).await?;
        parse_org_event_shared(&body).map(Self)
    }
}

/// The extractors' body reading: axum's `DefaultBodyLimit` exactly as axum's own extractors
/// apply it (keeping the request's extensions), then [`read_body`].
pub(crate) async fn buffer(req: Request) -> Result<(EventConfig, Bytes), EventRejection> {
    read_body(req.with_limited_body()).await
}

pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), UnsupportedMediaType> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(UnsupportedMediaType::missing());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    let is_json = essence.eq_ignore_ascii_case("application/json")
        || essence.split_once('/').is_some_and(|(kind, subtype)| {
            kind.eq_ignore_ascii_case("application")
                && subtype.len() > "+json".len()
                && subtype
                    .get(subtype.len() - "+json".len()..)
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(UnsupportedMediaType::received(essence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accepts(content_type: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        check_content_type(&headers).is_ok()
    }

    #[test]
    fn content_type_rules() {
        assert!(accepts("application/json"));
        assert!(accepts("Application/JSON; charset=utf-8"));
        assert!(accepts("application/vnd.polytomic+json"));
        assert!(accepts("application/problem+JSON ;charset=UTF-8"));
        assert!(!accepts("text/json"));
        assert!(!accepts("application/+json"));
        assert!(!accepts("application/jsonx"));
        assert!(!accepts("text/plain"));
        assert!(!accepts("application/x-www-form-urlencoded"));
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }

    fn detail(headers: &HeaderMap) -> String {
        check_content_type(headers)
            .expect_err("not JSON")
            .to_string()
    }

    fn detail_for(content_type: &[u8]) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_bytes(content_type).unwrap());
        detail(&headers)
    }

    #[test]
    fn the_415_detail_says_what_was_received_and_what_to_send() {
        assert_eq!(
            detail(&HeaderMap::new()),
            "the request has no Content-Type; send the body with Content-Type: application/json"
        );
        let form = detail_for(b"application/x-www-form-urlencoded");
        assert!(form.starts_with(
            "the request's Content-Type is application/x-www-form-urlencoded, a form type \
             (what `curl -d` sends"
        ));
        assert!(form.ends_with("(curl: -H 'Content-Type: application/json')"));
        assert!(
            detail_for(b"Multipart/Form-Data; boundary=x")
                .contains("multipart/form-data, a form type")
        );
        assert_eq!(
            detail_for(b"Text/Plain; charset=utf-8"),
            "the request's Content-Type is text/plain, not JSON; send the body with \
             Content-Type: application/json"
        );
        // Text that is not a media type is not repeated.
        for odd in [&b"<script>"[..], b"text/pl ain", b"\xff/json"] {
            assert_eq!(
                detail_for(odd),
                "the request's Content-Type is not a JSON media type; send the body with \
                 Content-Type: application/json"
            );
        }
    }
}

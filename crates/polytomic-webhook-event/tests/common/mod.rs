//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum_core::extract::{FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use polytomic_webhook_core::body::BoxError;
use polytomic_webhook_event::WithoutLayer;
use serde_json::Value;

/// The sample body of Polytomic's documentation, with the `...` placeholders removed.
pub const SAMPLE: &str = r#"{
"event": "sync.records",
"object": {
"id": "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7",
"name": "Webhook HTTP Endpoint sync",
"records": [
{
"hash": "b7421c6c57bd49f7",
"fields": {
"email": "nathan@polytomic.com",
"last_login": "2020-12-02T00:00:00Z"
}
}
],
"metadata": {
}
}
}"#;

pub const SYNC_ID: &str = "1ea8f90a-b22e-4218-86d5-c3c109e1fbb7";

/// A delivery body whose `object.records` is `records` (JSON text).
pub fn envelope(records: &str) -> String {
    format!(
        r#"{{"event":"sync.records","object":{{"id":"{SYNC_ID}","name":"n","records":{records}}}}}"#
    )
}

/// A JSON `POST` request with the given body.
pub fn request(body: impl Into<Bytes>) -> Request {
    http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/json")
        .body(axum_core::body::Body::from(body.into()))
        .unwrap()
}

/// A JSON `POST` request whose body is the given frames and errors.
pub fn streamed(frames: Vec<Result<Bytes, BoxError>>) -> Request {
    http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/json")
        .body(axum_core::body::Body::new(Scripted(frames.into())))
        .unwrap()
}

/// A body that yields a scripted sequence of data frames and errors.
pub struct Scripted(VecDeque<Result<Bytes, BoxError>>);

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|item| item.map(Frame::data)))
    }
}

/// Runs an extractor directly on a request, as [`WithoutLayer`] does (no composed layer admits
/// the requests of this crate's tests), and renders its outcome as a response.
pub async fn extract<E>(req: Request) -> Result<E, Response>
where
    WithoutLayer<E>: FromRequest<()>,
{
    WithoutLayer::<E>::from_request(req, &())
        .await
        .map(WithoutLayer::into_inner)
        .map_err(IntoResponse::into_response)
}

/// A rendered rejection: status, content type and JSON body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

pub async fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body: serde_json::from_slice(&bytes).unwrap(),
    }
}

impl Answer {
    /// Asserts this is a problem response with the given status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert_eq!(self.body["status"], status);
    }

    pub fn path(&self) -> &str {
        self.body["path"].as_str().unwrap()
    }

    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap()
    }
}

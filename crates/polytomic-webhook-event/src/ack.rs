//! The success answer a handler returns.

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::event::SyncRecords;

/// A 200 response with `{"accepted": <records>}`, for a handler that took the batch.
///
/// Polytomic treats any 4xx or 5xx answer as a failed sync. A handler should therefore answer
/// 5xx only when it wants Polytomic to consider the batch not delivered (a database that is
/// down, say), and answer with `Ack` once the records are safely stored.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use polytomic_webhook_event::Ack;
///
/// let response = Ack::new(3).into_response();
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.headers()["content-type"], "application/json");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Ack {
    accepted: usize,
}

impl Ack {
    /// Acknowledges `accepted` records.
    pub fn new(accepted: usize) -> Self {
        Self { accepted }
    }

    /// The number of records acknowledged.
    pub fn accepted(&self) -> usize {
        self.accepted
    }
}

impl<T> From<&SyncRecords<T>> for Ack {
    fn from(batch: &SyncRecords<T>) -> Self {
        Self::new(batch.len())
    }
}

impl IntoResponse for Ack {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(format!("{{\"accepted\":{}}}", self.accepted)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

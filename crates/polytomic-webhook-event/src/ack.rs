//! The answers a handler returns: the batch was kept, or it could not be.

use axum_core::body::Body;
use axum_core::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::event::SyncRecords;

/// A 200 response with `{"accepted": <records>}`, for a handler that took the batch.
///
/// The response carries the `Ack` as an extension too, so that middleware (the layer's
/// metrics) can count the records without parsing the body. That extension is what marks a
/// batch as acknowledged: an answer of your own counts the same once it carries one (the
/// answer of `polytomic-webhook-store` does, beside its [`Stored`] counts).
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
/// assert_eq!(response.extensions().get::<Ack>(), Some(&Ack::new(3)));
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
        response.extensions_mut().insert(self);
        response
    }
}

/// What a sink did with the records of a batch it kept: each record is in exactly one count.
///
/// `polytomic-webhook-store`'s sinks return it, and its 200 answer carries it as an extension,
/// beside an [`Ack`], so that the layer's metrics count what was stored and what was skipped.
///
/// ```
/// use polytomic_webhook_event::Stored;
///
/// // Three new records, two of them of one identity: the earlier of those two is superseded.
/// let stored = Stored { stored: 2, superseded: 1, ..Stored::default() };
/// assert_eq!(stored.unchanged, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Records stored: new identities, and known identities with a different hash.
    pub stored: usize,
    /// Records skipped because their hash was their identity's last stored hash.
    pub unchanged: usize,
    /// Records skipped because a later record of the same batch has the same identity: only
    /// the last of them is compared with what is stored.
    pub superseded: usize,
}

/// A 503 `batch_not_stored` problem, for a handler that could not keep the batch.
///
/// The counterpart of [`Ack`]: answer it when storing failed (a full disk, a closed output, a
/// database that is down), so that Polytomic counts the delivery as failed instead of
/// delivered. 503 rather than 500 says the fault is the receiver's storage, not the request.
/// The body names no record and no cause: log the cause yourself.
///
/// ```
/// use axum_core::response::IntoResponse;
/// use polytomic_webhook_event::NotStored;
///
/// let response = NotStored.into_response();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["content-type"], "application/problem+json");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct NotStored;

impl NotStored {
    fn detail(self) -> String {
        "The receiver could not store this batch, so it was not kept.".to_owned()
    }
}

polytomic_webhook_core::__define_rejection!(NotStored: SERVICE_UNAVAILABLE, "batch_not_stored");

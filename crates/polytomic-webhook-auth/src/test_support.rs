//! Helpers shared by the service tests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Extensions, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use polytomic_webhook_core::response::ResponseBody;
use polytomic_webhook_core::{PROBLEM_JSON, ProblemCode};
use tower::Service;
use tower::service_fn;

/// A request body of `len` bytes in one frame (none by default) that counts how often it is
/// polled: the stages never read a body they let through, and drain one they refuse.
#[derive(Clone, Debug, Default)]
pub(crate) struct CountedBody {
    len: usize,
    polls: Arc<AtomicUsize>,
}

impl CountedBody {
    pub(crate) fn of_len(len: usize) -> Self {
        Self {
            len,
            polls: Arc::default(),
        }
    }

    /// How often the body was polled so far.
    pub(crate) fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        let len = std::mem::take(&mut self.len);
        Poll::Ready((len > 0).then(|| Ok(Frame::data(Bytes::from(vec![b'x'; len])))))
    }
}

/// An inner service that records the extensions of each request it is called with.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recorder {
    seen: Arc<Mutex<Vec<Extensions>>>,
}

impl Recorder {
    pub(crate) fn service(
        &self,
    ) -> impl Service<
        Request<CountedBody>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
    > + Clone
    + Send {
        let seen = Arc::clone(&self.seen);
        service_fn(move |request: Request<CountedBody>| {
            seen.lock().unwrap().push(request.extensions().clone());
            async { Ok(Response::new(Full::new(Bytes::from_static(b"inner")))) }
        })
    }

    pub(crate) fn called(&self) -> bool {
        !self.seen.lock().unwrap().is_empty()
    }

    /// The extensions of the only request seen.
    pub(crate) fn extensions(&self) -> Extensions {
        let seen = self.seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            1,
            "the inner service was called {} times",
            seen.len()
        );
        seen[0].clone()
    }
}

/// Asserts that `response` is a problem with `status` and `code`, returning its JSON body.
pub(crate) async fn assert_problem(
    response: Response<ResponseBody<Full<Bytes>>>,
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    assert_eq!(
        response
            .extensions()
            .get::<ProblemCode>()
            .map(ProblemCode::as_str),
        Some(code)
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], code);
    assert_eq!(json["status"], status.as_u16());
    json
}

/// Asserts that `response` came from the recorder's inner service.
pub(crate) async fn assert_passed(response: Response<ResponseBody<Full<Bytes>>>) {
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"inner");
}

/// Runs `f` with a `tracing` subscriber that writes plain text into the returned string.
pub(crate) fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let capture = polytomic_webhook_core::logs::LogCapture::start();
    let value = f();
    (value, capture.finish())
}

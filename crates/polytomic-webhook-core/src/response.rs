//! The response side shared by every middleware that can reject early.
//!
//! A middleware that answers without calling its inner service (bad credentials, an unsupported
//! coding, a body declared too large) still has to return the inner service's response type.
//! [`ResponseFuture`] and [`ResponseBody`] keep that generic: either the inner service's future
//! and body, or a ready-made problem response, with no boxing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::problem::Problem;

pin_project! {
    /// Response body of a middleware that may answer early: the inner body, or a problem body.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    #[derive(Debug)]
    enum BodyKind<B> {
        Inner {
            #[pin]
            body: B,
        },
        // `None` once the bytes have been yielded.
        Rejected {
            bytes: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }

    /// A body holding the given bytes, yielded as one frame.
    pub fn rejected(bytes: Bytes) -> Self {
        Self {
            kind: BodyKind::Rejected {
                bytes: Some(bytes).filter(|bytes| !bytes.is_empty()),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            BodyKindProj::Inner { body } => body.poll_frame(cx),
            BodyKindProj::Rejected { bytes } => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Rejected { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Rejected { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
        }
    }
}

pin_project! {
    /// Response future of a middleware that may answer early.
    #[project = ResponseFutureProj]
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    /// Waits for the inner service's response.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Answers at once with the given problem; the inner service is never called.
    pub fn rejected(problem: &Problem) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(problem.to_response()),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            KindProj::Rejected { response } => {
                let response = response
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(response.map(ResponseBody::rejected)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::problem::ProblemCode;

    #[tokio::test]
    async fn inner_response_passes_through() {
        let future = ResponseFuture::inner(async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        });
        let response = future.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn rejection_never_polls_the_inner_future() {
        let problem = Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", "nope");
        let future = ResponseFuture::rejected(&problem);
        // The type parameter is a future that would panic if polled.
        let future: ResponseFuture<std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>> =
            future;
        let response = future.await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.extensions().get::<ProblemCode>().is_some());
        let body = response.into_body();
        assert_eq!(
            body.size_hint().exact(),
            Some(problem.to_json().len() as u64)
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, problem.to_json());
    }
}

//! [`TimeoutBody`]: a deadline for receiving the whole request body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::body::{BodyReadTimeout, BoxError};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};

/// The deadline for a whole request body unless configured otherwise: 30 seconds.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

pin_project! {
    /// A request body that fails with [`BodyReadTimeout`] when it has not arrived completely
    /// within a deadline counted from its first read.
    ///
    /// A per-frame idle timeout would not stop a sender that trickles one byte a second; a
    /// deadline for the whole body does. The extractor answers the error with 408
    /// `body_timeout` and `Connection: close`.
    ///
    /// With a deadline set, the body must be read on a tokio runtime with its time driver
    /// enabled (as `#[tokio::main]`, `#[tokio::test]` and every server runtime have).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use polytomic_webhook_core::timeout::TimeoutBody;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let body = TimeoutBody::new(Full::new(Bytes::from("{}")), Some(Duration::from_secs(30)));
    /// assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"{}");
    /// # });
    /// ```
    #[derive(Debug)]
    pub struct TimeoutBody<B> {
        #[pin]
        inner: B,
        timeout: Option<Duration>,
        #[pin]
        deadline: Option<Sleep>,
    }
}

impl<B> TimeoutBody<B> {
    /// Wraps `inner`; `None` means no deadline.
    pub fn new(inner: B, timeout: Option<Duration>) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(timeout) = *this.timeout {
            if this.deadline.is_none() {
                this.deadline.set(Some(sleep(timeout)));
            }
            if let Some(deadline) = this.deadline.as_mut().as_pin_mut() {
                if deadline.poll(cx).is_ready() {
                    // Report once; the body is over.
                    *this.timeout = None;
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout::new(timeout)))));
                }
            }
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

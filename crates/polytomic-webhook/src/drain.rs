//! Reading, and throwing away, the body of a request refused before its body was read.
//!
//! Over HTTP/1.1, a server that answers early and then closes the connection while the client
//! is still sending makes the client's kernel see a reset: the client reports "connection reset
//! by peer" or "broken pipe" instead of the answer, however correct the answer was. hyper does
//! close such a connection: it reads what has already arrived and gives up on the rest. So
//! before a refusal is sent, the layer reads the unread body to its end, discarding every byte,
//! up to the compressed-size limit that an accepted body would also be held to; the connection
//! then stays usable for the next delivery. The bytes are never buffered, decoded or parsed.
//!
//! It does not drain when that cannot help or is not wanted:
//! - HTTP/2 and later end an unread request stream by themselves after the response;
//! - a client sending `Expect: 100-continue` waits for permission that a refusal withholds,
//!   so it never sends the body at all;
//! - a body declared larger than the limit is left unread, and hyper closes the connection.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http::header::EXPECT;
use http::{Request, Version};
use http_body::Body;
use pin_project_lite::pin_project;

pin_project! {
    /// The unread body of a refused request, read to its end before the refusal is answered.
    #[project = DrainProj]
    #[derive(Debug)]
    pub(crate) enum Drain<B> {
        Reading {
            #[pin]
            body: B,
            // Bytes still allowed before giving up.
            budget: u64,
        },
        Done,
    }
}

impl<B: Body> Drain<B> {
    /// Nothing to drain.
    pub(crate) fn none() -> Self {
        Self::Done
    }

    /// Drains the body of `request` if that helps, within `budget` bytes.
    pub(crate) fn new(request: Request<B>, budget: u64) -> Self {
        let helps = request.version() <= Version::HTTP_11
            && !request.headers().contains_key(EXPECT)
            && !request.body().is_end_stream()
            && request.body().size_hint().lower() <= budget;
        if helps {
            Self::Reading {
                body: request.into_body(),
                budget,
            }
        } else {
            Self::Done
        }
    }

    /// Ready once the body has ended, failed, or gone past the budget.
    pub(crate) fn poll_drain(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let DrainProj::Reading { mut body, budget } = self.as_mut().project() {
            while let Some(Ok(frame)) = ready!(body.as_mut().poll_frame(cx)) {
                let len = frame.data_ref().map_or(0, |data| {
                    u64::try_from(data.remaining()).unwrap_or(u64::MAX)
                });
                match budget.checked_sub(len) {
                    Some(left) => *budget = left,
                    None => break,
                }
            }
            // Dropped here, not with the response: an abandoned body tells hyper to close.
            self.set(Self::Done);
        }
        Poll::Ready(())
    }
}

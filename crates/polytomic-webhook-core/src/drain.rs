//! Reading, and throwing away, the body of a request refused before its body was read.
//!
//! [`Drain`] is what a [`CheckService`](crate::check::CheckService) and the composed layers do
//! with the body of a request they refuse from its head alone.
//!
//! Over HTTP/1.1, a server that answers early and then closes the connection while the client
//! is still sending makes the client's kernel see a reset: the client reports "connection reset
//! by peer" or "broken pipe" instead of the answer, however correct the answer was. hyper does
//! close such a connection: it reads what has already arrived and gives up on the rest. So
//! before a refusal is sent, the layer reads the unread body to its end, discarding every byte,
//! up to the compressed-size limit that an accepted body would also be held to; the connection
//! then stays usable for the next delivery. The bytes are never buffered, decoded or parsed.
//!
//! Draining is for a client that is sending; one that is not gets no wait. When no byte
//! arrives for [`IDLE_GRACE`], the drain stops and the refusal is answered at once with
//! `Connection: close`. Without this, a sender with no secret that declares a body and sends
//! none would hold the connection until the body deadline, or forever without one.
//!
//! It does not drain when that cannot help or is not wanted:
//! - HTTP/2 and later end an unread request stream by themselves after the response;
//! - a client sending `Expect: 100-continue` waits for permission that a refusal withholds,
//!   so it never sends the body at all;
//! - a body declared larger than the limit is left unread, and the answer says
//!   `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::header::EXPECT;
use http::{Request, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};

/// How long the drain waits for the next byte of a refused body before it gives up, answers
/// and closes the connection.
///
/// A client that is sending delivers its next bytes within milliseconds; a second only ends
/// the drain for one that has stopped, or never started. The body deadline
/// (`body_timeout_secs`) is no use here: it is generous on purpose, for authenticated senders
/// on slow links, and may be off.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

pin_project! {
    /// The unread body of a refused request, read to its end before the refusal is answered.
    #[derive(Debug)]
    pub struct Drain<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<B> {
        Reading {
            #[pin]
            body: B,
            // Bytes still allowed before giving up.
            budget: u64,
            // Fires after `IDLE_GRACE` without a frame; made on the first poll, so that
            // building a refusal needs no timer.
            #[pin]
            idle: Option<Sleep>,
        },
        Done {
            // The body was left unread, so the connection cannot carry another request.
            close: bool,
        },
    }
}

impl<B: Body> Drain<B> {
    /// Nothing to drain.
    pub fn none() -> Self {
        Self::done(false)
    }

    fn done(close: bool) -> Self {
        Self {
            state: State::Done { close },
        }
    }

    /// Drains the body of `request` if that helps, within `budget` bytes.
    pub fn new(request: Request<B>, budget: u64) -> Self {
        let wanted = request.version() <= Version::HTTP_11
            && !request.headers().contains_key(EXPECT)
            && !request.body().is_end_stream();
        if !wanted {
            Self::none()
        } else if request.body().size_hint().lower() > budget {
            Self::done(true)
        } else {
            Self {
                state: State::Reading {
                    body: request.into_body(),
                    budget,
                    idle: None,
                },
            }
        }
    }

    /// Whether the answer must close the connection, because the body was not read to its
    /// end. Meaningful once [`poll_drain`](Self::poll_drain) is ready.
    pub fn closes(&self) -> bool {
        matches!(self.state, State::Done { close: true })
    }

    /// Ready once the body has ended, failed, gone past the budget, or stalled for
    /// [`IDLE_GRACE`].
    pub fn poll_drain(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.project().state;
        if let StateProj::Reading {
            mut body,
            budget,
            mut idle,
        } = state.as_mut().project()
        {
            let ended = loop {
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let len = frame.data_ref().map_or(0, |data| {
                            u64::try_from(data.remaining()).unwrap_or(u64::MAX)
                        });
                        let Some(left) = budget.checked_sub(len) else {
                            break false;
                        };
                        *budget = left;
                        if let Some(idle) = idle.as_mut().as_pin_mut() {
                            idle.reset(Instant::now() + IDLE_GRACE);
                        }
                    }
                    Poll::Ready(Some(Err(_))) => break false,
                    Poll::Ready(None) => break true,
                    Poll::Pending => {
                        if idle.is_none() {
                            idle.set(Some(sleep(IDLE_GRACE)));
                        }
                        let stalled = idle
                            .as_mut()
                            .as_pin_mut()
                            .is_some_and(|idle| idle.poll(cx).is_ready());
                        if !stalled {
                            return Poll::Pending;
                        }
                        break false;
                    }
                }
            };
            // Dropped here, not with the response: an abandoned body tells hyper to close.
            state.set(State::Done { close: !ended });
        }
        Poll::Ready(())
    }
}

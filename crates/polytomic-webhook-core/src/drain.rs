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
//! A server can bound draining as a whole: a [`DrainBudget`] in the request's extensions caps
//! the drains at once and the time each may take; a refused request that finds no drain free
//! is answered at once with `Connection: close` instead. A [`HeldPlace`] in the extensions (a
//! server-wide place, such as a place among the deliveries in flight) is given back as soon as
//! the request is refused, so a refused body being drained holds no place a delivery needs.
//!
//! It does not drain when that cannot help or is not wanted:
//! - HTTP/2 and later end an unread request stream by themselves after the response;
//! - a client sending `Expect: 100-continue` waits for permission that a refusal withholds,
//!   so it never sends the body at all;
//! - a body declared larger than the limit is left unread, and the answer says
//!   `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::header::EXPECT;
use http::{Request, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep, sleep_until};

/// How long the drain waits for the next byte of a refused body before it gives up, answers
/// and closes the connection.
///
/// A client that is sending delivers its next bytes within milliseconds; a second only ends
/// the drain for one that has stopped, or never started. The body deadline
/// (`body_timeout_secs`) is no use here: it is generous on purpose, for authenticated senders
/// on slow links, and may be off.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// A server-wide bound on draining, put in a request's extensions by the server's limits: how
/// many refused bodies may be drained at once, and for how long each.
///
/// ```
/// use std::time::Duration;
///
/// use polytomic_webhook_core::drain::DrainBudget;
///
/// let budget = DrainBudget::new(32, Duration::from_secs(5));
/// assert_eq!(budget.available(), 32);
/// ```
#[derive(Clone, Debug)]
pub struct DrainBudget {
    drains: Arc<Semaphore>,
    max_time: Duration,
}

impl DrainBudget {
    /// At most `max_drains` drains at once (at least 1), each stopped after `max_time`.
    pub fn new(max_drains: usize, max_time: Duration) -> Self {
        Self {
            drains: Arc::new(Semaphore::new(max_drains.clamp(1, Semaphore::MAX_PERMITS))),
            max_time,
        }
    }

    /// The drains that could start now.
    pub fn available(&self) -> usize {
        self.drains.available_permits()
    }
}

/// A server-wide place a request holds while it is handled, given back when the request is
/// refused (by [`Drain::new`]) or by whoever holds it, whichever comes first. Clones share the
/// place.
///
/// ```
/// use std::sync::Arc;
///
/// use polytomic_webhook_core::drain::HeldPlace;
/// use tokio::sync::Semaphore;
///
/// let places = Arc::new(Semaphore::new(1));
/// let place = HeldPlace::new(Arc::clone(&places).try_acquire_owned().unwrap());
/// assert_eq!(places.available_permits(), 0);
/// place.clone().release();
/// assert_eq!(places.available_permits(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct HeldPlace(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl HeldPlace {
    /// Holds `permit` until released.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Arc::new(Mutex::new(Some(permit))))
    }

    /// Gives the place back (once; later calls do nothing).
    pub fn release(&self) {
        // A poisoned lock still holds the permit: giving it back is always right.
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

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
            // When the drain gives up whatever the client sends (a `DrainBudget`'s time).
            deadline: Option<Instant>,
            // Fires after `IDLE_GRACE` without a frame, or at the deadline; made on the first
            // poll, so that building a refusal needs no timer.
            #[pin]
            idle: Option<Sleep>,
            // The drain's place in its `DrainBudget`, held while it reads.
            drain: Option<OwnedSemaphorePermit>,
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

    /// Drains the body of `request`, which was refused, if that helps: within `budget` bytes
    /// and the [`DrainBudget`] in its extensions, if any. Gives back the [`HeldPlace`] in its
    /// extensions, if any, at once.
    pub fn new(request: Request<B>, budget: u64) -> Self {
        if let Some(place) = request.extensions().get::<HeldPlace>() {
            place.release();
        }
        let wanted = request.version() <= Version::HTTP_11
            && !request.headers().contains_key(EXPECT)
            && !request.body().is_end_stream();
        if !wanted {
            return Self::none();
        }
        if request.body().size_hint().lower() > budget {
            return Self::done(true);
        }
        let (drain, deadline) = match request.extensions().get::<DrainBudget>() {
            None => (None, None),
            Some(drains) => match Arc::clone(&drains.drains).try_acquire_owned() {
                Ok(drain) => (Some(drain), Some(Instant::now() + drains.max_time)),
                // Every drain is taken: answer now and close, rather than wait for one.
                Err(_) => return Self::done(true),
            },
        };
        Self {
            state: State::Reading {
                body: request.into_body(),
                budget,
                deadline,
                idle: None,
                drain,
            },
        }
    }

    /// Whether the answer must close the connection, because the body was not read to its
    /// end. Meaningful once [`poll_drain`](Self::poll_drain) is ready.
    pub fn closes(&self) -> bool {
        matches!(self.state, State::Done { close: true })
    }

    /// Ready once the body has ended, failed, gone past the budget or the drain's time, or
    /// stalled for [`IDLE_GRACE`].
    pub fn poll_drain(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.project().state;
        if let StateProj::Reading {
            mut body,
            budget,
            deadline,
            mut idle,
            drain: _,
        } = state.as_mut().project()
        {
            let deadline = *deadline;
            let next_wake = || {
                let idle_end = Instant::now() + IDLE_GRACE;
                deadline.map_or(idle_end, |deadline| deadline.min(idle_end))
            };
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
                        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                            break false;
                        }
                        if let Some(idle) = idle.as_mut().as_pin_mut() {
                            idle.reset(next_wake());
                        }
                    }
                    Poll::Ready(Some(Err(_))) => break false,
                    Poll::Ready(None) => break true,
                    Poll::Pending => {
                        if idle.is_none() {
                            idle.set(Some(sleep_until(next_wake())));
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

//! [`Readiness`]: whether the server can take deliveries now, for a `/readyz` route.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use polytomic_webhook_core::Problem;

/// The future a readiness probe returns.
pub type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// How long a probe may take before the server counts as not ready: a store that does not
/// answer within this is as good as down for a delivery, and an orchestrator's own probe
/// timeout (Kubernetes: 1 s by default) should see an answer, not a hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// How long a probe's result answers `/readyz` before the probe runs again.
///
/// `/readyz` answers anyone who reaches the port, so it must cost nothing a delivery needs:
/// with one probe per request, a flood of probes would queue behind (and ahead of) the
/// deliveries at the store. Once a second still turns `/readyz` to 503 within about a second
/// (plus [`PROBE_TIMEOUT`]) of the store failing.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The problem `code` of a `/readyz` answer when the server is not ready.
pub const NOT_READY: &str = "not_ready";

/// Asks whether the server can take deliveries now: a cheap check of whatever a delivery
/// needs (the store a batch is written to, say). [`Readiness::always`] is the default, for a
/// server that needs nothing but itself.
///
/// The probe runs at most once per [`PROBE_INTERVAL`], one at a time, whatever the number of
/// requests asking; the others get its last result. Clones share the probe and its result.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// use polytomic_webhook::readiness::Readiness;
///
/// let store_up = Arc::new(AtomicBool::new(false));
/// let probe = Arc::clone(&store_up);
/// let readiness = Readiness::new(move || {
///     let up = probe.load(Ordering::Relaxed);
///     async move { up }
/// });
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// assert_eq!(readiness.answer().await.status(), 503);
/// store_up.store(true, Ordering::Relaxed);
/// assert_eq!(readiness.answer().await.status(), 503); // the last result, until it is a second old
/// tokio::time::sleep(polytomic_webhook::readiness::PROBE_INTERVAL).await;
/// assert_eq!(readiness.answer().await.status(), 200);
/// # });
/// ```
#[derive(Clone)]
pub struct Readiness(Option<Arc<Probe>>);

/// A probe and what it last said.
struct Probe {
    run: Box<dyn Fn() -> ProbeFuture + Send + Sync>,
    /// When the probe last finished, and its answer.
    last: Mutex<Option<(Instant, bool)>>,
    /// Held while the probe runs, so that it runs once at a time.
    running: tokio::sync::Mutex<()>,
}

impl Probe {
    fn last(&self) -> Option<(Instant, bool)> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn is_ready(&self) -> bool {
        let fresh = |last: Option<(Instant, bool)>| {
            last.filter(|(at, _)| at.elapsed() < PROBE_INTERVAL)
                .map(|(_, ready)| ready)
        };
        if let Some(ready) = fresh(self.last()) {
            return ready;
        }
        let _running = match self.running.try_lock() {
            Ok(running) => running,
            // Another request is probing: its last result stands meanwhile, and the very first
            // request waits for the first result rather than guess.
            Err(_) => match self.last() {
                Some((_, ready)) => return ready,
                None => self.running.lock().await,
            },
        };
        // A request that waited may find the result it waited for.
        if let Some(ready) = fresh(self.last()) {
            return ready;
        }
        let ready = tokio::time::timeout(PROBE_TIMEOUT, (self.run)())
            .await
            .unwrap_or(false);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), ready));
        ready
    }
}

impl Readiness {
    /// Always ready.
    #[must_use]
    pub fn always() -> Self {
        Self(None)
    }

    /// Ready when `probe` answers `true` within [`PROBE_TIMEOUT`].
    #[must_use]
    pub fn new<F, Fut>(probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self(Some(Arc::new(Probe {
            run: Box::new(move || Box::pin(probe())),
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
        })))
    }

    /// Whether the probe's latest answer, at most [`PROBE_INTERVAL`] old, was `true` in time
    /// (the probe runs again when it is older). Needs a tokio runtime with its timer, as every
    /// server has.
    pub async fn is_ready(&self) -> bool {
        match &self.0 {
            None => true,
            Some(probe) => probe.is_ready().await,
        }
    }

    /// The `/readyz` answer: 200 `ready`, or 503 `not_ready` as problem+json.
    pub async fn answer(&self) -> Response {
        if self.is_ready().await {
            "ready\n".into_response()
        } else {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                NOT_READY,
                "The receiver cannot take deliveries now.",
            )
            .into_response()
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::always()
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            None => "Readiness::always",
            Some(_) => "Readiness(probe)",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_requests_runs_the_probe_once_per_interval_and_a_failure_shows_within_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicBool::new(true));
        let readiness = {
            let (calls, up) = (Arc::clone(&calls), Arc::clone(&up));
            Readiness::new(move || {
                calls.fetch_add(1, Ordering::Relaxed);
                let up = up.load(Ordering::Relaxed);
                // A slow store: every request arrives while the first probe runs.
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    up
                }
            })
        };
        let asking: Vec<_> = (0..1000)
            .map(|_| {
                let readiness = readiness.clone();
                tokio::spawn(async move { readiness.is_ready().await })
            })
            .collect();
        for answer in asking {
            assert!(answer.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        up.store(false, Ordering::Relaxed);
        assert!(
            readiness.is_ready().await,
            "the last result stands within the interval"
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
        assert!(
            !readiness.is_ready().await,
            "then the probe runs again and says so"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_counts_as_not_ready_after_the_timeout() {
        let readiness = Readiness::new(std::future::pending::<bool>);
        assert!(!readiness.is_ready().await);
    }
}

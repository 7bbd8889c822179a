//! [`Readiness`]: whether the server can take deliveries now, for a `/readyz` route.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use polytomic_webhook_core::Problem;

/// The future a readiness probe returns.
pub type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// How long a probe may take before the server counts as not ready: a store that does not
/// answer within this is as good as down for a delivery, and an orchestrator's own probe
/// timeout (Kubernetes: 1 s by default) should see an answer, not a hang.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The problem `code` of a `/readyz` answer when the server is not ready.
pub const NOT_READY: &str = "not_ready";

/// Asks whether the server can take deliveries now: a cheap check of whatever a delivery
/// needs (the store a batch is written to, say). [`Readiness::always`] is the default, for a
/// server that needs nothing but itself.
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
/// assert_eq!(readiness.answer().await.status(), 200);
/// # });
/// ```
#[derive(Clone)]
pub struct Readiness(Option<Arc<dyn Fn() -> ProbeFuture + Send + Sync>>);

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
        Self(Some(Arc::new(move || Box::pin(probe()))))
    }

    /// Runs the probe: `true` when it answers `true` in time. Needs a tokio runtime with its
    /// timer, as every server has.
    pub async fn is_ready(&self) -> bool {
        match &self.0 {
            None => true,
            Some(probe) => tokio::time::timeout(PROBE_TIMEOUT, probe())
                .await
                .unwrap_or(false),
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

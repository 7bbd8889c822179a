//! The marker a composed layer leaves on a request it admitted, which the extractors require.
//!
//! axum applies `Router::layer` only to the routes added before it, so a layer written before
//! its route wraps nothing and the handler would run for any request at all. The extractors
//! therefore refuse a request no layer admitted instead of parsing it. The marker is an
//! extension of a private type: a client cannot send one, and only the layers (through the
//! hidden [`__private`](crate::__private) functions) insert it.

use http::Extensions;

use crate::rejection::LayerMissing;

/// Left by the composed `sync.records` layer once its checks passed.
#[derive(Clone, Copy, Debug)]
struct BatchAdmitted;

/// Left by the composed Events layer once the signature matched.
#[derive(Clone, Copy, Debug)]
struct OrgEventAdmitted;

/// Which layer a request must have passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// `PolytomicWebhookLayer`, for `SyncRecords`, `PolytomicEvent`, `read` and `read_event`.
    Batch,
    /// `PolytomicOrgEventsLayer`, for `PolytomicOrgEvent`.
    OrgEvents,
}

impl Gate {
    /// `Ok` when the matching layer admitted the request; otherwise the 500 `layer_missing`
    /// rejection, after an `error` log line that says how to fix the router.
    pub(crate) fn require(self, extensions: &Extensions) -> Result<(), LayerMissing> {
        let admitted = match self {
            Self::Batch => extensions.get::<BatchAdmitted>().is_some(),
            Self::OrgEvents => extensions.get::<OrgEventAdmitted>().is_some(),
        };
        if admitted {
            return Ok(());
        }
        let (extractor, layer, opt_out) = self.names();
        tracing::error!(
            code = LayerMissing::CODE,
            "{extractor} ran on a request that {layer} did not admit, so nothing authenticated \
             it: the layer must wrap the route, as in `Router::new().route(path, post(handler))\
             .layer({layer}::new(config)?)` or `.route_layer(...)`; a `.layer(...)` written \
             before `.route(...)` wraps nothing. To parse without the layer on purpose, use \
             {opt_out}"
        );
        Err(LayerMissing::new(self))
    }

    /// The extractor, the layer it needs, and the way to do without it.
    pub(crate) fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Batch => (
                "the SyncRecords / PolytomicEvent extractor (or read / read_event)",
                "PolytomicWebhookLayer",
                "WithoutLayer<SyncRecords<T>>, read_without_layer or read_event_without_layer",
            ),
            Self::OrgEvents => (
                "the PolytomicOrgEvent extractor",
                "PolytomicOrgEventsLayer",
                "WithoutLayer<PolytomicOrgEvent<T>> or parse_org_event",
            ),
        }
    }
}

/// Marks a request the composed `sync.records` layer admitted. For the `polytomic-webhook`
/// crate's layers only: a request marked by other code reaches the handler unauthenticated.
pub fn admit_batch(extensions: &mut Extensions) {
    extensions.insert(BatchAdmitted);
}

/// Marks a request the composed Events layer admitted (its signature matched). For the
/// `polytomic-webhook` crate's layers only.
pub fn admit_org_event(extensions: &mut Extensions) {
    extensions.insert(OrgEventAdmitted);
}

/// Whether the composed Events layer admitted the request: for a layer inside it, which must
/// not count what that layer counts already.
pub fn admitted_by_org_events_layer(extensions: &Extensions) -> bool {
    extensions.get::<OrgEventAdmitted>().is_some()
}

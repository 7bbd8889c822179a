//! A delivery's lease on an event id: the token its reservation writes, and the guard that
//! makes sure the lease is committed or released even when the delivery cannot see it through
//! (a store call that failed or timed out, a future dropped by a client that went away).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{EventIdStore, StoreError};

/// The first wait before the background task tries a settlement again; it doubles each time,
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between two tries: once the store is back, a settlement lands within this
/// (and the store's answer), so the next retry of the event finds the id free.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The random value a reservation writes into the store, and that commit and release must
/// present: a delivery only ever commits or frees its own lease, never one that another
/// delivery took after it ran out.
///
/// ```
/// use polytomic_webhook::dedup::LeaseToken;
///
/// let token = LeaseToken::random()?;
/// assert_ne!(token, LeaseToken::random()?);
/// assert_eq!(token.to_string().len(), 32);
/// assert_eq!(LeaseToken::from_bytes([0xab; 16]).to_string(), "ab".repeat(16));
/// # Ok::<(), polytomic_webhook::dedup::StoreError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken([u8; 16]);

impl LeaseToken {
    /// 128 bits from the operating system's random source.
    pub fn random() -> Result<Self, StoreError> {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes)
            .map_err(|error| StoreError::new(format!("no random lease token: {error}")))?;
        Ok(Self(bytes))
    }

    /// A token with these bytes (for tests, and stores that read tokens back).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

/// 32 lowercase hex digits: what the Redis and SQLite stores write.
impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseToken({self})")
    }
}

/// What a lease still needs from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owed {
    /// The reservation got no answer (an error, a timeout, a dropped future): it may have
    /// taken effect, or may still when the store catches up. Release it should it appear,
    /// until the lease would have run out anyway.
    UncertainRelease,
    /// The reservation was claimed and the handler did not succeed (or never finished).
    Release,
    /// The handler succeeded: mark the id done.
    Commit,
    /// Settled (or nothing was written).
    Nothing,
}

/// What the background task needs to settle a lease on its own.
struct Settlement<St> {
    store: Arc<St>,
    id: String,
    token: LeaseToken,
    ttl: Duration,
    store_timeout: Duration,
    /// When the lease runs out in the store by itself: no try is worth making after it.
    expires: Instant,
    owed: Owed,
}

impl<St: EventIdStore> Settlement<St> {
    /// One try at what is owed, within the store timeout: `Ok(true)` once nothing is owed any
    /// more (for an uncertain reservation: only once it was found and released).
    async fn attempt(&self) -> Result<bool, StoreError> {
        let call = async {
            match self.owed {
                Owed::Commit => self
                    .store
                    .commit(&self.id, &self.token, self.ttl)
                    .await
                    .map(|committed| {
                        if !committed {
                            tracing::warn!(
                                "the event's lease ran out before it was committed: a \
                                 redelivery may run the handler again"
                            );
                        }
                        true
                    }),
                Owed::Release => self
                    .store
                    .release(&self.id, &self.token)
                    .await
                    .map(|_| true),
                Owed::UncertainRelease => self.store.release(&self.id, &self.token).await,
                Owed::Nothing => Ok(true),
            }
        };
        timed(self.store_timeout, call).await
    }

    /// Tries until nothing is owed or the lease would have run out, waiting longer each time.
    async fn run(self, _pending: OwnedSemaphorePermit) {
        let mut wait = RETRY_FIRST;
        loop {
            match self.attempt().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "settling an event's lease failed again"),
            }
            if Instant::now() + wait >= self.expires {
                if self.owed != Owed::UncertainRelease {
                    tracing::warn!(
                        owed = ?self.owed,
                        "the event id store stayed unavailable for the whole lease; it ran out"
                    );
                }
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}

/// `call`, or an error once `timeout` has passed without its answer.
pub(super) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(format!(
                "the store did not answer within {timeout:?}"
            )))
        })
}

/// A delivery's lease on its event id. Dropped with something still owed (the delivery's own
/// try failed, or the delivery was dropped), it hands that to a background task, which tries
/// again with backoff until it lands or the lease would have run out anyway. At most
/// `pending`'s permits of such tasks exist at once; past that a lease is left to run out.
pub(super) struct Lease<St: EventIdStore> {
    settlement: Settlement<St>,
    pending: Arc<Semaphore>,
}

impl<St: EventIdStore> Lease<St> {
    /// A lease about to be reserved: until the store says otherwise, it is owed an uncertain
    /// release.
    pub(super) fn new(layer: &super::DedupLayer<St>, id: String, token: LeaseToken) -> Self {
        Self {
            settlement: Settlement {
                store: Arc::clone(&layer.store),
                id,
                token,
                ttl: layer.ttl,
                store_timeout: layer.store_timeout,
                expires: Instant::now() + layer.lease,
                owed: Owed::UncertainRelease,
            },
            pending: Arc::clone(&layer.pending),
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.settlement.id
    }

    pub(super) fn token(&self) -> &LeaseToken {
        &self.settlement.token
    }

    pub(super) fn owe(&mut self, owed: Owed) {
        self.settlement.owed = owed;
    }

    /// Tries to settle what is owed now; on failure the drop hands it to the background.
    pub(super) async fn settle(&mut self) {
        match self.settlement.attempt().await {
            Ok(_) => self.settlement.owed = Owed::Nothing,
            Err(error) => tracing::warn!(
                %error,
                owed = ?self.settlement.owed,
                "could not record the event id's outcome; retrying in the background"
            ),
        }
    }
}

impl<St: EventIdStore> Drop for Lease<St> {
    fn drop(&mut self) {
        if self.settlement.owed == Owed::Nothing {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to settle the event's lease on: it will run out");
            return;
        };
        let Ok(permit) = Arc::clone(&self.pending).try_acquire_owned() else {
            tracing::warn!(
                "too many event leases are waiting to be settled: this one will run out"
            );
            return;
        };
        let settlement = Settlement {
            store: Arc::clone(&self.settlement.store),
            id: std::mem::take(&mut self.settlement.id),
            ..self.settlement
        };
        runtime.spawn(settlement.run(permit));
    }
}

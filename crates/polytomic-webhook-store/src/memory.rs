//! [`MemorySink`]: the sink for tests and examples.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::{Mutex, PoisonError};

use polytomic_webhook_event::SyncRecords;

use crate::{Identity, Sink, SinkFuture, Stored, StoredRecord, latest_of_each};

/// A sink that keeps everything in memory, for tests: the same identity and "unchanged" rules
/// as the durable sinks, gone when the process ends.
///
/// ```
/// use polytomic_webhook_store::{Identity, MemorySink};
///
/// let sink = MemorySink::new(Identity::hash());
/// assert!(sink.snapshot().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct MemorySink {
    identity: Identity,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (sync id, identity) → last stored hash.
    last: HashMap<(String, String), String>,
    records: Vec<StoredRecord>,
}

impl MemorySink {
    /// An empty sink that identifies records by `identity`.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            state: Mutex::default(),
        }
    }

    /// Every stored record, in store order (what [`Sink::records`] gives, without the await).
    pub fn snapshot(&self) -> Vec<StoredRecord> {
        self.lock().records.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store_now(&self, batch: &SyncRecords) -> Stored {
        let latest = latest_of_each(
            batch.iter().map(|record| self.identity.borrowed(record)),
            RandomState::new(),
        );
        // One lock for the whole batch: that is this sink's atomic step.
        let mut state = self.lock();
        let mut result = Stored {
            superseded: batch.len() - latest.len(),
            ..Stored::default()
        };
        for ((key, _), record) in latest {
            let identity = (batch.id().as_str().to_owned(), Identity::of(key, record));
            if state.last.get(&identity).map(String::as_str) == Some(record.hash().as_str()) {
                result.unchanged += 1;
                continue;
            }
            let stored = StoredRecord::new(batch, record, key);
            state.last.insert(identity, stored.hash.clone());
            state.records.push(stored);
            result.stored += 1;
        }
        result
    }
}

impl Sink for MemorySink {
    fn store<'a>(&'a self, batch: &'a SyncRecords) -> SinkFuture<'a, Stored> {
        Box::pin(async move { Ok(self.store_now(batch)) })
    }

    fn ready(&self) -> SinkFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>> {
        Box::pin(async move { Ok(self.snapshot()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_sink_passes_the_shared_suite() {
        crate::testing::check_sink(|identity| async move { MemorySink::new(identity) }).await;
    }
}

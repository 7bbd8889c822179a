//! [`RedisEventIdStore`]: organisation event ids in Redis, so that replicas agree on which
//! events were handled.

use std::time::Duration;

use polytomic_webhook::dedup::{EventIdStore, Reservation, StoreError};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::SinkError;
use crate::redis::{connect, redis_error};

/// The key prefix used unless [`RedisEventIdStore::prefix`] sets another.
pub const DEFAULT_EVENT_PREFIX: &str = "polytomic:event:";

const PENDING: &str = "pending";
const DONE: &str = "done";

/// Deletes the key only while it still says `pending`: a `GET` then `DEL` from the client
/// could delete the `done` that another replica wrote in between.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// An [`EventIdStore`] in Redis (2.6.12 or later), for a receiver running as several replicas:
/// a retry that reaches another replica is still recognised.
///
/// Each event id is one string key, `PREFIX` + id, holding `pending` while a delivery's
/// handler runs and `done` once it succeeded, with Redis's own expiry as the lease and the
/// TTL:
///
/// | operation | Redis |
/// |---|---|
/// | `reserve` | `SET key pending NX PX lease`; if the key exists, `GET key` tells `done` from `pending` |
/// | `commit` | `SET key done PX ttl` |
/// | `release` | a script that deletes the key only while it holds `pending` |
///
/// Every command touches a single key, so the keys need no hash tag for Redis Cluster. The
/// store connects to one endpoint and reconnects by itself; while Redis cannot be reached
/// each operation fails, which [`DedupLayer`](polytomic_webhook::dedup::DedupLayer) answers
/// 503 `event_store_unavailable`. No error or `Debug` output shows the URL.
#[derive(Clone)]
pub struct RedisEventIdStore {
    connection: ConnectionManager,
    release: Script,
    prefix: String,
}

impl std::fmt::Debug for RedisEventIdStore {
    /// Shows no URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventIdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisEventIdStore {
    /// Connects to the Redis at `url` (`redis://HOST:PORT[/DB]`, `rediss://` for TLS), with
    /// keys under [`DEFAULT_EVENT_PREFIX`].
    pub async fn connect(url: &str) -> Result<Self, SinkError> {
        Ok(Self {
            connection: connect(url).await?,
            release: Script::new(RELEASE_SCRIPT),
            prefix: DEFAULT_EVENT_PREFIX.to_owned(),
        })
    }

    /// Keeps the keys under `prefix` instead, e.g. to separate environments sharing a Redis.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn reserve_id(&self, id: &str, lease: Duration) -> Result<Reservation, StoreError> {
        let key = self.key(id);
        let mut connection = self.connection.clone();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(lease)));
        // The key can expire between a refused `SET` and the `GET`; one more try then claims
        // it. Should it expire again, the delivery is told to retry rather than loop.
        for _ in 0..2 {
            let claimed: Option<String> = connection
                .set_options(&key, PENDING, options)
                .await
                .map_err(|error| failed("reserving an event id", &error))?;
            if claimed.is_some() {
                return Ok(Reservation::Claimed);
            }
            let state: Option<String> = connection
                .get(&key)
                .await
                .map_err(|error| failed("reading an event id", &error))?;
            match state.as_deref() {
                Some(DONE) => return Ok(Reservation::Done),
                Some(_) => return Ok(Reservation::InProgress),
                None => {}
            }
        }
        Ok(Reservation::InProgress)
    }

    async fn commit_id(&self, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let options =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(millis(ttl)));
        connection
            .set_options::<_, _, ()>(self.key(id), DONE, options)
            .await
            .map_err(|error| failed("committing an event id", &error))
    }

    async fn release_id(&self, id: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        self.release
            .key(self.key(id))
            .arg(PENDING)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|error| failed("releasing an event id", &error))
    }
}

/// `duration` in whole milliseconds for `PX`, which refuses 0.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The error quotes Redis's message, never the URL or the event id.
fn failed(what: &str, error: &redis::RedisError) -> StoreError {
    StoreError::new(redis_error(what, error))
}

impl EventIdStore for RedisEventIdStore {
    fn reserve(
        &self,
        id: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send {
        self.reserve_id(id, lease)
    }

    fn commit(
        &self,
        id: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.commit_id(id, ttl)
    }

    fn release(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.release_id(id)
    }
}

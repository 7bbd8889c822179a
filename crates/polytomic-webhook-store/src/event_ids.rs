//! [`RedisEventIdStore`]: organisation event ids in Redis, so that replicas agree on which
//! events were handled.

use std::time::Duration;

use polytomic_webhook::dedup::{EventIdStore, LeaseToken, Reservation, StoreError};
use redis::Script;
use redis::aio::ConnectionManager;

use crate::SinkError;
use crate::redis::{connect, redis_error};

/// The key prefix used unless [`RedisEventIdStore::prefix`] sets another.
pub const DEFAULT_EVENT_PREFIX: &str = "polytomic:event:";

const DONE: &str = "done";

/// Claims the key for the token unless it holds `done` or another token: one script, so that
/// no key can expire, or be written by another replica, between the read and the write.
const RESERVE_SCRIPT: &str = r"
local state = redis.call('GET', KEYS[1])
if not state then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'claimed'
end
if state == ARGV[1] then
  return 'claimed'
end
if state == 'done' then
  return 'done'
end
return 'in_progress'
";

/// Marks the key `done` only while it holds the token: a lease that ran out, and was perhaps
/// taken by another delivery since, is left alone.
const COMMIT_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0
";

/// Deletes the key only while it holds the token: a `GET` then `DEL` from the client could
/// delete the `done`, or the lease, that another replica wrote in between.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// An [`EventIdStore`] in Redis (2.6.12 or later), for a receiver running as several replicas:
/// a retry that reaches another replica is still recognised.
///
/// Each event id is one string key, `PREFIX` + id, holding the [`LeaseToken`] of the delivery
/// whose handler runs (32 hex digits) and `done` once it succeeded, with Redis's own expiry as
/// the lease and the TTL. Each operation is one Lua script, atomic in Redis:
///
/// | operation | Redis |
/// |---|---|
/// | `reserve` | `SET key token PX lease` when the key is absent; else its value tells `done`, this token (claimed) and another token (in progress) apart |
/// | `commit` | `SET key done PX ttl`, only while the key holds the token |
/// | `release` | `DEL key`, only while the key holds the token |
///
/// Every script touches a single key, so the keys need no hash tag for Redis Cluster. The
/// store connects to one endpoint and reconnects by itself; each command waits at most 5 s
/// for its answer. While Redis cannot be reached each operation fails, which
/// [`DedupLayer`](polytomic_webhook::dedup::DedupLayer) answers 503
/// `event_store_unavailable`, releasing the lease once Redis is back. No error or `Debug`
/// output shows the URL.
///
/// ```no_run
/// use polytomic_webhook::dedup::DedupLayer;
/// use polytomic_webhook_store::RedisEventIdStore;
///
/// # async fn run() -> Result<(), polytomic_webhook_store::SinkError> {
/// let store = RedisEventIdStore::connect("redis://127.0.0.1:6379").await?;
/// let dedup = DedupLayer::new(store.prefix("staging:event:"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisEventIdStore {
    connection: ConnectionManager,
    reserve: Script,
    commit: Script,
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
            reserve: Script::new(RESERVE_SCRIPT),
            commit: Script::new(COMMIT_SCRIPT),
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

    async fn reserve_id(
        &self,
        id: &str,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<Reservation, StoreError> {
        let mut connection = self.connection.clone();
        let state: String = self
            .reserve
            .key(self.key(id))
            .arg(token.to_string())
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| failed("reserving an event id", &error))?;
        match state.as_str() {
            "claimed" => Ok(Reservation::Claimed),
            DONE => Ok(Reservation::Done),
            _ => Ok(Reservation::InProgress),
        }
    }

    async fn commit_id(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        self.commit
            .key(self.key(id))
            .arg(token.to_string())
            .arg(millis(ttl))
            .invoke_async::<bool>(&mut connection)
            .await
            .map_err(|error| failed("committing an event id", &error))
    }

    async fn release_id(&self, id: &str, token: &LeaseToken) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        self.release
            .key(self.key(id))
            .arg(token.to_string())
            .invoke_async::<bool>(&mut connection)
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
        token: &LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Reservation, StoreError>> + Send {
        self.reserve_id(id, token, lease)
    }

    fn commit(
        &self,
        id: &str,
        token: &LeaseToken,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.commit_id(id, token, ttl)
    }

    fn release(
        &self,
        id: &str,
        token: &LeaseToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.release_id(id, token)
    }
}

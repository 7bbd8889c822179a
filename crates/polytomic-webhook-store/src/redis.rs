//! [`RedisSink`]: state in Redis, shared by any number of replicas.

use std::collections::VecDeque;
use std::hash::RandomState;
use std::time::Duration;

use polytomic_webhook_event::SyncRecords;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Script};

use crate::{
    Identity, Pages, RecordStream, Sink, SinkError, SinkFuture, Stored, StoredRecord,
    latest_of_each,
};

/// The stream name used unless the sink URL names another (`?stream=NAME`).
pub const DEFAULT_STREAM: &str = "polytomic:records";

/// How long connecting, and each command, may take before the batch is refused: a Redis that
/// does not answer must become a prompt 503, not a delivery that hangs until Polytomic gives
/// up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream entries read per `XRANGE` call while listing records, and records per page of a
/// listing: a listing holds at most this many entries per stream.
const PAGE: usize = 256;

/// One batch, one script: Redis runs it without interleaving any other command, so two
/// replicas storing the same batch at once store each record once. It reads every identity's
/// state before it writes anything of the batch (it only purges expired hash identities
/// first), so the errors Redis can raise mid-script (a key of the wrong type) come before the
/// batch's first write.
///
/// Redis's cost is mostly one call per command, so the script reads the whole batch's state
/// with one `HMGET` (and one `ZMSCORE` when expiring hash identities exist) and writes it back
/// with one `HSET` (in chunks, which keep `unpack` within Lua's stack): per record only the
/// `XADD` is left. A sorted set costs about four times a hash to update (measured with
/// `redis-benchmark`: 271 µs against 76 µs for 100 new members), so it holds hash identities
/// only when they expire.
///
/// KEYS: the sync's stream, its identity hash (key → last hash, and `#HASH` → `1` for a hash
/// identity without a TTL), its expiring hash identities (a sorted set, hash → expiry in ms).
/// ARGV: sync id, sync name, TTL in ms (0: none), then per record: key ("" for a hash
/// identity), hash, fields. The sink sends only the last record of each identity in the batch
/// ([`latest_of_each`]), so no identity comes twice: what the script read is what it compares
/// with, and the arguments for superseded records are never sent.
///
/// A hash identity is known when either structure holds it (and, in the sorted set, has not
/// expired), so turning the TTL on or off keeps what was stored before: entries written
/// without a TTL never expire, and entries written with one keep their expiry.
const STORE_SCRIPT: &str = r"
local CHUNK = 1000
local function each_chunk(list, run)
  for first = 1, #list, CHUNK do
    run(first, unpack(list, first, math.min(first + CHUNK - 1, #list)))
  end
end
local function lookup(command, key, names)
  local found = {}
  each_chunk(names, function(first, ...)
    local reply = redis.call(command, key, ...)
    for j = 1, #reply do found[first + j - 1] = reply[j] end
  end)
  return found
end
local ttl = tonumber(ARGV[3])
local expiry
-- Expired hash identities go, whatever the TTL setting now: with it turned off, they would
-- otherwise count as known for ever.
if ttl > 0 or redis.call('EXISTS', KEYS[3]) == 1 then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if ttl > 0 then expiry = now_ms + ttl end
end
local fields, hashes = {}, {}
for i = 4, #ARGV, 3 do
  local key = ARGV[i]
  if key == '' then
    fields[#fields + 1] = '#' .. ARGV[i + 1]
    hashes[#hashes + 1] = ARGV[i + 1]
  else
    fields[#fields + 1] = key
  end
end
local last = lookup('HMGET', KEYS[2], fields)
local scores = {}
if #hashes > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  local reply = lookup('ZMSCORE', KEYS[3], hashes)
  for j = 1, #hashes do if reply[j] then scores[hashes[j]] = true end end
end
local field_pairs, hash_pairs = {}, {}
local stored, unchanged = 0, 0
for r = 1, #fields do
  local i = 1 + 3 * r
  local field, key, hash = fields[r], ARGV[i], ARGV[i + 1]
  local previous = last[r]
  if key == '' then previous = (previous or scores[hash]) and hash end
  if previous == hash then
    unchanged = unchanged + 1
  else
    stored = stored + 1
    redis.call('XADD', KEYS[1], '*', 'sync_id', ARGV[1], 'sync_name', ARGV[2],
      'key', key, 'hash', hash, 'fields', ARGV[i + 2])
    if key ~= '' then
      field_pairs[#field_pairs + 1] = field
      field_pairs[#field_pairs + 1] = hash
    elseif expiry then
      hash_pairs[#hash_pairs + 1] = expiry
      hash_pairs[#hash_pairs + 1] = hash
    else
      field_pairs[#field_pairs + 1] = field
      field_pairs[#field_pairs + 1] = '1'
    end
  end
end
each_chunk(field_pairs, function(_, ...) redis.call('HSET', KEYS[2], ...) end)
each_chunk(hash_pairs, function(_, ...) redis.call('ZADD', KEYS[3], ...) end)
return {stored, unchanged}
";

/// Batches kept in Redis (6.2 or later), for receivers running as several replicas.
///
/// Each sync has three keys, sharing the hash tag `{SYNC_ID}` so that a batch's script only
/// touches keys of one slot, as Redis Cluster requires (the sink itself connects to one
/// endpoint: a server, or a proxy in front of a cluster):
///
/// - `STREAM:{SYNC_ID}`: a stream with one entry per stored record, with the fields
///   `sync_id`, `sync_name`, `key` (the key field's JSON text, empty for a hash identity),
///   `hash` and `fields` (the record's fields as JSON text);
/// - `STREAM:{SYNC_ID}:last`: a hash from key to the last stored hash, which also holds the
///   hash identities that never expire, as `#HASH` → `1` (no key's JSON text starts with `#`);
/// - `STREAM:{SYNC_ID}:hashes`: with [`RedisSink::connect`]'s TTL, a sorted set of the hashes
///   of records identified by hash, scored by when they expire.
///
/// `STREAM` is [`DEFAULT_STREAM`] unless configured. The connection is re-established by
/// itself: while Redis is unreachable every batch is refused, and deliveries succeed again
/// once it is back, without a restart.
#[derive(Clone)]
pub struct RedisSink {
    connection: ConnectionManager,
    script: Script,
    stream: String,
    identity: Identity,
    ttl_ms: u64,
}

impl std::fmt::Debug for RedisSink {
    /// Shows no URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("stream", &self.stream)
            .field("identity", &self.identity)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisSink {
    /// Connects to the Redis at `url` (`redis://HOST:PORT[/DB]`, `rediss://` for TLS).
    /// `ttl`, when given, is how long the state of a record identified by its hash is kept:
    /// after it, a redelivery of that record is stored again. Key identities never expire.
    pub async fn connect(
        url: &str,
        stream: &str,
        identity: Identity,
        ttl: Option<Duration>,
    ) -> Result<Self, SinkError> {
        Ok(Self {
            connection: connect(url).await?,
            script: Script::new(STORE_SCRIPT),
            stream: stream.to_owned(),
            identity,
            ttl_ms: ttl.map_or(0, |ttl| {
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
        })
    }

    fn stream_key(&self, sync: &str) -> String {
        format!("{}:{{{sync}}}", self.stream)
    }

    async fn store_batch(&self, batch: &SyncRecords) -> Result<Stored, SinkError> {
        let stream = self.stream_key(batch.id().as_str());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&stream)
            .key(format!("{stream}:last"))
            .key(format!("{stream}:hashes"))
            .arg(batch.id().as_str())
            .arg(batch.name())
            .arg(self.ttl_ms);
        let latest = latest_of_each(
            batch.iter().map(|record| self.identity.borrowed(record)),
            RandomState::new(),
        );
        let superseded = batch.len() - latest.len();
        for ((key, _), record) in latest {
            invocation
                .arg(key.unwrap_or(""))
                .arg(record.hash().as_str())
                .arg(record.fields().as_str());
        }
        let mut connection = self.connection.clone();
        let (stored, unchanged): (usize, usize) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| redis_error("storing a batch in Redis", &error))?;
        Ok(Stored {
            stored,
            unchanged,
            superseded,
        })
    }

    /// Every record of every sync's stream, merged by entry id (the time Redis stored it), a
    /// page at a time; owns its connection, so it outlives the sink.
    pub(crate) fn listing(&self) -> RecordStream<'static> {
        RecordStream::from_pages(Listing {
            connection: self.connection.clone(),
            pattern: format!("{}:{{*}}", escape_glob(&self.stream)),
            streams: None,
        })
    }
}

/// A listing under way: each stream's next entries, merged by entry id.
struct Listing {
    connection: ConnectionManager,
    /// The `MATCH` pattern of the record streams.
    pattern: String,
    /// Every record stream, once `SCAN` has found them.
    streams: Option<Vec<StreamCursor>>,
}

/// Where a listing is in one stream.
#[derive(Debug, Default)]
struct StreamCursor {
    key: String,
    /// Entries read and not yet listed, with their ids as numbers.
    read: VecDeque<((u64, u64), StoredRecord)>,
    /// The start of the next `XRANGE`; `None` once the stream is read to its end.
    next: Option<String>,
}

impl Listing {
    async fn page(&mut self) -> Result<Option<Vec<StoredRecord>>, SinkError> {
        let failed = |error: redis::RedisError| redis_error("reading records from Redis", &error);
        let connection = &mut self.connection;
        let streams = match &mut self.streams {
            Some(streams) => streams,
            None => {
                let mut keys = Vec::new();
                let mut cursor = 0_u64;
                loop {
                    let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&self.pattern)
                        .arg("TYPE")
                        .arg("stream")
                        .query_async(connection)
                        .await
                        .map_err(failed)?;
                    keys.extend(found);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                self.streams.insert(
                    keys.into_iter()
                        .map(|key| StreamCursor {
                            key,
                            read: VecDeque::new(),
                            next: Some("-".to_owned()),
                        })
                        .collect(),
                )
            }
        };
        let mut page = Vec::with_capacity(PAGE);
        while page.len() < PAGE {
            // Only the stream taken from last can have run out of entries read.
            for stream in streams.iter_mut().filter(|stream| stream.read.is_empty()) {
                if let Some(start) = stream.next.take() {
                    let entries: StreamRangeReply = connection
                        .xrange_count(&stream.key, &start, "+", PAGE)
                        .await
                        .map_err(failed)?;
                    stream.take(entries);
                }
            }
            match take_earliest(streams) {
                Some(record) => page.push(record),
                None => break,
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

impl StreamCursor {
    /// Takes a page `XRANGE` answered.
    fn take(&mut self, entries: StreamRangeReply) {
        let full = entries.ids.len() == PAGE;
        for entry in entries.ids {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            let key = field("key");
            let record = StoredRecord {
                sync_id: field("sync_id"),
                sync_name: field("sync_name"),
                key: (!key.is_empty()).then_some(key),
                hash: field("hash"),
                fields: field("fields"),
            };
            // `(` makes the start exclusive (Redis 6.2+).
            self.next = full.then(|| format!("({}", entry.id));
            self.read.push_back((entry_order(&entry.id), record));
        }
    }
}

/// The entry with the lowest id among the streams' next ones, or `None` when none has any
/// left: entries with the same id (in different streams) come in the streams' order, as a
/// stable sort of them all would give them.
fn take_earliest(streams: &mut [StreamCursor]) -> Option<StoredRecord> {
    let (_, earliest) = streams
        .iter()
        .enumerate()
        .filter_map(|(index, stream)| Some((stream.read.front()?.0, index)))
        .min()?;
    streams[earliest].read.pop_front().map(|(_, record)| record)
}

impl Pages for Listing {
    fn next_page(&mut self) -> SinkFuture<'_, Option<Vec<StoredRecord>>> {
        Box::pin(self.page())
    }
}

/// A connection to the Redis at `url` that re-establishes itself, with the timeouts above.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, SinkError> {
    // The client's errors may quote the URL, which may carry a password: keep them out.
    let client = redis::Client::open(url).map_err(|_| {
        SinkError::new("the Redis URL is not valid (see the redis crate's URL format)")
    })?;
    // The host and port (or socket path) only: a password is in the URL's other part.
    let connecting = format!(
        "connecting to Redis at {}",
        client.get_connection_info().addr
    );
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|error| redis_error(&connecting, &error))
}

/// A stream entry id (`MILLISECONDS-SEQUENCE`) as numbers, to sort by.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// `text` with Redis glob characters escaped, for a `MATCH` pattern.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A Redis failure as a sink error: the cause (the kind and Redis's own message, or the
/// system's words for a connection: refused, timed out, no such host), which quote neither
/// the URL nor a record.
pub(crate) fn redis_error(what: &str, error: &redis::RedisError) -> SinkError {
    let kind = error.kind();
    if let Some(detail) = error.detail() {
        return SinkError::from_cause(what, format_args!("{kind:?}: {detail}"));
    }
    match std::error::Error::source(error) {
        // The system's words ("Connection refused"), which a person can act on.
        Some(io) => SinkError::from_cause(what, io),
        None if error.is_timeout() => {
            SinkError::from_cause(what, format_args!("{kind:?}: timed out"))
        }
        None => SinkError::from_cause(what, format_args!("{kind:?}")),
    }
}

impl Sink for RedisSink {
    fn store<'a>(&'a self, batch: &'a SyncRecords) -> SinkFuture<'a, Stored> {
        Box::pin(self.store_batch(batch))
    }

    fn ready(&self) -> SinkFuture<'_, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map_err(|error| redis_error("checking Redis", &error))
        })
    }

    fn records(&self) -> SinkFuture<'_, Vec<StoredRecord>> {
        Box::pin(self.listing().collect())
    }

    fn record_stream(&self) -> RecordStream<'_> {
        self.listing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_redis_is_named_by_its_address_and_cause_never_its_password() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
        let error = connect(&url).await.err().expect("nothing listens there");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("connecting to Redis at 127.0.0.1:{port}: ")),
            "{message}"
        );
        assert!(message.to_lowercase().contains("refused"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    /// A stream whose entries read so far have these ids, with `name` and the id as each
    /// record's hash.
    fn read(name: &str, ids: &[&str]) -> StreamCursor {
        let record = |id: &str| StoredRecord {
            sync_id: String::new(),
            sync_name: String::new(),
            key: None,
            hash: format!("{name}{id}"),
            fields: "{}".to_owned(),
        };
        StreamCursor {
            read: ids.iter().map(|id| (entry_order(id), record(id))).collect(),
            ..StreamCursor::default()
        }
    }

    /// Streams' entries are merged by id as numbers (`10-0` after `9-0`), and entries with the
    /// same id in two streams come in the streams' order, as the sort of them all gave them.
    #[test]
    fn a_listing_merges_the_streams_by_entry_id() {
        let mut streams = [
            read("a", &["1-0", "5-0", "10-0"]),
            read("b", &["2-0", "5-0", "9-0"]),
        ];
        let mut merged = Vec::new();
        while let Some(record) = take_earliest(&mut streams) {
            merged.push(record.hash);
        }
        assert_eq!(merged, ["a1-0", "b2-0", "a5-0", "b5-0", "b9-0", "a10-0"]);
        assert!(streams.iter().all(|stream| stream.read.is_empty()));
    }
}

//! The event id stores behind `DedupLayer`: the in-memory one and `RedisEventIdStore` pass the
//! shared suite (`polytomic_webhook::testing::event_ids`; the SQLite one passes it in its own
//! crate), stuck reservations included, and the Redis one keeps its lease and TTL through
//! Redis's own expiry.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use polytomic_webhook::dedup::{EventIdStore, LeaseToken, MemoryEventIdStore, Reservation};
use polytomic_webhook::testing::event_ids::{self, Stall, StallingStore};
use polytomic_webhook_store::RedisEventIdStore;
use support::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

/// The figure: longer than the Redis client's 5 s response timeout.
const PAUSE: Duration = Duration::from_secs(6);

fn token() -> LeaseToken {
    LeaseToken::random().unwrap()
}

#[tokio::test]
async fn the_memory_store_passes_the_shared_suite() {
    let store = MemoryEventIdStore::new(100);
    event_ids::check_event_id_store(&store).await;
    event_ids::leases_and_ttls_run_out(&store).await;
}

#[tokio::test]
async fn the_redis_store_passes_the_shared_suite() {
    let Some(redis) = RedisServer::start("the_redis_store_passes_the_shared_suite") else {
        return;
    };
    let store = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    event_ids::check_event_id_store(&store).await;
    event_ids::leases_and_ttls_run_out(&store).await;
}

/// The test's own redis-server, paused with SIGSTOP.
struct Paused<'a>(&'a RedisServer);

impl Stall for Paused<'_> {
    fn stall(&self) {
        self.0.pause();
    }

    fn resume(&self) {
        self.0.resume();
    }
}

/// Redis paused 6 s during a reservation (its reply timed out, and the command ran when Redis
/// resumed), and a client that went away meanwhile: 2 s after Redis resumes, each retry
/// reaches the handler exactly once. The memory store, which cannot be paused, is wrapped in
/// one that stalls as Redis does, and passes the same case at the same time (to keep the
/// test's wall time at one pause).
#[tokio::test]
async fn the_memory_and_redis_stores_release_stalled_reservations() {
    let memory = Arc::new(StallingStore::new(MemoryEventIdStore::new(100)));
    let memory_case =
        event_ids::stalled_reservations_are_released(Arc::clone(&memory), &*memory, PAUSE);
    let Some(redis) =
        RedisServer::start("the_memory_and_redis_stores_release_stalled_reservations")
    else {
        memory_case.await;
        return;
    };
    let store = Arc::new(RedisEventIdStore::connect(&redis.url()).await.unwrap());
    let paused = Paused(&redis);
    let redis_case = event_ids::stalled_reservations_are_released(store, &paused, PAUSE);
    tokio::join!(memory_case, redis_case);
}

#[tokio::test]
async fn two_redis_stores_on_one_redis_agree_and_prefixes_keep_stores_apart() {
    let Some(redis) = RedisServer::start("two_redis_stores_on_one_redis_agree") else {
        return;
    };
    let one = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    let two = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    let (first, second) = (token(), token());
    assert_eq!(
        one.reserve("e", &first, LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        two.reserve("e", &second, LEASE).await.unwrap(),
        Reservation::InProgress
    );
    assert!(one.commit("e", &first, TTL).await.unwrap());
    assert_eq!(
        two.reserve("e", &second, LEASE).await.unwrap(),
        Reservation::Done
    );

    let staging = RedisEventIdStore::connect(&redis.url())
        .await
        .unwrap()
        .prefix("staging:event:");
    assert_eq!(
        staging.reserve("e", &second, LEASE).await.unwrap(),
        Reservation::Claimed
    );
}

/// A Redis that is gone is an error for every operation (the layer answers 503
/// `event_store_unavailable`), never a claim; the error does not show the URL's password.
#[tokio::test]
async fn an_unreachable_redis_fails_every_operation_without_showing_the_password() {
    let Some(mut redis) = RedisServer::start("an_unreachable_redis_event_ids") else {
        return;
    };
    let url = redis.url().replace("redis://", "redis://:hunter2-secret@");
    let store = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    redis.stop();
    let token = token();
    let errors = [
        store
            .reserve("x", &token, LEASE)
            .await
            .unwrap_err()
            .to_string(),
        store
            .commit("x", &token, TTL)
            .await
            .unwrap_err()
            .to_string(),
        store.release("x", &token).await.unwrap_err().to_string(),
    ];
    for error in &errors {
        assert!(error.contains("event id"), "{error}");
    }
    // The server is down, so connecting with a password fails too: its message must not
    // quote the URL.
    let refused = RedisEventIdStore::connect(&url).await.unwrap_err();
    let text = format!("{refused} {refused:?}");
    assert!(!text.contains("hunter2-secret"), "{text}");
    let debug = format!("{store:?}");
    assert!(!debug.contains("127.0.0.1"), "{debug}");
}

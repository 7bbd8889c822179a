//! The event id stores behind `DedupLayer`: the in-memory one and `RedisEventIdStore` pass the
//! same suite, and the Redis one keeps its lease and TTL through Redis's own expiry.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use polytomic_webhook::dedup::{EventIdStore, MemoryEventIdStore, Reservation};
use polytomic_webhook_store::RedisEventIdStore;
use support::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(3600);

/// What every store must do, on ids no other test uses: a claim excludes other deliveries,
/// a commit makes the id a duplicate, a release frees a claim but never a handled id, and ids
/// do not affect each other.
async fn check_event_id_store(store: &impl EventIdStore) {
    assert_eq!(
        store.reserve("a", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        store.reserve("a", LEASE).await.unwrap(),
        Reservation::InProgress
    );
    assert_eq!(
        store.reserve("b", LEASE).await.unwrap(),
        Reservation::Claimed
    );

    store.release("a").await.unwrap();
    assert_eq!(
        store.reserve("a", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    store.commit("a", TTL).await.unwrap();
    assert_eq!(store.reserve("a", LEASE).await.unwrap(), Reservation::Done);
    store.release("a").await.unwrap();
    assert_eq!(store.reserve("a", LEASE).await.unwrap(), Reservation::Done);

    // "b" is still held: the other id's commit and releases did not touch it.
    assert_eq!(
        store.reserve("b", LEASE).await.unwrap(),
        Reservation::InProgress
    );
    // Releasing an id nobody holds is harmless.
    store.release("never-reserved").await.unwrap();
    assert_eq!(
        store.reserve("never-reserved", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    // Ids are compared whole, whatever they contain.
    assert_eq!(
        store.reserve("a\"b:{c}*", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        store.reserve("a\"b:{c}", LEASE).await.unwrap(),
        Reservation::Claimed
    );
}

#[tokio::test]
async fn the_memory_store_passes_the_shared_suite() {
    check_event_id_store(&MemoryEventIdStore::new(100)).await;
}

#[tokio::test]
async fn the_redis_store_passes_the_shared_suite() {
    let Some(redis) = RedisServer::start("the_redis_store_passes_the_shared_suite") else {
        return;
    };
    let store = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    check_event_id_store(&store).await;
}

#[tokio::test]
async fn two_redis_stores_on_one_redis_agree_and_prefixes_keep_stores_apart() {
    let Some(redis) = RedisServer::start("two_redis_stores_on_one_redis_agree") else {
        return;
    };
    let one = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    let two = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    assert_eq!(one.reserve("e", LEASE).await.unwrap(), Reservation::Claimed);
    assert_eq!(
        two.reserve("e", LEASE).await.unwrap(),
        Reservation::InProgress
    );
    one.commit("e", TTL).await.unwrap();
    assert_eq!(two.reserve("e", LEASE).await.unwrap(), Reservation::Done);

    let staging = RedisEventIdStore::connect(&redis.url())
        .await
        .unwrap()
        .prefix("staging:event:");
    assert_eq!(
        staging.reserve("e", LEASE).await.unwrap(),
        Reservation::Claimed
    );
}

/// Expiry is Redis's own: the bounds only make sure the key had time to expire.
#[tokio::test]
async fn a_redis_lease_runs_out_by_itself_and_a_handled_id_is_forgotten_after_its_ttl() {
    let Some(redis) = RedisServer::start("a_redis_lease_runs_out_by_itself") else {
        return;
    };
    let store = RedisEventIdStore::connect(&redis.url()).await.unwrap();
    let short = Duration::from_millis(200);
    assert_eq!(
        store.reserve("l", short).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        store.reserve("t", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    store.commit("t", short).await.unwrap();
    assert_eq!(store.reserve("t", LEASE).await.unwrap(), Reservation::Done);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.reserve("l", LEASE).await.unwrap(),
        Reservation::Claimed
    );
    assert_eq!(
        store.reserve("t", LEASE).await.unwrap(),
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
    let errors = [
        store.reserve("x", LEASE).await.unwrap_err().to_string(),
        store.commit("x", TTL).await.unwrap_err().to_string(),
        store.release("x").await.unwrap_err().to_string(),
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

//! Each identity's last hash, kept in memory as fingerprints, so that deciding what a batch
//! changes reads no row and writes none but the batch's own.
//!
//! The file's `batches` table is the truth: this is built from it when the file is opened, and
//! brought up to date at the start of every write transaction with the rows other connections
//! added since (which makes two processes writing one file agree). Changes made for a batch
//! are logged in an [`Undo`] until its transaction commits, so a batch that is refused, or a
//! transaction that fails, leaves nothing behind here either.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash, Hasher, RandomState};

use polytomic_webhook_event::{Record, SyncRecords};

use crate::{Identity, latest_of_each};

/// A 128-bit fingerprint: two SipHash-1-3 digests under independent random keys, chosen anew
/// each time the file is opened (so nobody can aim a collision at them). Two different
/// identities, or two different hashes, share a fingerprint with a probability near 2⁻¹²⁸.
type Fingerprint = u128;

/// The "last hash" of an identity made of a hash: that hash itself, so being known is all
/// there is to compare, and no second fingerprint is needed.
const OWN_HASH: Fingerprint = 0;

/// The two fingerprint hashers, having taken in a sync's id: one per batch, cloned for each
/// of its records.
#[derive(Clone)]
struct SyncHashers(DefaultHasher, DefaultHasher);

impl SyncHashers {
    /// The fingerprint of the identity of the record with this key (`None`: a hash identity)
    /// and this hash, within the sync.
    fn identity(&self, key: Option<&str>, hash: &str) -> Fingerprint {
        let Self(mut first, mut second) = self.clone();
        // The tag keeps a key and a hash of the same text apart.
        let (tag, text) = key.map_or((0_u8, hash), |key| (1, key));
        for hasher in [&mut first, &mut second] {
            hasher.write_u8(tag);
            text.hash(hasher);
        }
        join(first.finish(), second.finish())
    }
}

fn join(high: u64, low: u64) -> Fingerprint {
    (u128::from(high) << 64) | u128::from(low)
}

/// The map's hasher: a fingerprint is already uniformly random, so its low 64 bits serve as
/// is (hashing it again cost more than the rest of the lookup).
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is ever called; this keeps any other use correct, if slower.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        // Truncation keeps the low half, which is as random as the whole.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.0 = value as u64;
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Identity fingerprint → fingerprint of the identity's last stored hash.
#[derive(Debug)]
pub(super) struct Known {
    keys: (RandomState, RandomState),
    last: HashMap<Fingerprint, Fingerprint, BuildHasherDefault<FingerprintHasher>>,
    /// The newest `batches` row that `last` reflects.
    seq: i64,
}

/// What uncommitted batches changed in [`Known`]: each identity with the last hash it had
/// before (`None`: it was not known), oldest first.
pub(super) type Undo = Vec<(Fingerprint, Option<Fingerprint>)>;

impl Known {
    pub(super) fn new() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            last: HashMap::default(),
            seq: 0,
        }
    }

    fn sync(&self, sync: &str) -> SyncHashers {
        let (mut first, mut second) = (self.keys.0.build_hasher(), self.keys.1.build_hasher());
        sync.hash(&mut first);
        sync.hash(&mut second);
        SyncHashers(first, second)
    }

    /// What is kept as the last hash of a record with this key and hash.
    fn last_hash(&self, key: Option<&str>, hash: &str) -> Fingerprint {
        match key {
            Some(_) => join(self.keys.0.hash_one(hash), self.keys.1.hash_one(hash)),
            None => OWN_HASH,
        }
    }

    /// The newest `batches` row taken into account.
    pub(super) fn seq(&self) -> i64 {
        self.seq
    }

    /// Takes in a record of row `seq`, which some connection committed.
    pub(super) fn learn(&mut self, seq: i64, sync: &str, key: Option<&str>, hash: &str) {
        let identity = self.sync(sync).identity(key, hash);
        let last = self.last_hash(key, hash);
        self.last.insert(identity, last);
        self.seq = self.seq.max(seq);
    }

    /// The records of `batch` that change their identity's last hash, each with its key, and
    /// how many records a later one of the same identity superseded (see
    /// [`latest_of_each`]). Their changes are made at once (so the group's later batches see
    /// them) and logged in `undo`.
    pub(super) fn change<'b>(
        &mut self,
        identity: &Identity,
        batch: &'b SyncRecords,
        undo: &mut Undo,
    ) -> (Vec<(Option<&'b str>, &'b Record)>, usize) {
        let sync = self.sync(batch.id().as_str());
        let latest = latest_of_each(
            batch.iter().map(|record| {
                let key = identity.key(record);
                (sync.identity(key, record.hash().as_str()), (key, record))
            }),
            BuildHasherDefault::<FingerprintHasher>::default(),
        );
        let superseded = batch.len() - latest.len();
        let mut changed = Vec::with_capacity(latest.len());
        for (id, (key, record)) in latest {
            let hash = self.last_hash(key, record.hash().as_str());
            match self.last.entry(id) {
                Entry::Occupied(last) if *last.get() == hash => continue,
                Entry::Occupied(mut last) => undo.push((id, Some(last.insert(hash)))),
                Entry::Vacant(last) => {
                    last.insert(hash);
                    undo.push((id, None));
                }
            }
            changed.push((key, record));
        }
        (changed, superseded)
    }

    /// Takes back the changes logged in `undo` after its first `keep` entries, newest first.
    pub(super) fn undo(&mut self, undo: &mut Undo, keep: usize) {
        for (id, before) in undo.drain(keep..).rev() {
            match before {
                Some(hash) => self.last.insert(id, hash),
                None => self.last.remove(&id),
            };
        }
    }

    /// The changes so far are committed, up to row `seq`.
    pub(super) fn committed(&mut self, seq: i64) {
        self.seq = self.seq.max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_a_hash_of_the_same_text_are_different_identities() {
        let known = Known::new();
        let key = known.sync("s").identity(Some("x"), "h");
        assert_ne!(key, known.sync("s").identity(None, "x"));
        assert_ne!(key, known.sync("t").identity(Some("x"), "h"));
        // The hash takes no part in a key identity, only in its last hash.
        assert_eq!(key, known.sync("s").identity(Some("x"), "other"));
        assert_ne!(
            known.last_hash(Some("x"), "h"),
            known.last_hash(Some("x"), "other")
        );
    }

    #[test]
    fn undo_takes_back_exactly_the_changes_after_the_mark() {
        use crate::testing::{batch, fresh_sync_id};

        let mut known = Known::new();
        let sync = fresh_sync_id();
        let identity = Identity::key_field("id");
        let mut undo = Undo::new();
        let first = batch(&sync, &[("a", r#"{"id":1}"#)]);
        assert_eq!(known.change(&identity, &first, &mut undo).0.len(), 1);
        let mark = undo.len();
        let second = batch(&sync, &[("b", r#"{"id":1}"#), ("c", r#"{"id":2}"#)]);
        assert_eq!(known.change(&identity, &second, &mut undo).0.len(), 2);
        known.undo(&mut undo, mark);
        // Back to after `first`: `a` is id 1's last hash again, id 2 is unknown.
        assert!(known.change(&identity, &first, &mut undo).0.is_empty());
        assert_eq!(known.change(&identity, &second, &mut undo).0.len(), 2);
        known.undo(&mut undo, 0);
        assert_eq!(known.change(&identity, &first, &mut undo).0.len(), 1);
    }
}

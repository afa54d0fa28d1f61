//! Record locks shared by every ingest path (HL7 v2 messages, record feeds): an ingest that will
//! change a stored record holds that record's lock from before it reads the record until its
//! transaction has committed, so ingests naming one record apply one after the other in the order
//! they took the lock, instead of merging onto the same version, failing their `If-Match` and
//! trying again (which, under contention, costs every loser a full merge and commit per attempt).
//!
//! Keys are `Type/id`. Locks of one ingest are taken in one call, sorted, so two ingests never
//! wait for each other in a cycle. Most ingests re-state records many others state too (the
//! sending facility's Organization, a ward's Location, the payer) exactly as the ingest before
//! did: they will find them unchanged and write nothing, so they hold them shared and go on
//! together ([`RecordLocks::foresee`]). `If-Match` stays the guard of correctness: a shared
//! holder that does find a change, or a REST write in between, still makes the loser retry.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// How an ingest holds a record while it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// It may change the record: ingests that name it wait for each other, in order.
    Exclusive,
    /// It states the record exactly as the ingest before it did, so it will most likely find it
    /// unchanged and write nothing: such ingests go on together.
    Shared,
}

/// An ingest's hold on one record, released when dropped.
pub enum Guard {
    Shared { _held: OwnedRwLockReadGuard<()> },
    Exclusive { _held: OwnedRwLockWriteGuard<()> },
}

/// Locks nobody holds are forgotten when the map grows past this, so it stays the size of what
/// is in flight.
const HELD_LIMIT: usize = 4096;

/// Entries kept in the foreseen map before it is started afresh (it is only a hint).
const FORESEEN_LIMIT: usize = 65_536;

/// The locks of the records ingests are changing.
#[derive(Default)]
pub struct RecordLocks {
    held: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    /// By key: a hash of what the last ingest to claim the record stated of it.
    foreseen: Mutex<HashMap<String, u64>>,
}

impl RecordLocks {
    /// How to hold `key` for an ingest that states `content` of it: shared when the ingest before
    /// stated exactly the same, else exclusive. Call in the order the ingests apply in.
    pub fn foresee(&self, key: &str, content: u64) -> Access {
        let mut foreseen = self.foreseen.lock().unwrap_or_else(|e| e.into_inner());
        if foreseen.len() > FORESEEN_LIMIT {
            foreseen.clear();
        }
        if foreseen.insert(key.to_string(), content) == Some(content) {
            Access::Shared
        } else {
            Access::Exclusive
        }
    }

    /// Forgets what was foreseen of `key` (an ingest changes it in a way no hash describes: a
    /// conditional write, a patch), so the next one to state it holds it exclusively.
    pub fn forget(&self, key: &str) {
        self.foreseen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Takes the locks of `keys`, waiting for the ingests holding them. A key named twice is held
    /// exclusively if either asks so.
    pub async fn lock(&self, mut keys: Vec<(String, Access)>) -> Vec<Guard> {
        // Exclusive sorts first, so dedup keeps it.
        keys.sort();
        keys.dedup_by(|later, kept| later.0 == kept.0);
        let mut guards = Vec::with_capacity(keys.len());
        for (k, access) in keys {
            let lock = {
                let mut m = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if m.len() > HELD_LIMIT {
                    m.retain(|_, l| Arc::strong_count(l) > 1);
                }
                m.entry(k).or_default().clone()
            };
            guards.push(match access {
                Access::Shared => Guard::Shared {
                    _held: lock.read_owned().await,
                },
                Access::Exclusive => Guard::Exclusive {
                    _held: lock.write_owned().await,
                },
            });
        }
        guards
    }
}

/// A hash of what an ingest states of a record, for [`RecordLocks::foresee`].
pub fn content_hash(content: &impl serde::Serialize, also: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(content)
        .unwrap_or_default()
        .hash(&mut h);
    also.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_same_statement_twice_is_foreseen_shared_and_a_change_exclusive() {
        let locks = RecordLocks::default();
        assert_eq!(locks.foresee("Patient/1", 7), Access::Exclusive);
        assert_eq!(locks.foresee("Patient/1", 7), Access::Shared);
        assert_eq!(locks.foresee("Patient/1", 8), Access::Exclusive);
        locks.forget("Patient/1");
        assert_eq!(locks.foresee("Patient/1", 8), Access::Exclusive);
    }

    #[tokio::test]
    async fn an_exclusive_holder_makes_the_next_wait_and_shared_holders_go_together() {
        let locks = Arc::new(RecordLocks::default());
        let first = locks
            .lock(vec![("Patient/1".into(), Access::Exclusive)])
            .await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move {
                locks
                    .lock(vec![("Patient/1".into(), Access::Shared)])
                    .await
                    .len()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a shared hold waits for an exclusive one"
        );
        drop(first);
        assert_eq!(waiting.await.unwrap(), 1);

        let a = locks.lock(vec![("Patient/1".into(), Access::Shared)]).await;
        let b = tokio::time::timeout(
            Duration::from_secs(5),
            locks.lock(vec![("Patient/1".into(), Access::Shared)]),
        )
        .await;
        assert!(b.is_ok(), "two shared holds are held at once");
        drop(a);
    }

    #[tokio::test]
    async fn a_key_named_twice_is_held_once_and_exclusively_if_either_asks() {
        let locks = Arc::new(RecordLocks::default());
        let held = locks
            .lock(vec![
                ("Location/w".into(), Access::Shared),
                ("Location/w".into(), Access::Exclusive),
            ])
            .await;
        assert_eq!(held.len(), 1);
        assert!(matches!(held[0], Guard::Exclusive { .. }));
    }
}

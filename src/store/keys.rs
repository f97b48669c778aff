//! The keys a balancer keeps in the session store: each written key counts
//! until it expires there (the idle timeout after its last write) or is
//! deleted; at `sessions.store_max` new keys are not written.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::router::hash::BuildIdentity;

/// The count of keys this balancer wrote that are still in the store.
#[derive(Debug)]
pub(super) struct KeyBudget {
    max: usize,
    ttl_secs: u32,
    keys: Mutex<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    /// Fingerprint → (expiry second, the write that first counted it).
    live: HashMap<u64, (u32, u32), BuildIdentity>,
    /// (expiry second, write, fingerprint), oldest first; an entry whose
    /// write is no longer the key's is stale and skipped.
    queue: VecDeque<(u32, u32, u64)>,
    writes: u32,
}

impl Keys {
    /// Drops what expired by `now`; a key written again since goes back in
    /// line with its new expiry.
    fn expire(&mut self, now: u32) {
        while let Some(&(expiry, write, fingerprint)) = self.queue.front() {
            if expiry > now {
                return;
            }
            self.queue.pop_front();
            match self.live.get(&fingerprint) {
                Some(&(current, w)) if w == write && current > now => self.queue.push_back((current, w, fingerprint)),
                Some(&(_, w)) if w == write => {
                    self.live.remove(&fingerprint);
                }
                _ => {}
            }
        }
    }
}

impl KeyBudget {
    /// At most `max` keys, each expiring `ttl_secs` after its last write.
    pub(super) fn new(max: usize, ttl_secs: u32) -> Self {
        KeyBudget {
            max: max.max(1),
            ttl_secs,
            keys: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `fingerprint` may be written at `now`: it is counted already,
    /// or there is room for it.
    pub(super) fn admits(&self, fingerprint: u64, now: u32) -> bool {
        let mut keys = self.lock();
        if keys.live.contains_key(&fingerprint) {
            return true;
        }
        keys.expire(now);
        keys.live.len() < self.max
    }

    /// Counts a write of `fingerprint` at `now` (made within the budget, or
    /// a move, which is written whatever the count).
    pub(super) fn wrote(&self, fingerprint: u64, now: u32) {
        let expiry = now.saturating_add(self.ttl_secs);
        let mut keys = self.lock();
        if let Some(slot) = keys.live.get_mut(&fingerprint) {
            slot.0 = expiry;
            return;
        }
        keys.writes = keys.writes.wrapping_add(1);
        let write = keys.writes;
        keys.live.insert(fingerprint, (expiry, write));
        keys.queue.push_back((expiry, write, fingerprint));
    }

    /// Stops counting `fingerprint`: deleted, or another balancer's value is there.
    pub(super) fn forget(&self, fingerprint: u64) {
        self.lock().live.remove(&fingerprint);
    }

    /// Keys counted at `now`.
    pub(super) fn len(&self, now: u32) -> usize {
        let mut keys = self.lock();
        keys.expire(now);
        keys.live.len()
    }

    /// The cap.
    pub(super) fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_count_until_they_expire_and_the_cap_holds() {
        let b = KeyBudget::new(2, 10);
        assert!(b.admits(1, 0));
        b.wrote(1, 0);
        b.wrote(2, 5);
        assert_eq!(b.len(5), 2);
        assert!(b.admits(1, 6), "a counted key may be written again");
        assert!(!b.admits(3, 6), "full");
        // Key 1 written again at 8: it now expires at 18, key 2 at 15.
        b.wrote(1, 8);
        assert_eq!(b.len(12), 2);
        assert_eq!(b.len(15), 1);
        assert!(b.admits(3, 15));
        assert_eq!(b.len(18), 0);
        // A forgotten key leaves room at once; its stale entry is skipped.
        b.wrote(4, 20);
        b.wrote(5, 20);
        b.forget(4);
        assert_eq!(b.len(21), 1);
        b.wrote(4, 22);
        assert_eq!(b.len(30), 1, "the stale entry of 4 did not remove the new one");
        assert_eq!(b.len(32), 0);
    }
}

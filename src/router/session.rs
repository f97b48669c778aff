//! The session table: affinity key → backend, with idle expiry and a size cap.
//!
//! Keys are stored as 64-bit keyed fingerprints with a short label for
//! display, in shards of (hash map → slab slot) with an intrusive LRU list,
//! so a lookup, an insert, a touch and an eviction are O(1) and an expiry
//! sweep costs only what it expires. About 80 bytes a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::BackendId;
use super::hash::BuildIdentity;

const NIL: u32 = u32::MAX;

/// Bytes of the key kept for display.
pub const LABEL_LEN: usize = 15;

/// The first bytes of an affinity key, for display ("key (shortened)").
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyLabel {
    len: u8,
    bytes: [u8; LABEL_LEN],
}

impl KeyLabel {
    /// The first [`LABEL_LEN`] bytes of `key`, cut at a character boundary.
    pub fn new(key: &str) -> Self {
        let mut end = key.len().min(LABEL_LEN);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; LABEL_LEN];
        bytes[..end].copy_from_slice(&key.as_bytes()[..end]);
        KeyLabel { len: end as u8, bytes }
    }

    /// The 15 leading hex digits of `id`: a balancer-cookie session id, or
    /// the fingerprint of a session learned from the shared store (which
    /// never holds the key itself).
    pub fn hex(id: u64) -> Self {
        let mut bytes = [0u8; LABEL_LEN];
        let hex = b"0123456789abcdef";
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = hex[((id >> (60 - 4 * i)) & 0xf) as usize];
        }
        KeyLabel {
            len: LABEL_LEN as u8,
            bytes,
        }
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for KeyLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionInfo {
    /// The key's fingerprint (its identity in the table).
    pub fingerprint: u64,
    /// The key, shortened.
    pub label: KeyLabel,
    /// The key's position on the ring.
    pub position: u32,
    /// Where it is routed.
    pub backend: BackendId,
    /// Seconds (router time) when it was created.
    pub created_secs: u32,
    /// Seconds (router time) of its last request.
    pub last_seen_secs: u32,
    /// Requests routed through it.
    pub requests: u32,
    /// Times it was moved because its backend left.
    pub reassignments: u16,
}

/// One slab slot. Free slots are chained through `next`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    fingerprint: u64,
    position: u32,
    backend: BackendId,
    /// The backend it was moved away from, until a request has seen the move.
    moved_from: BackendId,
    created: u32,
    last_seen: u32,
    requests: u32,
    reassignments: u16,
    label: KeyLabel,
    /// Towards the most recently used.
    prev: u32,
    /// Towards the least recently used.
    next: u32,
}

impl Entry {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            fingerprint: self.fingerprint,
            label: self.label,
            position: self.position,
            backend: self.backend,
            created_secs: self.created,
            last_seen_secs: self.last_seen,
            requests: self.requests,
            reassignments: self.reassignments,
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup {
    /// A live session, touched: `moved_from` is set when it was reassigned
    /// since the last request saw it.
    Live {
        /// The session's backend.
        backend: BackendId,
        /// The backend it was moved from, reported once.
        moved_from: Option<BackendId>,
        /// Its last request before this one, in router seconds.
        last_seen: u32,
    },
    /// It had been idle too long; it is gone now.
    Expired(SessionInfo),
    /// No such session.
    Missing,
}

/// One shard: a map from fingerprint to slot, the slab and the LRU list.
#[derive(Debug, Default)]
pub struct Shard {
    map: HashMap<u64, u32, BuildIdentity>,
    slots: Vec<Entry>,
    free: u32,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to expire or be evicted.
    tail: u32,
}

impl Shard {
    fn new() -> Self {
        Shard {
            free: NIL,
            head: NIL,
            tail: NIL,
            ..Default::default()
        }
    }

    /// Sessions in this shard.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the shard holds no session.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn unlink(&mut self, i: u32) {
        let Entry { prev, next, .. } = self.slots[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn remove_slot(&mut self, i: u32) -> SessionInfo {
        self.unlink(i);
        let e = self.slots[i as usize];
        self.map.remove(&e.fingerprint);
        self.slots[i as usize].next = self.free;
        self.free = i;
        e.info()
    }

    /// Finds and touches a session; an idle one past `idle_secs` is removed.
    pub fn lookup(&mut self, fingerprint: u64, now: u32, idle_secs: u32) -> Lookup {
        let Some(&i) = self.map.get(&fingerprint) else {
            return Lookup::Missing;
        };
        let e = &mut self.slots[i as usize];
        if now.saturating_sub(e.last_seen) >= idle_secs {
            return Lookup::Expired(self.remove_slot(i));
        }
        e.requests = e.requests.saturating_add(1);
        let backend = e.backend;
        let last_seen = e.last_seen;
        let moved_from = (e.moved_from.0 != NIL).then_some(e.moved_from);
        e.moved_from = BackendId(NIL);
        // The list is ordered by last-seen second: a session already seen
        // this second is in place, and skipping the relink spares three
        // cache misses on a hot session.
        if now > e.last_seen {
            e.last_seen = now;
            self.unlink(i);
            self.push_front(i);
        }
        Lookup::Live {
            backend,
            moved_from,
            last_seen,
        }
    }

    /// Inserts a new session (the caller checked it is missing). When `full`
    /// (the table is at its cap), this shard's least recently used session
    /// is evicted first and returned.
    pub fn insert(
        &mut self,
        fingerprint: u64,
        position: u32,
        backend: BackendId,
        label: KeyLabel,
        now: u32,
        full: bool,
    ) -> Option<SessionInfo> {
        let evicted = if full && self.tail != NIL {
            Some(self.remove_slot(self.tail))
        } else {
            None
        };
        let entry = Entry {
            fingerprint,
            position,
            backend,
            moved_from: BackendId(NIL),
            created: now,
            last_seen: now,
            requests: 1,
            reassignments: 0,
            label,
            prev: NIL,
            next: NIL,
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].next;
            self.slots[i as usize] = entry;
            i
        } else {
            self.slots.push(entry);
            (self.slots.len() - 1) as u32
        };
        self.map.insert(fingerprint, i);
        self.push_front(i);
        evicted
    }

    /// Moves a session to `to` and counts a reassignment; `None` when there
    /// is no such session or it is on `to` already. `announce` keeps the move
    /// to be reported by the next lookup.
    pub fn reassign(&mut self, fingerprint: u64, to: BackendId, announce: bool) -> Option<SessionInfo> {
        let &i = self.map.get(&fingerprint)?;
        let e = &mut self.slots[i as usize];
        if e.backend == to {
            return None;
        }
        let before = e.info();
        if announce && e.moved_from.0 == NIL {
            e.moved_from = e.backend;
        }
        e.backend = to;
        e.reassignments = e.reassignments.saturating_add(1);
        Some(before)
    }

    /// Whether the session is here (without touching it).
    pub fn contains(&self, fingerprint: u64) -> bool {
        self.map.contains_key(&fingerprint)
    }

    /// Removes a session.
    pub fn remove(&mut self, fingerprint: u64) -> Option<SessionInfo> {
        let &i = self.map.get(&fingerprint)?;
        Some(self.remove_slot(i))
    }

    /// Removes sessions idle for `idle_secs` or more, least recent first.
    pub fn expire(&mut self, now: u32, idle_secs: u32, mut removed: impl FnMut(SessionInfo)) {
        while self.tail != NIL && now.saturating_sub(self.slots[self.tail as usize].last_seen) >= idle_secs {
            removed(self.remove_slot(self.tail));
        }
    }

    /// Every session, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        let mut i = self.head;
        std::iter::from_fn(move || {
            if i == NIL {
                return None;
            }
            let e = &self.slots[i as usize];
            i = e.next;
            Some(e.info())
        })
    }
}

/// The sharded session table.
#[derive(Debug)]
pub struct SessionTable {
    shards: Box<[Mutex<Shard>]>,
    /// `64 - log2(shards)`: the shard is the fingerprint's top bits.
    shift: u32,
    idle_secs: u32,
    len: AtomicU64,
    max: usize,
}

impl SessionTable {
    /// A table holding at most `max_sessions`, expiring sessions idle for
    /// `idle_secs`. At the cap, an insert evicts the least recently used
    /// session of its shard: small tables have one shard (exact LRU), large
    /// ones 64 (LRU within a shard, so locks are rarely contended).
    pub fn new(max_sessions: usize, idle_secs: u32) -> Self {
        let max = max_sessions.max(1);
        let shard_count = (max / 4096).clamp(1, 64).next_power_of_two().min(64);
        SessionTable {
            shards: (0..shard_count).map(|_| Mutex::new(Shard::new())).collect(),
            shift: 64 - shard_count.trailing_zeros(),
            idle_secs: idle_secs.max(1),
            len: AtomicU64::new(0),
            max,
        }
    }

    /// The idle timeout in seconds.
    pub fn idle_secs(&self) -> u32 {
        self.idle_secs
    }

    /// True when an insert must evict first.
    pub fn is_full(&self) -> bool {
        self.len() >= self.max as u64
    }

    /// Live sessions.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Locks the shard that holds `fingerprint`. The guard is never held
    /// across an await: the router is synchronous.
    pub fn shard_for(&self, fingerprint: u64) -> MutexGuard<'_, Shard> {
        let i = if self.shift >= 64 {
            0
        } else {
            (fingerprint >> self.shift) as usize
        };
        lock(&self.shards[i])
    }

    /// Locks shard `i`.
    pub fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[i])
    }

    pub(super) fn add_len(&self, delta: i64) {
        if delta >= 0 {
            self.len.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.len.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Up to `limit` sessions that pass `filter`, most recently used first within each shard.
    pub fn list(&self, limit: usize, mut filter: impl FnMut(&SessionInfo) -> bool) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            let shard = self.shard(i);
            for s in shard.iter() {
                if out.len() >= limit {
                    return out;
                }
                if filter(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard cannot leave it half-linked (every
    // mutation finishes before returning), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_cuts_at_char_boundary() {
        assert_eq!(KeyLabel::new("short").as_str(), "short");
        assert_eq!(KeyLabel::new("0123456789abcdefXYZ").as_str(), "0123456789abcde");
        assert_eq!(KeyLabel::new("ééééééééé").as_str(), "ééééééé");
        assert_eq!(KeyLabel::hex(0x0123_4567_89ab_cdef).as_str(), "0123456789abcde");
    }

    #[test]
    fn lru_order_expiry_and_eviction() {
        let mut s = Shard::new();
        let b = BackendId(0);
        for fp in 1..=3u64 {
            assert!(s.insert(fp, 0, b, KeyLabel::new("k"), fp as u32, false).is_none());
        }
        // Touch 1: order is now 1, 3, 2 (most recent first).
        assert!(matches!(s.lookup(1, 10, 100), Lookup::Live { .. }));
        let order: Vec<u64> = s.iter().map(|e| e.fingerprint).collect();
        assert_eq!(order, vec![1, 3, 2]);
        // Full: inserting 4 evicts 2, the least recently used.
        let evicted = s.insert(4, 0, b, KeyLabel::new("k"), 11, true).unwrap();
        assert_eq!(evicted.fingerprint, 2);
        // At t=103, 3 (last seen 3) expires; 1 (10) and 4 (11) stay.
        let mut gone = vec![];
        s.expire(103, 100, |e| gone.push(e.fingerprint));
        assert_eq!(gone, vec![3]);
        assert_eq!(s.len(), 2);
        // A lookup of an idle session expires it.
        assert!(matches!(s.lookup(1, 200, 100), Lookup::Expired(_)));
        assert_eq!(s.lookup(1, 200, 100), Lookup::Missing);
        // Freed slots are reused.
        s.insert(5, 0, b, KeyLabel::new("k"), 200, false);
        assert_eq!(s.slots.len(), 3);
    }

    #[test]
    fn reassignment_is_announced_once() {
        let mut s = Shard::new();
        s.insert(7, 0, BackendId(1), KeyLabel::new("k"), 0, false);
        s.reassign(7, BackendId(2), true);
        assert_eq!(
            s.lookup(7, 1, 100),
            Lookup::Live {
                backend: BackendId(2),
                moved_from: Some(BackendId(1)),
                last_seen: 0
            }
        );
        assert_eq!(
            s.lookup(7, 2, 100),
            Lookup::Live {
                backend: BackendId(2),
                moved_from: None,
                last_seen: 1
            }
        );
    }

    #[test]
    fn entry_stays_small() {
        assert!(std::mem::size_of::<Entry>() <= 64, "{}", std::mem::size_of::<Entry>());
    }
}

//! The session tables: affinity key → backend, with idle expiry and a size
//! cap, one table per key domain (balancer cookie, application session,
//! client address).
//!
//! Keys are stored as 64-bit keyed fingerprints — never the key itself, which
//! may be a credential — in shards of (hash map → slab slot) with an
//! intrusive LRU list, so a lookup, an insert, a touch and an eviction are
//! O(1) and an expiry sweep costs only what it expires. About 64 bytes a
//! session. Every change that adds, ends or moves a session goes through the
//! table's bookkeeping methods, which keep its length, the backends' session
//! counters, the router's statistics, the events and the store mirror in step.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::event::{Event, SessionEnd};
use super::hash::{BuildIdentity, KeyDomain};
use super::ledger::Ledger;
use super::topology::Topology;
use super::{BackendId, Stored};

const NIL: u32 = u32::MAX;

/// How a session is named outside the router — in the API, the events, the
/// dashboard and the logs. Never the key: a short form of its keyed
/// fingerprint (the one the session store uses), or the client address for
/// sessions keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SessionName {
    /// The keyed fingerprint.
    pub fingerprint: u64,
    /// The client address, for `source-ip` sessions.
    pub address: Option<IpAddr>,
}

impl SessionName {
    /// The fingerprint in full, as the session store writes it.
    pub fn fingerprint_hex(&self) -> String {
        format!("{:016x}", self.fingerprint)
    }
}

impl fmt::Display for SessionName {
    /// `#3fa2c1e9` (the fingerprint's first 8 hex digits), or the address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(ip) => write!(f, "{ip}"),
            None => write!(f, "#{:08x}", self.fingerprint >> 32),
        }
    }
}

/// A session as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionInfo {
    /// The key's fingerprint (its identity in the table).
    pub fingerprint: u64,
    /// The client address, for sessions keyed by it.
    pub address: Option<IpAddr>,
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
    /// The session store's version of it (0: not known there yet).
    pub version: u32,
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
    /// The session store's version of it (0: not known there yet).
    version: u32,
    address: Option<IpAddr>,
    /// Towards the most recently used.
    prev: u32,
    /// Towards the least recently used.
    next: u32,
}

impl SessionInfo {
    /// How it is shown.
    pub fn name(&self) -> SessionName {
        SessionName {
            fingerprint: self.fingerprint,
            address: self.address,
        }
    }
}

impl Entry {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            fingerprint: self.fingerprint,
            address: self.address,
            position: self.position,
            backend: self.backend,
            created_secs: self.created,
            last_seen_secs: self.last_seen,
            requests: self.requests,
            reassignments: self.reassignments,
            version: self.version,
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
    pub fn insert(&mut self, new: &NewSession, full: bool) -> Option<SessionInfo> {
        let NewSession {
            fingerprint,
            position,
            backend,
            address,
            now,
            version,
            ..
        } = *new;
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
            version,
            address,
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

    /// Records the session store's version of a session.
    pub fn set_version(&mut self, fingerprint: u64, version: u32) {
        if let Some(&i) = self.map.get(&fingerprint) {
            self.slots[i as usize].version = version;
        }
    }

    /// The session, without touching it.
    pub fn peek(&self, fingerprint: u64) -> Option<SessionInfo> {
        self.map.get(&fingerprint).map(|&i| self.slots[i as usize].info())
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

/// A shard's lock on cache lines of its own: two threads working on
/// neighbouring shards do not take each other's line.
#[derive(Debug)]
#[repr(align(128))]
struct ShardLock(Mutex<Shard>);

/// One sharded session table: the sessions of one key domain.
#[derive(Debug)]
pub struct SessionTable {
    shards: Box<[ShardLock]>,
    /// `64 - log2(shards)`: the shard is the fingerprint's top bits.
    shift: u32,
    idle_secs: u32,
    len: AtomicU64,
    max: usize,
    domain: KeyDomain,
    ledger: Arc<Ledger>,
}

/// A session to add to a table.
#[derive(Debug, Clone, Copy)]
pub struct NewSession {
    /// Its fingerprint (checked missing by the caller).
    pub fingerprint: u64,
    /// The key's ring position.
    pub position: u32,
    /// Its backend.
    pub backend: BackendId,
    /// The client address, for sessions keyed by it.
    pub address: Option<IpAddr>,
    /// Router seconds now.
    pub now: u32,
    /// Whether the store mirror is told (false when the store already has
    /// it, or needs nothing).
    pub tell_store: bool,
    /// The session store's version of it (0: not known there yet).
    pub version: u32,
}

/// Where a session added to a table comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Placed now: counted as created.
    New,
    /// A backend's response set it: counted as created.
    Learned,
    /// Its backend left (the one given) while the table did not hold it: a
    /// balancer cookie named a backend that is gone. Counted as a move.
    Moved(BackendId),
    /// A valid balancer cookie routed it and the table had lost it.
    Adopted,
    /// Learned from the session store: counted as synced, not told back.
    Synced,
}

/// How a move is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Moved here: counted as a reassignment and told to the store.
    Local,
    /// Moved where the application put it: counted and told like `Local`.
    Learned,
    /// Learned from another balancer: shown, not counted or told again.
    Followed,
}

impl SessionTable {
    /// A table of `domain` holding at most `max_sessions`, expiring sessions
    /// idle for `idle_secs`. At the cap, an insert evicts the least recently
    /// used session of its shard: small tables have one shard (exact LRU),
    /// large ones 64 (LRU within a shard, so locks are rarely contended).
    pub(super) fn new(domain: KeyDomain, max_sessions: usize, idle_secs: u32, ledger: Arc<Ledger>) -> Self {
        let max = max_sessions.max(1);
        let shard_count = (max / 4096).clamp(1, 64).next_power_of_two().min(64);
        SessionTable {
            shards: (0..shard_count).map(|_| ShardLock(Mutex::new(Shard::new()))).collect(),
            shift: 64 - shard_count.trailing_zeros(),
            idle_secs: idle_secs.max(1),
            len: AtomicU64::new(0),
            max,
            domain,
            ledger,
        }
    }

    /// The key domain of its sessions.
    pub fn domain(&self) -> KeyDomain {
        self.domain
    }

    /// The idle timeout in seconds.
    pub fn idle_secs(&self) -> u32 {
        self.idle_secs
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
        lock(&self.shards[i].0)
    }

    /// Locks shard `i`.
    pub fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[i].0)
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

    /// The live session of `fingerprint`, without touching it.
    pub fn get(&self, fingerprint: u64) -> Option<SessionInfo> {
        self.shard_for(fingerprint).peek(fingerprint)
    }

    fn is_active(&self) -> bool {
        self.ledger.is_active(self.domain)
    }

    /// The store mirror, for the active table only: the tables kept aside
    /// route nothing another balancer would ask about.
    fn mirror(&self) -> Option<&Arc<dyn super::SessionMirror>> {
        self.ledger.mirror().filter(|_| self.is_active())
    }

    /// Adds a session to `shard` (its shard, locked by the caller, who
    /// checked that the session is missing), evicting the least recently used
    /// one first when the table is full; then records it everywhere, as
    /// `origin` says.
    pub fn create(&self, shard: &mut Shard, topo: &Topology, new: NewSession, origin: Origin) {
        // The place is taken before the check, so that two threads creating
        // sessions at once cannot both find the last free one.
        let full = self.len.fetch_add(1, Ordering::Relaxed) >= self.max as u64;
        if let Some(evicted) = shard.insert(&new, full) {
            self.record_end(topo, &evicted, SessionEnd::Evicted, false);
        }
        topo.backend(new.backend).counters.sessions[self.domain.index()].fetch_add(1, Ordering::Relaxed);
        if new.tell_store
            && let Some(mirror) = self.mirror()
        {
            let stored = |why| mirror.stored(self.domain, new.fingerprint, new.position, new.backend, why);
            match origin {
                Origin::New => stored(Stored::Placed),
                Origin::Adopted => stored(Stored::Adopted),
                Origin::Learned => stored(Stored::Learned),
                Origin::Moved(from) => {
                    mirror.moved(self.domain, new.fingerprint, new.position, Some(from), new.backend)
                }
                Origin::Synced => {}
            }
        }
        let stats = &self.ledger.stats;
        if let Origin::Synced = origin {
            stats.synced.incr();
        }
        if !self.is_active() {
            return;
        }
        let session = SessionName {
            fingerprint: new.fingerprint,
            address: new.address,
        };
        match origin {
            Origin::New | Origin::Learned => {
                stats.created.incr();
                self.ledger.events.emit(Event::SessionCreated {
                    session,
                    backend: new.backend,
                });
            }
            Origin::Moved(from) => {
                stats.reassigned.incr();
                self.ledger.events.emit(Event::SessionReassigned {
                    session,
                    from,
                    to: new.backend,
                });
            }
            Origin::Adopted | Origin::Synced => {}
        }
    }

    /// Records a session that left its shard (already removed by the caller).
    /// `announce`: tell the store mirror it ended (a logout).
    pub fn record_end(&self, topo: &Topology, info: &SessionInfo, reason: SessionEnd, announce: bool) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        let counter = &topo.backend(info.backend).counters.sessions[self.domain.index()];
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if announce && let Some(mirror) = self.mirror() {
            mirror.ended(self.domain, info.fingerprint);
        }
        if self.is_active() {
            let stats = &self.ledger.stats;
            match reason {
                SessionEnd::Expired => &stats.expired,
                SessionEnd::Evicted => &stats.evicted,
                SessionEnd::Ended => &stats.ended,
            }
            .incr();
            self.ledger.events.emit(Event::SessionEnded {
                session: info.name(),
                backend: info.backend,
                reason,
            });
        }
    }

    /// Records a session moved from `before.backend` to `to` (already
    /// reassigned in its shard by the caller).
    pub fn record_move(&self, topo: &Topology, before: &SessionInfo, to: BackendId, kind: MoveKind) {
        let from = &topo.backend(before.backend).counters.sessions[self.domain.index()];
        let _ = from.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        topo.backend(to).counters.sessions[self.domain.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(mirror) = self.mirror() {
            match kind {
                MoveKind::Local => mirror.moved(
                    self.domain,
                    before.fingerprint,
                    before.position,
                    Some(before.backend),
                    to,
                ),
                MoveKind::Learned => mirror.moved(self.domain, before.fingerprint, before.position, None, to),
                MoveKind::Followed => {}
            }
        }
        if self.is_active() {
            if kind != MoveKind::Followed {
                self.ledger.stats.reassigned.incr();
            }
            self.ledger.events.emit(Event::SessionReassigned {
                session: before.name(),
                from: before.backend,
                to,
            });
        }
    }

    /// Ends the session of `fingerprint` on purpose; returns whether it was here.
    /// `announce`: tell the store mirror (false when another balancer ended it).
    pub fn end(&self, topo: &Topology, fingerprint: u64, announce: bool) -> bool {
        let removed = self.shard_for(fingerprint).remove(fingerprint);
        if let Some(info) = &removed {
            self.record_end(topo, info, SessionEnd::Ended, announce);
        } else if announce && let Some(mirror) = self.mirror() {
            mirror.ended(self.domain, fingerprint);
        }
        removed.is_some()
    }

    /// Expires sessions idle past the timeout at `now` (router seconds);
    /// returns how many.
    pub fn sweep(&self, topo: &Topology, now: u32) -> u64 {
        let mut expired = Vec::new();
        for i in 0..self.shard_count() {
            self.shard(i).expire(now, self.idle_secs, |info| expired.push(info));
        }
        for info in &expired {
            self.record_end(topo, info, SessionEnd::Expired, false);
        }
        expired.len() as u64
    }

    /// Forgets every session without recording anything (a lesson restarts);
    /// returns how many there were.
    pub fn clear(&self, topo: &Topology) -> u64 {
        let mut n = 0;
        for i in 0..self.shard_count() {
            let mut shard = self.shard(i);
            for s in shard.iter() {
                let c = &topo.backend(s.backend).counters.sessions[self.domain.index()];
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            n += shard.len() as u64;
            *shard = Shard::new();
        }
        self.len.fetch_sub(n.min(self.len()), Ordering::Relaxed);
        n
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

    fn new(fingerprint: u64, backend: BackendId, now: u32) -> NewSession {
        NewSession {
            fingerprint,
            position: 0,
            backend,
            address: None,
            now,
            tell_store: false,
            version: 0,
        }
    }

    #[test]
    fn names_show_a_short_fingerprint_or_the_address() {
        let n = SessionName {
            fingerprint: 0x0123_4567_89ab_cdef,
            address: None,
        };
        assert_eq!(n.to_string(), "#01234567");
        assert_eq!(n.fingerprint_hex(), "0123456789abcdef");
        let a = SessionName {
            fingerprint: 1,
            address: Some("203.0.113.9".parse().unwrap()),
        };
        assert_eq!(a.to_string(), "203.0.113.9");
    }

    #[test]
    fn lru_order_expiry_and_eviction() {
        let mut s = Shard::new();
        let b = BackendId(0);
        for fp in 1..=3u64 {
            assert!(s.insert(&new(fp, b, fp as u32), false).is_none());
        }
        // Touch 1: order is now 1, 3, 2 (most recent first).
        assert!(matches!(s.lookup(1, 10, 100), Lookup::Live { .. }));
        let order: Vec<u64> = s.iter().map(|e| e.fingerprint).collect();
        assert_eq!(order, vec![1, 3, 2]);
        // Full: inserting 4 evicts 2, the least recently used.
        let evicted = s.insert(&new(4, b, 11), true).unwrap();
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
        s.insert(&new(5, b, 200), false);
        assert_eq!(s.slots.len(), 3);
    }

    #[test]
    fn reassignment_is_announced_once() {
        let mut s = Shard::new();
        s.insert(&new(7, BackendId(1), 0), false);
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

//! What other balancers teach through the session store: sessions this one
//! missed, moves and ends they made. Nothing learned here is told back.

use std::sync::atomic::Ordering;

use super::hash::KeyDomain;
use super::session::{MoveKind, NewSession, Origin};
use super::{BackendId, Router, Timestamp};

/// What taking in the session store's answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The session was inserted, or moved to the store's backend.
    Changed,
    /// It was there already, on that backend.
    Unchanged,
    /// The store's backend is unknown here or keeps no sessions: nothing
    /// changed.
    Refused,
}

impl Router {
    /// Takes in what the session store knows of a session: inserts it in
    /// `domain`'s table, or moves it (reported to its next request) when it
    /// lives elsewhere now.
    pub fn adopt(&self, domain: KeyDomain, fingerprint: u64, position: u32, backend: &str, now: Timestamp) -> Adoption {
        let topo = self.topology.load();
        let Some(to) = self.usable(backend) else {
            return Adoption::Refused;
        };
        let table = self.table(domain);
        let mut shard = table.shard_for(fingerprint);
        if let Some(before) = shard.reassign(fingerprint, to, true) {
            table.record_move(&topo, &before, to, MoveKind::Followed);
            self.ledger.stats.synced.fetch_add(1, Ordering::Relaxed);
            return Adoption::Changed;
        }
        if shard.contains(fingerprint) {
            return Adoption::Unchanged;
        }
        let new = NewSession {
            fingerprint,
            position,
            backend: to,
            address: None,
            now: now.secs(),
            tell_store: false,
        };
        table.create(&mut shard, &topo, new, Origin::Synced);
        Adoption::Changed
    }

    /// The backend called `name` when it is a member that keeps sessions.
    pub fn usable(&self, name: &str) -> Option<BackendId> {
        let topo = self.topology.load();
        let id = topo.find(name)?.id;
        topo.state(id).keeps_sessions().then_some(id)
    }

    /// Follows a move another balancer made: the session moves to `backend`
    /// if it is here (in whichever table holds it).
    pub fn follow(&self, fingerprint: u64, backend: &str) -> bool {
        let topo = self.topology.load();
        let Some(to) = topo.find(backend).map(|b| b.id) else {
            return false;
        };
        if !topo.state(to).keeps_sessions() {
            return false;
        }
        for table in &self.tables {
            let moved = table.shard_for(fingerprint).reassign(fingerprint, to, true);
            if let Some(before) = moved {
                table.record_move(&topo, &before, to, MoveKind::Followed);
                self.ledger.stats.synced.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Removes a session another balancer ended. Returns whether it was here.
    pub fn forget(&self, fingerprint: u64) -> bool {
        let topo = self.topology.load();
        self.tables.iter().any(|t| t.end(&topo, fingerprint, false))
    }
}

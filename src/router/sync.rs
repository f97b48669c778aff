//! What other balancers teach through the session store: sessions this one
//! missed, moves and ends they made. Nothing learned here is told back.

use std::sync::atomic::Ordering;

use super::hash::KeyDomain;
use super::session::{MoveKind, NewSession, Origin};
use super::{Router, Timestamp};

impl Router {
    /// Takes in what the session store knows of a session this balancer
    /// missed: inserts it in `domain`'s table, or moves it (reported to its
    /// next request) when it lives elsewhere now. Returns whether the table
    /// changed; a backend that is unknown here or keeps no sessions changes
    /// nothing.
    pub fn adopt(&self, domain: KeyDomain, fingerprint: u64, position: u32, backend: &str, now: Timestamp) -> bool {
        let topo = self.topology.load();
        let Some(to) = topo.find(backend).map(|b| b.id) else {
            return false;
        };
        if !topo.state(to).keeps_sessions() {
            return false;
        }
        let table = self.table(domain);
        let mut shard = table.shard_for(fingerprint);
        if let Some(before) = shard.reassign(fingerprint, to, true) {
            table.record_move(&topo, &before, to, MoveKind::Followed);
            self.ledger.stats.synced.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if shard.contains(fingerprint) {
            return false;
        }
        let new = NewSession {
            fingerprint,
            position,
            backend: to,
            address: None,
            now: now.secs(),
        };
        table.create(&mut shard, &topo, new, Origin::Synced);
        true
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

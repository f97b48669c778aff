//! What other balancers teach through the session store: where a session
//! lives now, and which sessions they ended. Nothing learned here is told
//! back. Every piece of news carries the store's version of the session,
//! and news no newer than what the table holds is ignored: a message may
//! arrive after this balancer read a later value.

use super::session::MoveKind;
use super::{BackendId, Router};

/// What taking in the session store's news did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The session moved to the store's backend, or learned its version.
    Changed,
    /// Nothing: the session is not here, or the news is not newer.
    Unchanged,
    /// The store's backend is unknown here or keeps no sessions: nothing
    /// changed.
    Refused,
}

/// Whether store version `a` is newer than `b`. Versions are milliseconds
/// of the store's clock, compared as serial numbers (RFC 1982); 0 means
/// unknown, older than any.
pub fn newer(a: u32, b: u32) -> bool {
    b == 0 || (a != 0 && (a.wrapping_sub(b) as i32) > 0)
}

impl Router {
    /// Takes in that the session store holds the session `fingerprint` of
    /// `domain`'s table on `backend` at `version`, if the table has it and
    /// the news is newer: it moves there (reported to its next request).
    pub fn adopt(&self, domain: super::KeyDomain, fingerprint: u64, backend: &str, version: u32) -> Adoption {
        let topo = self.topology.load();
        let table = self.table(domain);
        let mut shard = table.shard_for(fingerprint);
        let Some(here) = shard.peek(fingerprint) else {
            return Adoption::Unchanged;
        };
        if !newer(version, here.version) {
            return Adoption::Unchanged;
        }
        let Some(to) = self.usable(backend) else {
            return Adoption::Refused;
        };
        shard.set_version(fingerprint, version);
        if let Some(before) = shard.reassign(fingerprint, to, true) {
            table.record_move(&topo, &before, to, MoveKind::Followed);
            self.ledger.stats.synced.incr();
        }
        Adoption::Changed
    }

    /// The backend called `name` when it is a member that keeps sessions.
    pub fn usable(&self, name: &str) -> Option<BackendId> {
        let topo = self.topology.load();
        let id = topo.find(name)?.id;
        topo.state(id).keeps_sessions().then_some(id)
    }

    /// Follows a move another balancer made, in whichever table holds the
    /// session, if newer than what it holds. A move to a backend that keeps
    /// no sessions here leaves nothing true to route by: the session is
    /// removed, and its next request asks the store. Returns whether the
    /// table changed.
    pub fn follow(&self, fingerprint: u64, backend: &str, version: u32) -> bool {
        let topo = self.topology.load();
        for table in &self.tables {
            let mut shard = table.shard_for(fingerprint);
            let Some(here) = shard.peek(fingerprint) else {
                continue;
            };
            if !newer(version, here.version) {
                return false;
            }
            let Some(to) = self.usable(backend) else {
                let Some(stale) = shard.remove(fingerprint) else {
                    return false;
                };
                drop(shard);
                table.record_end(&topo, &stale, super::SessionEnd::Ended, false);
                return true;
            };
            shard.set_version(fingerprint, version);
            let Some(before) = shard.reassign(fingerprint, to, true) else {
                return false;
            };
            table.record_move(&topo, &before, to, MoveKind::Followed);
            self.ledger.stats.synced.incr();
            return true;
        }
        false
    }

    /// Removes a session another balancer ended at `version`. Returns
    /// whether it was here (and older).
    pub fn forget(&self, fingerprint: u64, version: u32) -> bool {
        let topo = self.topology.load();
        self.tables.iter().any(|t| {
            let older = t.get(fingerprint).is_some_and(|s| newer(version, s.version));
            older && t.end(&topo, fingerprint, false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::newer;

    #[test]
    fn versions_compare_as_serial_numbers() {
        assert!(newer(5, 4));
        assert!(!newer(4, 5));
        assert!(!newer(5, 5));
        assert!(newer(1, 0), "anything is newer than unknown");
        assert!(!newer(0, 7), "unknown is newer than nothing");
        assert!(newer(3, u32::MAX - 3), "across the wrap");
        assert!(!newer(u32::MAX - 3, 3));
    }
}

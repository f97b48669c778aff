//! Writing to Redis: the one script every write goes through, the changes
//! waiting to be written, and what a balancer does when Redis answers that
//! another balancer's value was there first.

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;

use super::{IO_TIMEOUT, MAX_PENDING, PENDING_SHARDS, RedisStore, StoredSession, inc, key_of};
use crate::router::{Adoption, Agreement, BackendId, KeyDomain, Outcome, Proposal, Router, Topology};

/// Sessions per pipeline when putting the local table back.
const RESYNC_BATCH: usize = 1000;

/// Writes one session: `KEYS[1]` becomes `ARGV[1]\tARGV[2]\t<version>`
/// (expiring in `ARGV[3]` seconds), or is deleted when `ARGV[1]` is empty,
/// unless it names another backend than `ARGV[4]` allows: `''` only an
/// absent key (or the same backend), `'*'` anything, else that backend (a
/// move from it). `ARGV[5]` `'0'` checks without writing. A deletion, a
/// value replacing another backend's, and one written on an absent key when
/// `ARGV[8]` is `'1'` are published on `ARGV[6]` after the prefix `ARGV[7]`.
/// The version is the store's clock in milliseconds (mod 2^32), always
/// above the one replaced. Answers the value that was there (`''` if none),
/// 1 if ours stands or 0 if theirs does, and the version that stands.
/// Lua, so that every Redis from 5 on runs it as one atomic step.
pub(super) const SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local M = 4294967296
local cur = redis.call('GET', KEYS[1])
local was, ver = false, 0
if cur then
  local b, v = string.match(cur, '^([^\t]*)\t[^\t]*\t?(%d*)')
  was = b
  ver = tonumber(v) or 0
end
local mine = ARGV[1]
if was and was ~= mine and ARGV[4] ~= '*' and was ~= ARGV[4] then
  return {cur, 0, ver}
end
local t = redis.call('TIME')
local v = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) % M
local d = (v - ver) % M
if d == 0 or d >= M / 2 then v = (ver + 1) % M end
if v == 0 then v = 1 end
local value = mine .. '\t' .. ARGV[2] .. '\t' .. v
if mine == '' then
  redis.call('DEL', KEYS[1])
  value = '\t\t' .. v
elseif ARGV[5] == '1' then
  redis.call('SET', KEYS[1], value, 'EX', ARGV[3])
end
if mine == '' or (was and was ~= mine) or (not was and ARGV[8] == '1') then
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. value)
end
return {cur or '', 1, v}
"#;

/// A change waiting to be written.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    /// Placed here, or still in use: written unless another balancer's
    /// backend is there, which is then taken.
    Stored {
        domain: KeyDomain,
        position: u32,
        backend: BackendId,
    },
    /// A backend's response put it there: written whatever was there.
    Asserted {
        domain: KeyDomain,
        position: u32,
        backend: BackendId,
    },
    /// Moved here from `from`: written unless another balancer moved it
    /// first (then its move is taken), and announced.
    Moved {
        domain: KeyDomain,
        position: u32,
        from: BackendId,
        to: BackendId,
    },
    /// Ended: deleted and announced.
    Ended,
}

impl Change {
    /// The backend it puts the session on.
    fn backend(&self) -> Option<BackendId> {
        match *self {
            Change::Stored { backend, .. } | Change::Asserted { backend, .. } | Change::Moved { to: backend, .. } => {
                Some(backend)
            }
            Change::Ended => None,
        }
    }

    /// What waits when `self` waits and `next` comes: the later change,
    /// except that a refresh never weakens a move or an assertion to the same
    /// backend, and two moves write one from where the first began.
    fn then(self, next: Change) -> Change {
        match (self, next) {
            (Change::Moved { .. } | Change::Asserted { .. }, Change::Stored { backend, .. })
                if self.backend() == Some(backend) =>
            {
                self
            }
            (
                Change::Moved { from, .. },
                Change::Moved {
                    domain, position, to, ..
                },
            ) => Change::Moved {
                domain,
                position,
                from,
                to,
            },
            _ => next,
        }
    }
}

/// Writes on their way in one pipeline, and what each script call was.
#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    /// Every change, to wait again if the write fails.
    changes: Vec<(u64, Change)>,
    /// The script calls, in order.
    calls: Vec<Call>,
}

/// One script call: whose key, which table, the backend it writes (`None`:
/// a deletion), and whether it writes (adding the key to this balancer's
/// count).
struct Call {
    fingerprint: u64,
    domain: Option<KeyDomain>,
    backend: Option<BackendId>,
    counted: bool,
}

/// The script's answer: the value that was there, whether ours stands (1),
/// and the version that stands.
type Answer = (String, i64, i64);

/// How a script call treats the value already there.
enum Expect<'a> {
    /// Only an absent key (or the same backend).
    Absent,
    /// Anything.
    Any,
    /// The backend a move starts from.
    On(&'a str),
}

impl RedisStore {
    fn shard(
        &self,
        fingerprint: u64,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Change, crate::router::hash::BuildIdentity>> {
        self.pending[(fingerprint >> 60) as usize % PENDING_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn record(&self, fingerprint: u64, change: Change) {
        let mut shard = self.shard(fingerprint);
        let total = self.pending_len.load(Ordering::Relaxed) as usize;
        match shard.get_mut(&fingerprint) {
            Some(slot) => *slot = slot.then(change),
            None if total >= MAX_PENDING => inc(&self.counters.dropped_writes),
            None => {
                shard.insert(fingerprint, change);
                self.pending_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes the change waiting for one session.
    fn take(&self, fingerprint: u64) -> Option<Change> {
        let taken = self.shard(fingerprint).remove(&fingerprint);
        if taken.is_some() {
            self.pending_len.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    }

    /// Takes every waiting change.
    fn take_pending(&self) -> Vec<(u64, Change)> {
        let mut all = Vec::new();
        for shard in self.pending.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            self.pending_len.fetch_sub(taken.len() as u64, Ordering::Relaxed);
            all.extend(taken);
        }
        all
    }

    /// Puts back changes a failed write took, unless newer ones arrived.
    fn restore(&self, changes: Vec<(u64, Change)>) {
        for (fingerprint, change) in changes {
            let mut shard = self.shard(fingerprint);
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(fingerprint) {
                slot.insert(change);
                self.pending_len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds a script call to `batch`, writing `position` on the call's
    /// backend (`None`: deleting).
    fn call(
        &self,
        batch: &mut Batch,
        topo: &Topology,
        call: Call,
        position: Option<u32>,
        expect: Expect<'_>,
        announce_new: bool,
    ) {
        let backend = call.backend.map_or("", |b| &*topo.backend(b).name);
        let expect = match expect {
            Expect::Absent => "",
            Expect::Any => "*",
            Expect::On(b) => b,
        };
        batch
            .pipe
            .cmd("EVALSHA")
            .arg(self.script.get().map_or("", String::as_str))
            .arg(1)
            .arg(key_of(call.fingerprint))
            .arg(backend)
            .arg(position.map_or(String::new(), |p| p.to_string()))
            .arg(self.ttl_secs)
            .arg(expect)
            .arg(if call.counted { "1" } else { "0" })
            .arg(super::CHANNEL)
            .arg(format!("{:016x}\t{:016x}\t", self.instance, call.fingerprint))
            .arg(if announce_new { "1" } else { "0" });
        batch.calls.push(call);
    }

    /// Adds one change to `batch`.
    fn add(&self, batch: &mut Batch, topo: &Topology, fingerprint: u64, change: Change, now: u32) {
        batch.changes.push((fingerprint, change));
        let call = |domain, backend, counted| Call {
            fingerprint,
            domain: Some(domain),
            backend: Some(backend),
            counted,
        };
        match change {
            Change::Stored {
                domain,
                position,
                backend,
            } => {
                let write = self.keys.admits(fingerprint, now);
                self.call(
                    batch,
                    topo,
                    call(domain, backend, write),
                    Some(position),
                    Expect::Absent,
                    false,
                );
            }
            Change::Asserted {
                domain,
                position,
                backend,
            } => self.call(
                batch,
                topo,
                call(domain, backend, true),
                Some(position),
                Expect::Any,
                false,
            ),
            Change::Moved {
                domain,
                position,
                from,
                to,
            } => {
                let from = &*topo.backend(from).name;
                self.call(
                    batch,
                    topo,
                    call(domain, to, true),
                    Some(position),
                    Expect::On(from),
                    true,
                );
            }
            Change::Ended => {
                self.keys.forget(fingerprint);
                let end = Call {
                    fingerprint,
                    domain: None,
                    backend: None,
                    counted: true,
                };
                self.call(batch, topo, end, None, Expect::Any, false);
            }
        }
    }

    /// Whether a change waits for the session.
    fn is_pending(&self, fingerprint: u64) -> bool {
        self.shard(fingerprint).contains_key(&fingerprint)
    }

    /// Sends `batch` and settles every answer; on failure nothing is settled.
    async fn send(
        &self,
        router: &Router,
        conn: &mut MultiplexedConnection,
        batch: &Batch,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        if batch.calls.is_empty() {
            return Ok(());
        }
        let answers = match tokio::time::timeout(timeout, batch.pipe.query_async::<Vec<Answer>>(conn)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer in {} ms", timeout.as_millis())),
        };
        let now = self.clock.now().secs();
        let topo = router.topology();
        for (call, answer) in batch.calls.iter().zip(answers) {
            self.settle(router, &topo, call, answer, now);
        }
        Ok(())
    }

    /// What a balancer does with one answer. Its own value stands: counted,
    /// and taken with its version (unless a newer change waits). Another
    /// balancer's stands: taken if newer than what the table holds — unless
    /// that backend keeps no sessions here: then this balancer's is written
    /// over it.
    fn settle(&self, router: &Router, topo: &Topology, call: &Call, answer: Answer, now: u32) {
        let (before, stands, version) = answer;
        let (Some(domain), Some(backend)) = (call.domain, call.backend) else {
            inc(&self.counters.writes);
            return;
        };
        if stands == 1 {
            if !call.counted {
                inc(&self.counters.unshared);
                return;
            }
            self.keys.wrote(call.fingerprint, now);
            inc(&self.counters.writes);
            if !self.is_pending(call.fingerprint) {
                router.adopt(domain, call.fingerprint, &topo.backend(backend).name, version as u32);
            }
            return;
        }
        inc(&self.counters.conflicts);
        self.keys.forget(call.fingerprint);
        let Some(theirs) = StoredSession::parse(&before) else {
            return;
        };
        let adopted = router.adopt(domain, call.fingerprint, &theirs.backend, theirs.version);
        if adopted == Adoption::Refused
            && let Some(local) = router.table(domain).get(call.fingerprint)
        {
            self.record(
                call.fingerprint,
                Change::Asserted {
                    domain,
                    position: local.position,
                    backend: local.backend,
                },
            );
            self.urgent.notify_one();
        }
    }

    /// Writes the waiting changes; on failure they wait again.
    pub(super) async fn flush(&self, router: &Router, conn: &mut MultiplexedConnection) -> Result<(), String> {
        self.flushing.store(true, Ordering::Release);
        let result = self.flush_pending(router, conn).await;
        self.flushing.store(false, Ordering::Release);
        self.flushed.notify_waiters();
        result
    }

    async fn flush_pending(&self, router: &Router, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let told = self.take_announcements();
        if !told.is_empty() {
            let mut pipe = redis::pipe();
            for text in &told {
                pipe.cmd("PUBLISH").arg(super::EVENTS).arg(text).ignore();
            }
            // Lost if Redis fails: they are log lines.
            match tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("telling the other balancers failed: {e}")),
                Err(_) => return Err("telling the other balancers timed out".into()),
            }
        }
        let mut changes = self.take_pending();
        if changes.is_empty() {
            return Ok(());
        }
        let topo = router.topology();
        let now = self.clock.now().secs();
        while !changes.is_empty() {
            let rest = changes.split_off(changes.len().min(RESYNC_BATCH));
            let mut batch = Batch::default();
            for (fingerprint, change) in changes {
                self.add(&mut batch, &topo, fingerprint, change, now);
            }
            if let Err(e) = self.send(router, conn, &batch, IO_TIMEOUT).await {
                self.restore(batch.changes);
                self.restore(rest);
                return Err(format!("write failed: {e}"));
            }
            changes = rest;
        }
        Ok(())
    }

    /// Writes what waited, then proposes every session of the table in force
    /// again (in `lb-cookie` mode only the moved ones): an absent key gets
    /// this balancer's backend, another balancer's backend is taken.
    pub(super) async fn resync(&self, router: &Router, conn: &mut MultiplexedConnection) -> Result<(), String> {
        self.flush(router, conn).await?;
        if let Some(domain) = router.affinity().mode().domain() {
            let topo = router.topology();
            let table = router.table(domain);
            let now = self.clock.now().secs();
            let mut batch = Batch::default();
            for i in 0..table.shard_count() {
                let sessions: Vec<_> = table.shard(i).iter().collect();
                for s in sessions {
                    // A balancer cookie routes on its own unless it moved; a
                    // session whose change waits is written with it.
                    if (domain == KeyDomain::Cookie && s.reassignments == 0) || self.is_pending(s.fingerprint) {
                        continue;
                    }
                    let change = Change::Stored {
                        domain,
                        position: s.position,
                        backend: s.backend,
                    };
                    self.add(&mut batch, &topo, s.fingerprint, change, now);
                    if batch.calls.len() == RESYNC_BATCH {
                        self.send(router, conn, &std::mem::take(&mut batch), IO_TIMEOUT).await?;
                    }
                }
            }
            if !batch.calls.is_empty() {
                self.send(router, conn, &batch, IO_TIMEOUT).await?;
            }
        }
        inc(&self.counters.resyncs);
        Ok(())
    }

    /// Writes now the change waiting for one session, for a response that
    /// created, moved or ended it: the response leaves once Redis has it (or
    /// after the store timeout, degrading the store; the change waits again).
    /// Takes another balancer's value if one was there first.
    pub async fn commit(&self, router: &Router, fingerprint: u64) {
        let Some(conn) = self.conn.load_full() else { return };
        let written = self.flushed.notified();
        tokio::pin!(written);
        written.as_mut().enable();
        let Some(change) = self.take(fingerprint) else {
            // The batch being written may hold it: wait for the batch.
            if self.flushing.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(self.timeout, written).await;
            }
            return;
        };
        inc(&self.counters.waits);
        let mut conn = MultiplexedConnection::clone(&conn);
        let mut batch = Batch::default();
        self.add(
            &mut batch,
            &router.topology(),
            fingerprint,
            change,
            self.clock.now().secs(),
        );
        if let Err(e) = self.send(router, &mut conn, &batch, self.timeout).await {
            self.restore(batch.changes);
            self.degrade(&format!("writing a session: {e}"));
        }
    }

    /// Confirms where a key the local table missed goes, in one round trip
    /// (for [`RedisStore::route_missed`]):
    /// the proposal is written if the key is absent (a balancer cookie's
    /// own backend is only checked: the cookie routes on its own), another
    /// balancer's backend is taken. One that keeps no sessions here is moved
    /// from, announced. `Unknown` while degraded or when Redis fails.
    pub(super) async fn agree(&self, router: &Router, proposal: &Proposal) -> Agreement {
        let Some(conn) = self.conn.load_full() else {
            return Agreement::Unknown;
        };
        let mut conn = MultiplexedConnection::clone(&conn);
        inc(&self.counters.lookups);
        let topo = router.topology();
        let now = self.clock.now().secs();
        let fingerprint = proposal.fingerprint;
        let mine = &*topo.backend(proposal.backend).name;
        let read_only = proposal.outcome == Outcome::Adopted;
        let mut from: Option<String> = match proposal.outcome {
            Outcome::Reassigned { from: Some(b) } => Some(topo.backend(b).name.to_string()),
            _ => None,
        };
        for _ in 0..3 {
            let mut batch = Batch::default();
            let write = from.is_some() || (!read_only && self.keys.admits(fingerprint, now));
            let call = Call {
                fingerprint,
                domain: Some(proposal.domain),
                backend: Some(proposal.backend),
                counted: write,
            };
            let expect = from.as_deref().map_or(Expect::Absent, Expect::On);
            self.call(&mut batch, &topo, call, Some(proposal.position), expect, from.is_some());
            let answer = tokio::time::timeout(self.timeout, batch.pipe.query_async::<Vec<Answer>>(&mut conn));
            let (before, stands, version) = match answer.await {
                Ok(Ok(mut a)) if a.len() == 1 => a.remove(0),
                Ok(Ok(_)) => return Agreement::Unknown,
                Ok(Err(e)) => {
                    self.degrade(&format!("lookup failed: {e}"));
                    return Agreement::Unknown;
                }
                Err(_) => {
                    self.degrade(&format!("lookup took over {} ms", self.timeout.as_millis()));
                    return Agreement::Unknown;
                }
            };
            let found = StoredSession::parse(&before);
            if stands == 1 {
                let version = if write {
                    self.keys.wrote(fingerprint, now);
                    version as u32
                } else {
                    0
                };
                match found {
                    // It was there already, on the same backend: learned.
                    Some(s) if s.backend == mine && from.is_none() => {
                        inc(&self.counters.hits);
                        return Agreement::Theirs {
                            backend: proposal.backend,
                            version: if write { version } else { s.version },
                        };
                    }
                    _ if write => inc(&self.counters.writes),
                    _ if !read_only => inc(&self.counters.unshared),
                    _ => {}
                }
                return Agreement::Ours { version };
            }
            let Some(theirs) = found else {
                return Agreement::Unknown;
            };
            inc(&self.counters.hits);
            if from.is_some() {
                inc(&self.counters.conflicts);
            }
            match router.usable(&theirs.backend) {
                Some(backend) => {
                    return Agreement::Theirs {
                        backend,
                        version: theirs.version,
                    };
                }
                None => from = Some(theirs.backend),
            }
        }
        Agreement::Unknown
    }
}

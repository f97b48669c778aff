//! Topology changes: adding, removing and reweighting backends, their state
//! changes, the vnode count — each publishes a new snapshot, moves the
//! sessions it strands and says what moved.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::backend::{self, Backend, BackendId, BackendSpec, BackendState};
use super::moves::{Moves, Sampler, SessionMove};
use super::remap::{self, ChangeKind, RemapSummary};
use super::session::MoveKind;
use super::topology::{Topology, TopologyDraft};
use super::{Event, MAX_BACKENDS, MAX_VNODES, Router, RouterError};

impl Router {
    /// Adds a backend and returns its id. It starts `up`, or in `state` when
    /// given (an added backend waits `down` for its health checks). A removed
    /// backend's id is reused once nothing refers to it, so add and remove
    /// cycles do not grow memory.
    pub fn add_backend_in(&self, spec: &BackendSpec, state: BackendState) -> Result<BackendId, RouterError> {
        backend::validate_name(&spec.name)?;
        backend::validate_weight(spec.weight)?;
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        if old.find(&spec.name).is_some() {
            return Err(RouterError::DuplicateName(spec.name.clone()));
        }
        if old.members().count() >= MAX_BACKENDS {
            return Err(RouterError::TooManyBackends);
        }
        let vnodes = old.ring().len() + (spec.weight * self.vnodes()) as usize;
        if vnodes > MAX_VNODES {
            return Err(RouterError::TooManyVnodes(vnodes));
        }
        let reusable = (0..old.backend_count()).map(|i| BackendId(i as u32)).find(|&id| {
            let b = old.backend(id);
            old.state(id) == BackendState::Removed && b.counters.all_sessions() == 0 && b.counters.active() == 0
        });
        let mut draft = TopologyDraft::from(&old);
        let id = reusable.unwrap_or(BackendId(old.backend_count() as u32));
        draft.place(
            Backend::new(id, &spec.name, spec.addr),
            spec.weight,
            self.vnodes(),
            self.config.vnode_hash,
            state,
        );
        let new = self.publish(&mut generation, draft);
        let kind = if state.takes_new_sessions() {
            ChangeKind::Joined
        } else {
            ChangeKind::Added
        };
        self.account(&old, &new, Some(id), kind);
        Ok(id)
    }

    /// Adds a backend in state `up` and returns its id.
    pub fn add_backend(&self, spec: &BackendSpec) -> Result<BackendId, RouterError> {
        self.add_backend_in(spec, BackendState::Up)
    }

    /// Takes a backend out for good: its sessions are reassigned and its
    /// virtual nodes freed. The summary is `None` when it served nothing.
    pub fn remove_backend(&self, name: &str) -> Result<Option<RemapSummary>, RouterError> {
        self.set_state(name, BackendState::Removed)
    }

    /// Changes a backend's state and returns the remap summary when sessions
    /// or new keys are affected (`None` when the state was already that).
    /// Leaving `up`/`draining` for a state that keeps no sessions reassigns
    /// the backend's sessions to the next available backend clockwise.
    pub fn set_state(&self, name: &str, state: BackendState) -> Result<Option<RemapSummary>, RouterError> {
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        let id = member(&old, name)?;
        let from = old.state(id);
        if from == state {
            return Ok(None);
        }
        let mut draft = TopologyDraft::from(&old);
        draft.set_state(id, state);
        let new = self.publish(&mut generation, draft);
        self.ledger.events.emit(Event::BackendState {
            backend: id,
            from,
            to: state,
        });
        let kind = if from == BackendState::Draining && state == BackendState::Drained {
            ChangeKind::Drained
        } else if from.keeps_sessions() && !state.keeps_sessions() {
            ChangeKind::Left
        } else if state.takes_new_sessions() {
            ChangeKind::Joined
        } else if state == BackendState::Draining {
            ChangeKind::Draining
        } else {
            // e.g. down → killed: nothing moves, nothing new arrives.
            return Ok(None);
        };
        Ok(Some(self.account(&old, &new, Some(id), kind)))
    }

    /// Changes a backend's weight (its vnodes and weighted share).
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<RemapSummary, RouterError> {
        backend::validate_weight(weight)?;
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        let id = member(&old, name)?;
        let vnodes = old.ring().len() - old.vnode_count(id) + (weight * self.vnodes()) as usize;
        if vnodes > MAX_VNODES {
            return Err(RouterError::TooManyVnodes(vnodes));
        }
        let mut draft = TopologyDraft::from(&old);
        draft.set_weight(id, weight, self.vnodes(), self.config.vnode_hash);
        let new = self.publish(&mut generation, draft);
        Ok(self.account(&old, &new, Some(id), ChangeKind::Reweighted))
    }

    /// Virtual nodes per unit of weight now.
    pub fn vnodes(&self) -> u32 {
        self.vnodes.load(Ordering::Relaxed)
    }

    /// Re-places every backend with `vnodes` virtual nodes per unit of
    /// weight (1–10,000). Sessions stay where they are; the summary says what
    /// a stateless ring would have moved.
    pub fn set_vnodes(&self, vnodes: u32) -> Result<RemapSummary, RouterError> {
        if !(1..=10_000).contains(&vnodes) {
            return Err(RouterError::BadSpec(format!("{vnodes} vnodes: use 1 to 10000")));
        }
        let mut generation = self.lock_changes();
        let old = self.topology.load_full();
        if old.members().next().is_none() {
            return Err(RouterError::NoBackend);
        }
        let total: usize = old.members().map(|b| (old.weight(b.id) * vnodes) as usize).sum();
        if total > MAX_VNODES {
            return Err(RouterError::TooManyVnodes(total));
        }
        self.vnodes.store(vnodes, Ordering::Relaxed);
        let mut draft = TopologyDraft::from(&old);
        for b in old.members() {
            draft.set_weight(b.id, old.weight(b.id), vnodes, self.config.vnode_hash);
        }
        let new = self.publish(&mut generation, draft);
        Ok(self.account(&old, &new, None, ChangeKind::Reweighted))
    }

    /// Backend `id` answered a health check: sessions redispatch moved off
    /// it earlier left for a passing failure, not for a departure, and its
    /// next `left` summary will not count them.
    pub fn forget_redispatches(&self, id: BackendId) {
        let topo = self.topology.load();
        if id.index() < topo.backend_count() {
            topo.backend(id).counters.redispatched_away.store(0, Ordering::Relaxed);
        }
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, u64> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, generation: &mut u64, draft: TopologyDraft) -> Arc<Topology> {
        *generation += 1;
        let new = Arc::new(draft.finish(*generation));
        self.topology.store(Arc::clone(&new));
        new
    }

    /// Reassigns the sessions a change strands, in every table, and counts —
    /// in the table in force — what moved, what a stateless ring and modulo
    /// would have moved, and the ideal; publishes the summary and a sample of
    /// the sessions with where each went ([`Moves`]). A backend that leaves
    /// also counts the sessions redispatch moved off it before its failure
    /// was detected.
    fn account(&self, old: &Topology, new: &Topology, changed: Option<BackendId>, kind: ChangeKind) -> RemapSummary {
        let (mut sessions, mut moved, mut ring, mut modulo) = (0u64, 0u64, 0u64, 0u64);
        let redispatched = match (changed, kind) {
            (Some(id), ChangeKind::Left | ChangeKind::Drained | ChangeKind::Joined) => {
                let early = new.backend(id).counters.redispatched_away.swap(0, Ordering::Relaxed);
                if kind == ChangeKind::Joined { 0 } else { early }
            }
            _ => 0,
        };
        let mut stranded = Vec::new();
        let mut listed = Vec::new();
        for table in &self.tables {
            let counted = self.ledger.is_active(table.domain());
            let mut sampler = Sampler::new(table.len());
            for i in 0..table.shard_count() {
                let mut shard = table.shard(i);
                for s in shard.iter() {
                    let strands = !new.state(s.backend).keeps_sessions();
                    if counted {
                        let mark = SessionMove::new(old, new, &s, s.backend);
                        sessions += 1;
                        ring += u64::from(mark.ring_moved());
                        modulo += u64::from(mark.modulo_moved());
                        if sampler.take(s.fingerprint) {
                            // A stranded session goes where the ring sends it now, if anywhere.
                            let to = if strands {
                                mark.ring.1.unwrap_or(s.backend)
                            } else {
                                s.backend
                            };
                            listed.push(SessionMove { to, ..mark });
                        }
                    }
                    if strands {
                        stranded.push(s);
                    }
                }
                for s in stranded.drain(..) {
                    let Some(to) = new.ring_owner(s.position) else {
                        continue; // nothing can take it: it waits for a backend to return
                    };
                    if shard.reassign(s.fingerprint, to, true).is_some() {
                        moved += u64::from(counted);
                        table.record_move(new, &s, to, MoveKind::Local);
                    }
                }
            }
        }
        let summary = RemapSummary {
            backend: changed.map_or_else(|| "every backend".to_owned(), |id| new.backend(id).name.to_string()),
            kind,
            sessions,
            moved: (moved + redispatched).min(sessions),
            redispatched,
            ring,
            modulo,
            ideal: remap::ideal_share(old.serving().len(), new.serving().len()),
            backends_before: old.serving().len(),
            backends_after: new.serving().len(),
        };
        let moves = Arc::new(Moves {
            summary: summary.clone(),
            generation: new.generation,
            sessions: listed,
        });
        let stats = &self.ledger.stats;
        *stats.last_remap.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
        *stats.last_moves.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&moves));
        self.ledger.events.emit(Event::Remap(summary.clone()));
        self.ledger.events.moves(moves);
        summary
    }
}

/// The id of the member (not removed) called `name`.
fn member(topo: &Topology, name: &str) -> Result<BackendId, RouterError> {
    topo.find(name)
        .map(|b| b.id)
        .ok_or_else(|| RouterError::UnknownBackend(name.to_owned()))
}

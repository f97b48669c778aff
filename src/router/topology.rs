//! The topology snapshot: every backend with its state and weight, the ring,
//! and what derives from them. Immutable; a change publishes a new one.

use std::collections::HashMap;
use std::sync::Arc;

use super::BackendId;
use super::backend::{Backend, BackendState};
use super::ring::{PlacedMember, Ring, VnodeHash, vnode_positions};

/// One consistent view of the backends, read lock-free by every request.
#[derive(Debug, Default)]
pub struct Topology {
    /// Bumped by every change, so readers can tell snapshots apart.
    pub generation: u64,
    /// Every backend id handed out; a removed backend stays as a small
    /// tombstone until its id is reused.
    backends: Vec<Arc<Backend>>,
    /// `states[id]`.
    states: Vec<BackendState>,
    /// `weights[id]`.
    weights: Vec<u32>,
    /// `positions[id]`: the backend's vnode positions, hashed once per name and weight.
    positions: Vec<Arc<[u32]>>,
    /// The ring over every backend that is not removed.
    ring: Arc<Ring>,
    /// Backends that take new sessions (`up`), in id order.
    available: Vec<BackendId>,
    /// Backends in service (`up` or `draining`), in id order.
    serving: Vec<BackendId>,
    /// Cookie tag → the newest backend with that tag.
    by_tag: HashMap<u32, BackendId>,
    /// Where new keys land now: each backend's share of the circle, walking
    /// past backends that take no new sessions.
    effective_shares: Vec<f64>,
    /// Each backend's own arcs of the circle, availability aside.
    shares: Vec<f64>,
}

impl Topology {
    /// The backend with `id`. Ids come from this router, so this never fails
    /// for an id that any snapshot handed out.
    pub fn backend(&self, id: BackendId) -> &Arc<Backend> {
        &self.backends[id.index()]
    }

    /// The state of backend `id`.
    pub fn state(&self, id: BackendId) -> BackendState {
        self.states.get(id.index()).copied().unwrap_or(BackendState::Removed)
    }

    /// The weight of backend `id`.
    pub fn weight(&self, id: BackendId) -> u32 {
        self.weights[id.index()]
    }

    /// Virtual nodes of backend `id` on the ring now (0 once removed).
    pub fn vnode_count(&self, id: BackendId) -> usize {
        self.positions.get(id.index()).map_or(0, |p| p.len())
    }

    /// Which of backend `id`'s vnodes sits at `position`: the `i` of its
    /// label `"<name>-<i>"` (a scan of its vnodes, for explanations only).
    pub fn vnode_number(&self, id: BackendId, position: u32) -> Option<usize> {
        self.positions.get(id.index())?.iter().position(|&p| p == position)
    }

    /// Number of backend ids handed out (tombstones included).
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Backends that are not removed, in id order.
    pub fn members(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends
            .iter()
            .filter(|b| self.state(b.id) != BackendState::Removed)
    }

    /// Backends that take new sessions, in id order.
    pub fn available(&self) -> &[BackendId] {
        &self.available
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// A member (not removed) by name.
    pub fn find(&self, name: &str) -> Option<&Arc<Backend>> {
        self.members().find(|b| &*b.name == name)
    }

    /// A removed backend by name (its tombstone), if its id was not reused.
    pub fn find_removed(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends
            .iter()
            .find(|b| self.state(b.id) == BackendState::Removed && &*b.name == name)
    }

    /// The backend a cookie tag names, if any was ever added.
    pub fn by_tag(&self, tag: u32) -> Option<BackendId> {
        self.by_tag.get(&tag).copied()
    }

    /// Backend `id`'s share of the circle for new keys now.
    pub fn effective_share(&self, id: BackendId) -> f64 {
        self.effective_shares.get(id.index()).copied().unwrap_or(0.0)
    }

    /// Backend `id`'s own arcs of the circle.
    pub fn share(&self, id: BackendId) -> f64 {
        self.shares.get(id.index()).copied().unwrap_or(0.0)
    }

    /// The backend that owns `position` for a new key now (the ring walk over
    /// backends that take new sessions), whatever the placement.
    pub fn ring_owner(&self, position: u32) -> Option<BackendId> {
        self.ring
            .lookup(position, |id| self.state(id).takes_new_sessions())
            .map(|v| v.owner)
    }

    /// Backends in service (`up` or `draining`), in id order.
    pub fn serving(&self) -> &[BackendId] {
        &self.serving
    }

    /// The owner of `position` under modulo hashing over the backends in
    /// service (`position % serving`): what a modulo balancer would do.
    pub fn modulo_owner(&self, position: u32) -> Option<BackendId> {
        match self.serving.len() {
            0 => None,
            n => Some(self.serving[position as usize % n]),
        }
    }
}

/// Builds the next snapshot from the last one.
#[derive(Debug, Clone)]
pub(super) struct TopologyDraft {
    pub backends: Vec<Arc<Backend>>,
    pub states: Vec<BackendState>,
    weights: Vec<u32>,
    positions: Vec<Arc<[u32]>>,
    ring: Arc<Ring>,
    ring_dirty: bool,
}

impl TopologyDraft {
    pub fn from(t: &Topology) -> Self {
        TopologyDraft {
            backends: t.backends.clone(),
            states: t.states.clone(),
            weights: t.weights.clone(),
            positions: t.positions.clone(),
            ring: Arc::clone(&t.ring),
            ring_dirty: false,
        }
    }

    /// Adds a backend in `state` at its id — a new slot, or the slot of a
    /// removed backend it replaces — hashing its vnodes.
    pub fn place(
        &mut self,
        backend: Backend,
        weight: u32,
        vnodes_per_weight: u32,
        hash: VnodeHash,
        state: BackendState,
    ) {
        let positions: Arc<[u32]> = vnode_positions(&backend.name, weight * vnodes_per_weight, hash).into();
        let i = backend.id.index();
        if i == self.backends.len() {
            self.positions.push(positions);
            self.backends.push(Arc::new(backend));
            self.states.push(state);
            self.weights.push(weight);
        } else {
            self.positions[i] = positions;
            self.backends[i] = Arc::new(backend);
            self.states[i] = state;
            self.weights[i] = weight;
        }
        self.ring_dirty = true;
    }

    /// Sets a backend's weight, hashing its vnodes again.
    pub fn set_weight(&mut self, id: BackendId, weight: u32, vnodes_per_weight: u32, hash: VnodeHash) {
        let name = &self.backends[id.index()].name;
        self.positions[id.index()] = vnode_positions(name, weight * vnodes_per_weight, hash).into();
        self.weights[id.index()] = weight;
        self.ring_dirty = true;
    }

    /// Sets a backend's state; entering `removed` frees its vnodes and
    /// rebuilds the ring.
    pub fn set_state(&mut self, id: BackendId, state: BackendState) {
        let from = std::mem::replace(&mut self.states[id.index()], state);
        if from != BackendState::Removed && state == BackendState::Removed {
            self.positions[id.index()] = Arc::from([]);
            self.ring_dirty = true;
        }
    }

    pub fn finish(self, generation: u64) -> Topology {
        let ring = if self.ring_dirty {
            let members: Vec<PlacedMember<'_>> = self
                .backends
                .iter()
                .filter(|b| self.states[b.id.index()] != BackendState::Removed)
                .map(|b| PlacedMember {
                    id: b.id,
                    name: &b.name,
                    positions: &self.positions[b.id.index()],
                })
                .collect();
            Arc::new(Ring::assemble(&members))
        } else {
            self.ring
        };
        let available: Vec<BackendId> = self
            .backends
            .iter()
            .map(|b| b.id)
            .filter(|id| self.states[id.index()].takes_new_sessions())
            .collect();
        let serving: Vec<BackendId> = self
            .backends
            .iter()
            .map(|b| b.id)
            .filter(|id| self.states[id.index()].keeps_sessions())
            .collect();
        let by_tag = self.backends.iter().map(|b| (b.tag, b.id)).collect();
        let n = self.backends.len();
        let states = &self.states;
        let effective_shares = ring.shares(n, |id| states[id.index()].takes_new_sessions());
        let shares = ring.shares(n, |_| true);
        Topology {
            generation,
            backends: self.backends,
            states: self.states,
            weights: self.weights,
            positions: self.positions,
            ring,
            available,
            serving,
            by_tag,
            effective_shares,
            shares,
        }
    }
}

//! The consistent-hash ring: an immutable, sorted array of virtual nodes with
//! a prefix index, rebuilt on every topology change and read without locks.

use std::fmt;
use std::str::FromStr;

use super::BackendId;
use super::hash::fmix32;

/// Virtual nodes per unit of weight unless configured otherwise (the seed's 150).
pub const DEFAULT_VNODES: u32 = 150;

/// How a virtual node's label `"<name>-<i>"` becomes a ring position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VnodeHash {
    /// `fmix32(crc32(label))`: positions as even as theory says (the default).
    #[default]
    Mixed,
    /// `crc32(label)` as in the source material: CRC is linear, so the labels
    /// of one backend cluster and the ring is 2–4× less even.
    Crc32,
}

impl VnodeHash {
    /// The name used on the command line and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            VnodeHash::Mixed => "mixed",
            VnodeHash::Crc32 => "crc32",
        }
    }
}

impl fmt::Display for VnodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VnodeHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mixed" => Ok(VnodeHash::Mixed),
            "crc32" => Ok(VnodeHash::Crc32),
            _ => Err(format!("unknown vnode hash {s:?}: expected mixed or crc32")),
        }
    }
}

/// A backend as the ring needs it.
#[derive(Debug, Clone, Copy)]
pub struct RingMember<'a> {
    /// Who owns the virtual nodes.
    pub id: BackendId,
    /// The label prefix.
    pub name: &'a str,
    /// Scales the number of virtual nodes.
    pub weight: u32,
}

/// A backend with its vnode positions already computed.
#[derive(Debug, Clone, Copy)]
pub struct PlacedMember<'a> {
    /// Who owns the virtual nodes.
    pub id: BackendId,
    /// For ordering ties.
    pub name: &'a str,
    /// Positions in vnode order (`"<name>-0"`, `"<name>-1"`, …).
    pub positions: &'a [u32],
}

/// The positions of `count` virtual nodes labelled `"<name>-<i>"`, in vnode
/// order. The label's CRC is extended digit by digit from the CRC of
/// `"<name>-"`: no string is formatted per vnode.
pub fn vnode_positions(name: &str, count: u32, hash: VnodeHash) -> Vec<u32> {
    let mut prefix = crc32fast::Hasher::new();
    prefix.update(name.as_bytes());
    prefix.update(b"-");
    let prefix = prefix.finalize();
    let mut digits = [0u8; 10];
    (0..count)
        .map(|i| {
            let crc = crc32_continue(prefix, format_u32(i, &mut digits));
            match hash {
                VnodeHash::Mixed => fmix32(crc),
                VnodeHash::Crc32 => crc,
            }
        })
        .collect()
}

/// One virtual node, for drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vnode {
    /// Its position on the 2^32 circle.
    pub position: u32,
    /// The backend it belongs to.
    pub owner: BackendId,
}

/// An immutable consistent-hash ring.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Vnodes as `position << 32 | owner id`, ascending by position: one
    /// 8-byte load gives both, so a lookup touches one cache line.
    points: Vec<u64>,
    /// `index[b]` is the first vnode whose position's top bits are ≥ `b`:
    /// a lookup scans a bucket of about one vnode instead of binary searching.
    index: Vec<u32>,
    /// `32 - bits of the prefix index`.
    shift: u32,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            points: Vec::new(),
            index: vec![0; 2],
            shift: 31,
        }
    }
}

fn position_of(point: u64) -> u32 {
    (point >> 32) as u32
}

fn owner_of(point: u64) -> BackendId {
    BackendId(point as u32)
}

impl Ring {
    /// Builds a ring with `vnodes_per_weight × weight` virtual nodes per member.
    ///
    /// Vnodes whose positions collide are kept, ordered by backend name and
    /// then vnode number, so the same members always give the same ring.
    pub fn build(members: &[RingMember<'_>], vnodes_per_weight: u32, hash: VnodeHash) -> Ring {
        let positions: Vec<Vec<u32>> = members
            .iter()
            .map(|m| vnode_positions(m.name, m.weight * vnodes_per_weight, hash))
            .collect();
        let placed: Vec<PlacedMember<'_>> = members
            .iter()
            .zip(&positions)
            .map(|(m, p)| PlacedMember {
                id: m.id,
                name: m.name,
                positions: p,
            })
            .collect();
        Ring::assemble(&placed)
    }

    /// Builds a ring from vnode positions already computed (the router keeps
    /// each backend's, so a topology change does not hash again).
    pub fn assemble(members: &[PlacedMember<'_>]) -> Ring {
        let mut members: Vec<&PlacedMember<'_>> = members.iter().collect();
        members.sort_unstable_by(|a, b| a.name.cmp(b.name));
        let total: usize = members.iter().map(|m| m.positions.len()).sum();
        assert!(total <= u32::MAX as usize, "ring too large");
        // In name order, then vnode order: the tie-break a stable sort keeps.
        let unsorted = members
            .iter()
            .flat_map(|m| m.positions.iter().map(|&p| (u64::from(p) << 32) | u64::from(m.id.0)));

        // One stable counting pass by the top bits builds the prefix index
        // and leaves buckets of about one vnode to finish by insertion.
        let bits = index_bits(total);
        let shift = 32 - bits;
        let bucket = |p: u64| (position_of(p) >> shift) as usize;
        let mut index = vec![0u32; (1usize << bits) + 1];
        for p in unsorted.clone() {
            index[bucket(p) + 1] += 1;
        }
        for b in 1..index.len() {
            index[b] += index[b - 1];
        }
        let mut points = vec![0u64; total];
        let mut cursor = index.clone();
        for p in unsorted {
            let slot = &mut cursor[bucket(p)];
            points[*slot as usize] = p;
            *slot += 1;
        }
        for b in 0..index.len() - 1 {
            let (lo, hi) = (index[b] as usize, index[b + 1] as usize);
            insertion_sort_by_position(&mut points[lo..hi]);
        }
        Ring { points, index, shift }
    }

    /// Number of virtual nodes.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no backend is on the ring.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Index of the first vnode clockwise from `position` (at it or after it,
    /// wrapping past 2^32 − 1 to the start), or `None` on an empty ring.
    #[inline]
    pub fn successor(&self, position: u32) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let bucket = (position >> self.shift) as usize;
        let mut i = self.index[bucket] as usize;
        let end = self.index[bucket + 1] as usize;
        while i < end && position_of(self.points[i]) < position {
            i += 1;
        }
        Some(if i == self.points.len() { 0 } else { i })
    }

    /// The first vnode clockwise from `position` whose backend passes `ok`,
    /// walking on past the ones that do not; `None` when none does.
    #[inline]
    pub fn lookup(&self, position: u32, ok: impl FnMut(BackendId) -> bool) -> Option<Vnode> {
        let start = self.successor(position)?;
        self.walk_from(start, ok)
    }

    /// Like [`Ring::lookup`], starting at vnode index `start`.
    #[inline]
    pub fn walk_from(&self, start: usize, mut ok: impl FnMut(BackendId) -> bool) -> Option<Vnode> {
        let n = self.points.len();
        let mut i = start;
        for _ in 0..n {
            let p = self.points[i];
            if ok(owner_of(p)) {
                return Some(Vnode {
                    position: position_of(p),
                    owner: owner_of(p),
                });
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        None
    }

    /// The virtual node at index `i` in clockwise order.
    pub fn vnode(&self, i: usize) -> Option<Vnode> {
        self.points.get(i).map(|&p| Vnode {
            position: position_of(p),
            owner: owner_of(p),
        })
    }

    /// All virtual nodes in clockwise order.
    pub fn vnodes(&self) -> impl ExactSizeIterator<Item = Vnode> + '_ {
        self.points.iter().map(|&p| Vnode {
            position: position_of(p),
            owner: owner_of(p),
        })
    }

    /// Each backend's share of the circle (index = backend id), counting an
    /// arc for the first vnode clockwise from it whose backend passes `ok`.
    /// With `|_| true` this is pure ownership; with availability it is where
    /// new keys really land.
    pub fn shares(&self, backends: usize, mut ok: impl FnMut(BackendId) -> bool) -> Vec<f64> {
        let mut arcs = vec![0u64; backends];
        let n = self.points.len();
        // Past the last passing vnode, arcs wrap to the first one.
        let Some(first) = self.points.iter().map(|&p| owner_of(p)).find(|&o| ok(o)) else {
            return vec![0.0; backends];
        };
        let mut owner = first;
        for i in (0..n).rev() {
            let p = self.points[i];
            if ok(owner_of(p)) {
                owner = owner_of(p);
            }
            let here = u64::from(position_of(p));
            let arc = if i == 0 {
                here + (1u64 << 32) - u64::from(position_of(self.points[n - 1]))
            } else {
                here - u64::from(position_of(self.points[i - 1]))
            };
            if let Some(slot) = arcs.get_mut(owner.index()) {
                *slot += arc;
            }
        }
        arcs.into_iter().map(|a| a as f64 / 4_294_967_296.0).collect()
    }
}

/// Stable insertion sort by position (the high 32 bits): buckets hold about
/// one vnode, so this is nearly free and keeps ties in name order.
fn insertion_sort_by_position(points: &mut [u64]) {
    for i in 1..points.len() {
        let p = points[i];
        let mut j = i;
        while j > 0 && position_of(points[j - 1]) > position_of(p) {
            points[j] = points[j - 1];
            j -= 1;
        }
        points[j] = p;
    }
}

/// Bits of the prefix index: one to two vnodes per bucket, within 1..=20.
fn index_bits(n: usize) -> u32 {
    let bits = usize::BITS - 1 - n.max(1).leading_zeros();
    bits.clamp(1, 20)
}

/// Extends a finished CRC-32 of some bytes over a few more:
/// `crc32_continue(crc32(a), b) == crc32(a ++ b)` (crc32fast resumes from a
/// finished value). For the 1–5 digit suffixes of vnode labels this beats
/// hashing each whole label.
fn crc32_continue(crc: u32, more: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(more);
    h.finalize()
}

/// Writes `n` in decimal into `buf` without allocating.
fn format_u32(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&'static str]) -> Vec<RingMember<'static>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| RingMember {
                id: BackendId(i as u32),
                name: n,
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn crc32_continue_matches_crc32fast() {
        for (a, b) in [("api-1-", "0"), ("", "123456789"), ("backend-999-", "14999"), ("x", "")] {
            let whole = format!("{a}{b}");
            assert_eq!(
                crc32_continue(crc32fast::hash(a.as_bytes()), b.as_bytes()),
                crc32fast::hash(whole.as_bytes())
            );
        }
    }

    #[test]
    fn format_u32_writes_decimal() {
        let mut buf = [0u8; 10];
        assert_eq!(format_u32(0, &mut buf), b"0");
        assert_eq!(format_u32(149, &mut buf), b"149");
        assert_eq!(format_u32(u32::MAX, &mut buf), b"4294967295");
    }

    #[test]
    fn crc32_placement_uses_the_seed_labels() {
        let ring = Ring::build(&members(&["api-1"]), 3, VnodeHash::Crc32);
        let mut expected: Vec<u32> = (0..3)
            .map(|i| crc32fast::hash(format!("api-1-{i}").as_bytes()))
            .collect();
        expected.sort_unstable();
        let got: Vec<u32> = ring.vnodes().map(|v| v.position).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn build_sorts_like_std_sort() {
        let ring = Ring::build(&members(&["a", "b", "c", "d"]), 2000, VnodeHash::Mixed);
        let got: Vec<u32> = ring.vnodes().map(|v| v.position).collect();
        let mut expected = got.clone();
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(got.len(), 8000);
    }

    #[test]
    fn successor_agrees_with_binary_search_and_wraps() {
        let ring = Ring::build(&members(&["a", "b", "c"]), 150, VnodeHash::Mixed);
        let positions: Vec<u32> = ring.vnodes().map(|v| v.position).collect();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20_000 {
            let p = rng.u32(..);
            let expected = positions.partition_point(|&x| x < p) % positions.len();
            assert_eq!(ring.successor(p), Some(expected));
        }
        assert_eq!(
            ring.successor(u32::MAX),
            Some(if positions[positions.len() - 1] == u32::MAX {
                positions.len() - 1
            } else {
                0
            })
        );
        assert_eq!(ring.successor(positions[5]), Some(5));
    }

    #[test]
    fn lookup_skips_unavailable_and_fails_when_none() {
        let ring = Ring::build(&members(&["a", "b"]), 10, VnodeHash::Mixed);
        for p in [0u32, 1 << 31, u32::MAX] {
            assert_eq!(ring.lookup(p, |id| id == BackendId(1)).unwrap().owner, BackendId(1));
        }
        assert!(ring.lookup(42, |_| false).is_none());
        assert!(Ring::default().lookup(42, |_| true).is_none());
    }

    #[test]
    fn shares_sum_to_one_and_follow_availability() {
        let ring = Ring::build(&members(&["a", "b", "c"]), 150, VnodeHash::Mixed);
        let all = ring.shares(3, |_| true);
        assert!((all.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let without_b = ring.shares(3, |id| id != BackendId(1));
        assert_eq!(without_b[1], 0.0);
        assert!((without_b.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(without_b[0] > all[0] && without_b[2] > all[2]);
        let single = Ring::build(&members(&["solo"]), 1, VnodeHash::Mixed);
        assert_eq!(single.shares(1, |_| true), vec![1.0]);
    }

    #[test]
    fn build_is_independent_of_member_order() {
        let a = Ring::build(
            &[
                RingMember {
                    id: BackendId(0),
                    name: "x",
                    weight: 2,
                },
                RingMember {
                    id: BackendId(1),
                    name: "y",
                    weight: 1,
                },
            ],
            50,
            VnodeHash::Crc32,
        );
        let b = Ring::build(
            &[
                RingMember {
                    id: BackendId(1),
                    name: "y",
                    weight: 1,
                },
                RingMember {
                    id: BackendId(0),
                    name: "x",
                    weight: 2,
                },
            ],
            50,
            VnodeHash::Crc32,
        );
        assert_eq!(a.vnodes().collect::<Vec<_>>(), b.vnodes().collect::<Vec<_>>());
        assert_eq!(a.len(), 150);
    }
}

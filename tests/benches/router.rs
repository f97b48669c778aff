//! Routing-core benchmarks: ring lookups, rebuilds, placements and the
//! session table at a million sessions. Run: `cargo bench --bench router`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ringside::router::ring::RingMember;
use ringside::router::{
    BackendId, BackendSpec, BackendState, NullSink, Placement, Ring, Router, RouterConfig, SessionKey, Timestamp,
    VnodeHash,
};

/// Counts live heap bytes, to report bytes per session.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn router(backends: usize, placement: Placement, max_sessions: usize) -> Router {
    let r = Router::new(
        RouterConfig {
            placement,
            max_sessions,
            seed: Some(1),
            ..RouterConfig::default()
        },
        Arc::new(NullSink),
    );
    r.set_affinity(ringside::router::affinity::AffinityMode::AppCookie);
    for i in 0..backends {
        let addr = SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
        r.add_backend(&BackendSpec::new(&format!("backend-{i}"), addr, 1).unwrap())
            .unwrap();
    }
    r
}

/// 16-byte keys, as a session id would be.
fn keys(n: usize) -> Vec<[u8; 16]> {
    let mut rng = fastrand::Rng::with_seed(3);
    (0..n)
        .map(|_| {
            let mut k = [0u8; 16];
            for b in &mut k {
                *b = rng.alphanumeric() as u8;
            }
            k
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let keys = keys(4096);
    let mut i = 0;
    c.bench_function("crc32 of a 16-byte key alone", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(crc32fast::hash(black_box(&keys[i])))
        })
    });
    for backends in [10usize, 1000] {
        // The textbook lookup, for comparison: binary search over sorted positions.
        let r = router(backends, Placement::Ring, 16);
        let positions: Vec<u32> = r.topology().ring().vnodes().map(|v| v.position).collect();
        c.bench_function(&format!("baseline binary search {backends}x150"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                let position = crc32fast::hash(black_box(&keys[i]));
                black_box(positions.partition_point(|&p| p < position) % positions.len())
            })
        });
    }
    for backends in [10, 1000] {
        for down in [0, 10] {
            let r = router(backends, Placement::Ring, 16);
            for i in (0..backends).filter(|i| i % 10 == 0).take(backends * down / 100) {
                r.set_state(&format!("backend-{i}"), BackendState::Down).unwrap();
            }
            let topo = r.topology();
            let mut i = 0;
            c.bench_function(&format!("lookup crc32(16B) {backends}x150, {down}% down"), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    let position = crc32fast::hash(black_box(&keys[i]));
                    black_box(topo.ring_owner(position))
                })
            });
        }
    }
}

fn rebuilds(c: &mut Criterion) {
    let names: Vec<String> = (0..1000).map(|i| format!("backend-{i}")).collect();
    let members: Vec<RingMember<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| RingMember {
            id: BackendId(i as u32),
            name,
            weight: 1,
        })
        .collect();
    c.bench_function("baseline rebuild 1000x150 (format! labels, sort)", |b| {
        b.iter(|| {
            let mut points: Vec<(u32, usize)> = Vec::with_capacity(150_000);
            for (owner, name) in names.iter().enumerate() {
                for i in 0..150 {
                    points.push((crc32fast::hash(format!("{name}-{i}").as_bytes()), owner));
                }
            }
            points.sort_unstable();
            black_box(points)
        })
    });
    c.bench_function("ring rebuild 1000x150", |b| {
        b.iter(|| black_box(Ring::build(black_box(&members), 150, VnodeHash::Mixed)))
    });
    let r = router(1000, Placement::Ring, 16);
    c.bench_function("router add+remove one backend at 1000x150", |b| {
        b.iter(|| {
            let spec = BackendSpec::new("extra", SocketAddr::from(([127, 0, 0, 1], 9)), 1).unwrap();
            r.add_backend(&spec).unwrap();
            r.remove_backend("extra").unwrap();
        })
    });
}

fn placements(c: &mut Criterion) {
    for placement in [Placement::Ring, Placement::BoundedRing] {
        let r = router(10, placement, 16);
        let mut position = 0u32;
        c.bench_function(&format!("place {placement} 10x150"), |b| {
            b.iter(|| {
                position = position.wrapping_add(0x9e37_79b9);
                black_box(r.place(black_box(position)))
            })
        });
    }
}

fn sessions(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let ids: Vec<String> = (0..N)
        .map(|i| format!("{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let before = LIVE.load(Ordering::Relaxed);
    let r = router(10, Placement::Ring, N);
    for id in &ids {
        r.route(SessionKey::Text(id.as_bytes()), Timestamp(0)).unwrap();
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "session table: {} sessions, {} bytes live, {:.1} bytes per session",
        r.session_count(),
        bytes,
        bytes as f64 / N as f64
    );
    let mut i = 0;
    c.bench_function("session lookup at 1M sessions", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(r.route(SessionKey::Text(ids[i].as_bytes()), Timestamp(1)).unwrap())
        })
    });
    let mut n = 0u64;
    c.bench_function("session insert at 1M sessions (evicting)", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("new-{n:012}")
            },
            |id| black_box(r.route(SessionKey::Text(id.as_bytes()), Timestamp(2)).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, lookups, rebuilds, placements, sessions);
criterion_main!(benches);

//! The routing core driven deterministically: placements, ring properties,
//! affinity keys and cookies, the session table, reassignment and remaps.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use ringside::router::affinity::{Affinity, AffinityConfig, AffinityMode, RequestView};
use ringside::router::event::CollectSink;
use ringside::router::lb_cookie::{CookieCodec, Protection};
use ringside::router::ring::RingMember;
use ringside::router::{
    BackendId, BackendSpec, BackendState, ChangeKind, Event, KeyDomain, NullSink, Outcome, Placement, Ring, Router,
    RouterConfig, RouterError, SessionKey, Timestamp, Via, VnodeHash,
};

const T0: Timestamp = Timestamp(0);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

fn router_with(n: usize, config: RouterConfig) -> Router {
    let r = Router::new(
        RouterConfig {
            seed: Some(7),
            ..config
        },
        Arc::new(NullSink),
    );
    r.set_affinity(AffinityMode::AppCookie);
    for i in 1..=n {
        r.add_backend(&BackendSpec::new(&format!("api-{i}"), addr(i), 1).unwrap())
            .unwrap();
    }
    r
}

fn router(n: usize, placement: Placement) -> Router {
    router_with(
        n,
        RouterConfig {
            placement,
            ..RouterConfig::default()
        },
    )
}

fn name_of(r: &Router, id: BackendId) -> String {
    r.topology().backend(id).name.to_string()
}

fn place_new(r: &Router, key: &str) -> String {
    let route = r.route(SessionKey::Text(key.as_bytes()), T0).unwrap();
    assert_eq!(route.outcome, Outcome::Created, "{key} was not new");
    route.backend.name.to_string()
}

fn tally(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n).or_default() += 1;
    }
    m
}

fn ring_of(n: usize, vnodes: u32, hash: VnodeHash) -> (Ring, Vec<String>) {
    let names: Vec<String> = (1..=n).map(|i| format!("api-{i}")).collect();
    let members: Vec<RingMember<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| RingMember {
            id: BackendId(i as u32),
            name,
            weight: 1,
        })
        .collect();
    (Ring::build(&members, vnodes, hash), names)
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("client-{i}")).collect()
}

fn owners(ring: &Ring, keys: &[String], ok: impl Fn(BackendId) -> bool) -> Vec<BackendId> {
    keys.iter()
        .map(|k| ring.lookup(crc32fast::hash(k.as_bytes()), &ok).unwrap().owner)
        .collect()
}

// ---- placements -------------------------------------------------------------

#[test]
fn round_robin_takes_each_available_backend_in_turn() {
    let r = router(3, Placement::RoundRobin);
    let got: Vec<String> = (0..6).map(|i| place_new(&r, &format!("k{i}"))).collect();
    assert_eq!(got, ["api-1", "api-2", "api-3", "api-1", "api-2", "api-3"]);
    r.set_state("api-2", BackendState::Down).unwrap();
    let got: Vec<String> = (6..10).map(|i| place_new(&r, &format!("k{i}"))).collect();
    assert!(got.iter().all(|n| n != "api-2"), "{got:?}");
    assert_eq!(tally(got).len(), 2);
}

#[test]
fn weighted_is_proportional_and_interleaved() {
    let r = Router::new(
        RouterConfig {
            placement: Placement::Weighted,
            ..Default::default()
        },
        Arc::new(NullSink),
    );
    for (i, w) in [(1, 5), (2, 1), (3, 1)] {
        r.add_backend(&BackendSpec::new(&format!("api-{i}"), addr(i), w).unwrap())
            .unwrap();
    }
    let seq: Vec<String> = (0..7).map(|i| place_new(&r, &format!("k{i}"))).collect();
    // nginx's smooth weighted round-robin for 5:1:1.
    assert_eq!(seq, ["api-1", "api-1", "api-2", "api-1", "api-3", "api-1", "api-1"]);
    let counts = tally((7..707).map(|i| place_new(&r, &format!("k{i}"))));
    assert_eq!(counts["api-1"], 500);
    assert_eq!(counts["api-2"], 100);
    assert_eq!(counts["api-3"], 100);
}

#[test]
fn least_conn_picks_the_idlest_backend() {
    let r = router(3, Placement::LeastConn);
    let topo = r.topology();
    topo.find("api-1").unwrap().counters.active.set(5);
    topo.find("api-2").unwrap().counters.active.set(1);
    topo.find("api-3").unwrap().counters.active.set(3);
    assert_eq!(place_new(&r, "a"), "api-2");
    topo.find("api-2").unwrap().counters.active.set(9);
    assert_eq!(place_new(&r, "b"), "api-3");
}

#[test]
fn p2c_avoids_the_loaded_backend() {
    let r = router(3, Placement::P2c);
    r.topology().find("api-1").unwrap().counters.active.set(100);
    let counts = tally((0..900).map(|i| place_new(&r, &format!("k{i}"))));
    // api-1 wins only when both choices are api-1: about 1 in 9.
    let busy = counts.get("api-1").copied().unwrap_or(0);
    assert!(busy < 180, "{counts:?}");
    assert!(counts["api-2"] > 300 && counts["api-3"] > 300, "{counts:?}");
}

#[test]
fn ip_modulo_is_position_mod_available() {
    let r = router(3, Placement::IpModulo);
    for i in 0..100 {
        let key = format!("k{i}");
        let expected = format!("api-{}", crc32fast::hash(key.as_bytes()) % 3 + 1);
        assert_eq!(place_new(&r, &key), expected);
    }
}

#[test]
fn ring_placement_is_the_clockwise_owner() {
    let r = router(5, Placement::Ring);
    let topo = r.topology();
    for i in 0..1000 {
        let key = format!("k{i}");
        let owner = topo.ring_owner(crc32fast::hash(key.as_bytes())).unwrap();
        assert_eq!(place_new(&r, &key), name_of(&r, owner));
    }
}

#[test]
fn bounded_ring_never_exceeds_c_times_mean() {
    // One vnode per backend makes the plain ring very uneven.
    let config = |placement| RouterConfig {
        placement,
        vnodes_per_weight: 1,
        ..Default::default()
    };
    let plain = router_with(8, config(Placement::Ring));
    let bounded = router_with(8, config(Placement::BoundedRing));
    let max_over_mean = |r: &Router| {
        let topo = r.topology();
        let loads: Vec<u64> = topo.members().map(|b| b.counters.sessions(KeyDomain::Text)).collect();
        *loads.iter().max().unwrap() as f64 * loads.len() as f64 / loads.iter().sum::<u64>() as f64
    };
    for i in 0..8000 {
        let key = format!("user-{i}");
        plain.route(SessionKey::Text(key.as_bytes()), T0).unwrap();
        bounded.route(SessionKey::Text(key.as_bytes()), T0).unwrap();
        if i % 500 == 499 {
            let total = (i + 1) as f64;
            let cap = (1.25 * total / 8.0).ceil() as u64;
            let topo = bounded.topology();
            for b in topo.members() {
                assert!(
                    b.counters.sessions(KeyDomain::Text) <= cap,
                    "{} holds {} > {cap}",
                    b.name,
                    b.counters.sessions(KeyDomain::Text)
                );
            }
        }
    }
    assert!(max_over_mean(&bounded) <= 1.25 + 1e-9, "{}", max_over_mean(&bounded));
    assert!(
        max_over_mean(&plain) > 1.5,
        "plain ring unexpectedly even: {}",
        max_over_mean(&plain)
    );
}

#[test]
fn placement_switches_at_run_time() {
    let r = router(3, Placement::Ring);
    r.set_placement(Placement::RoundRobin);
    assert_eq!(r.placement(), Placement::RoundRobin);
    let got: Vec<String> = (0..3).map(|i| place_new(&r, &format!("k{i}"))).collect();
    assert_eq!(got, ["api-1", "api-2", "api-3"]);
}

// ---- ring properties over 100,000 keys ---------------------------------------

#[test]
fn no_key_moves_between_survivors_when_one_leaves() {
    let keys = keys(100_000);
    for n in 3..=10 {
        let (ring, _) = ring_of(n, 150, VnodeHash::Mixed);
        let gone = BackendId(1);
        let before = owners(&ring, &keys, |_| true);
        let after = owners(&ring, &keys, |id| id != gone);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*b, gone, "a key moved between survivors {b:?} → {a:?}");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        let ideal = 1.0 / n as f64;
        assert!(
            (share - ideal).abs() <= 0.03,
            "N={n}: moved {share:.3}, ideal {ideal:.3}"
        );
    }
}

#[test]
fn rebuilt_ring_without_a_backend_equals_skipping_it() {
    let keys = keys(20_000);
    let (full, names) = ring_of(4, 150, VnodeHash::Mixed);
    let members: Vec<RingMember<'_>> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(i, name)| RingMember {
            id: BackendId(i as u32),
            name,
            weight: 1,
        })
        .collect();
    let without = Ring::build(&members, 150, VnodeHash::Mixed);
    assert_eq!(
        owners(&full, &keys, |id| id != BackendId(2)),
        owners(&without, &keys, |_| true)
    );
}

fn max_over_mean_of_keys(n: usize, vnodes: u32, hash: VnodeHash, keys: &[String]) -> f64 {
    let (ring, _) = ring_of(n, vnodes, hash);
    let mut counts = vec![0usize; n];
    for o in owners(&ring, keys, |_| true) {
        counts[o.index()] += 1;
    }
    *counts.iter().max().unwrap() as f64 * n as f64 / keys.len() as f64
}

#[test]
fn mixed_vnodes_spread_keys_evenly() {
    let keys = keys(100_000);
    let mm = max_over_mean_of_keys(10, 150, VnodeHash::Mixed, &keys);
    assert!(mm <= 1.20, "max/mean {mm:.3} at 10 × 150");
}

fn share_cv(n: usize, vnodes: u32, hash: VnodeHash) -> f64 {
    let (ring, _) = ring_of(n, vnodes, hash);
    let shares = ring.shares(n, |_| true);
    let mean = 1.0 / n as f64;
    let var = shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n as f64;
    var.sqrt() / mean
}

#[test]
fn mixed_positions_match_theory_and_beat_plain_crc32() {
    for n in [10, 100] {
        let theory = ((1.0 - 1.0 / n as f64) / 150.0).sqrt();
        let mixed = share_cv(n, 150, VnodeHash::Mixed);
        let crc = share_cv(n, 150, VnodeHash::Crc32);
        assert!(
            mixed > 0.6 * theory && mixed < 1.4 * theory,
            "N={n}: CV {mixed:.4}, theory {theory:.4}"
        );
        assert!(crc > 1.5 * mixed, "N={n}: crc32 CV {crc:.4} vs mixed {mixed:.4}");
    }
}

#[test]
fn ring_is_deterministic() {
    let keys = keys(10_000);
    let (a, _) = ring_of(7, 150, VnodeHash::Mixed);
    let (b, _) = ring_of(7, 150, VnodeHash::Mixed);
    assert_eq!(a.vnodes().collect::<Vec<_>>(), b.vnodes().collect::<Vec<_>>());
    assert_eq!(owners(&a, &keys, |_| true), owners(&b, &keys, |_| true));
}

#[test]
fn colliding_vnodes_are_kept_and_ordered_by_name() {
    // crc32("3g7f-11") == crc32("9lxz-19") == 0xbb4c4121 (found by search);
    // fmix32 is a bijection, so they collide under both vnode hashes.
    assert_eq!(crc32fast::hash(b"3g7f-11"), 0xbb4c_4121);
    assert_eq!(crc32fast::hash(b"9lxz-19"), 0xbb4c_4121);
    let members = [
        RingMember {
            id: BackendId(0),
            name: "9lxz",
            weight: 1,
        },
        RingMember {
            id: BackendId(1),
            name: "3g7f",
            weight: 1,
        },
    ];
    for hash in [VnodeHash::Crc32, VnodeHash::Mixed] {
        let ring = Ring::build(&members, 20, hash);
        assert_eq!(ring.len(), 40, "both vnodes are kept");
        let v: Vec<_> = ring.vnodes().collect();
        let tie = v.windows(2).find(|w| w[0].position == w[1].position).expect("a tie");
        assert_eq!(
            (tie[0].owner, tie[1].owner),
            (BackendId(1), BackendId(0)),
            "\"3g7f\" sorts first"
        );
        assert_eq!(ring.lookup(tie[0].position, |_| true).unwrap().owner, BackendId(1));
        assert_eq!(
            ring.lookup(tie[0].position, |id| id == BackendId(0)).unwrap().owner,
            BackendId(0)
        );
        let reversed = Ring::build(&[members[1], members[0]], 20, hash);
        assert_eq!(reversed.vnodes().collect::<Vec<_>>(), v);
    }
}

#[test]
fn weights_scale_ring_shares_and_vnodes() {
    let r = Router::new(RouterConfig::default(), Arc::new(NullSink));
    for (i, w) in [(1, 1), (2, 2), (3, 4)] {
        r.add_backend(&BackendSpec::new(&format!("api-{i}"), addr(i), w).unwrap())
            .unwrap();
    }
    let topo = r.topology();
    assert_eq!(topo.ring().len(), 150 * 7);
    for (i, w) in [(0u32, 1.0), (1, 2.0), (2, 4.0)] {
        let share = topo.share(BackendId(i));
        assert!((share - w / 7.0).abs() < 0.03, "backend {i}: {share:.3}");
    }
    r.set_weight("api-1", 4).unwrap();
    assert_eq!(r.topology().ring().len(), 150 * 10);
    assert_eq!(
        r.set_weight("api-1", 0).unwrap_err(),
        RouterError::BadWeight("0".into())
    );
}

// ---- backends ------------------------------------------------------------------

#[test]
fn backend_names_and_weights_are_validated() {
    let r = router(1, Placement::Ring);
    assert!(matches!(BackendSpec::new("", addr(0), 1), Err(RouterError::BadName(_))));
    assert!(matches!(
        BackendSpec::new("a b", addr(0), 1),
        Err(RouterError::BadName(_))
    ));
    assert!(matches!(
        BackendSpec::new(&"x".repeat(65), addr(0), 1),
        Err(RouterError::BadName(_))
    ));
    assert!(matches!(
        BackendSpec::new("ok", addr(0), 101),
        Err(RouterError::BadWeight(_))
    ));
    let dup = BackendSpec::new("api-1", addr(5), 1).unwrap();
    assert_eq!(
        r.add_backend(&dup).unwrap_err(),
        RouterError::DuplicateName("api-1".into())
    );
    assert_eq!(
        r.set_state("nope", BackendState::Down).unwrap_err(),
        RouterError::UnknownBackend("nope".into())
    );
    let spec: BackendSpec = "api-9=127.0.0.1:9009*3".parse().unwrap();
    assert_eq!((spec.name.as_str(), spec.weight), ("api-9", 3));
    assert!("api-9".parse::<BackendSpec>().is_err());
    assert!("api-9=localhost".parse::<BackendSpec>().is_err());
    let msg = "api-9=127.0.0.1:1*0".parse::<BackendSpec>().unwrap_err().to_string();
    assert!(msg.contains("1 to 100"), "{msg}");
}

#[test]
fn a_removed_name_can_be_added_again() {
    let r = router(3, Placement::Ring);
    r.remove_backend("api-2").unwrap();
    assert!(r.topology().find("api-2").is_none());
    let id = r.add_backend(&BackendSpec::new("api-2", addr(22), 1).unwrap()).unwrap();
    assert_eq!(
        id,
        BackendId(1),
        "an id nothing refers to is reused: add and remove cycles do not grow"
    );
    assert_eq!(r.topology().find("api-2").unwrap().addr, addr(22));
}

// ---- sessions, reassignment, remap ------------------------------------------------

#[test]
fn sessions_stick_and_count_per_backend() {
    let r = router(3, Placement::RoundRobin);
    for i in 0..30 {
        place_new(&r, &format!("s{i}"));
    }
    for i in 0..30 {
        let route = r
            .route(SessionKey::Text(format!("s{i}").as_bytes()), Timestamp::from_secs(5))
            .unwrap();
        assert_eq!(route.outcome, Outcome::Kept);
        assert_eq!(route.via, Via::Table);
        assert_eq!(route.backend.name.as_ref(), format!("api-{}", i % 3 + 1));
    }
    let topo = r.topology();
    for b in topo.members() {
        assert_eq!(b.counters.sessions(KeyDomain::Text), 10);
        assert_eq!(b.counters.requests(), 20);
    }
    assert_eq!(r.session_count(), 30);
    let listed = r.sessions().unwrap().list(100, |s| s.backend == BackendId(0));
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|s| s.requests == 2 && s.last_seen_secs == 5));
}

#[test]
fn a_dead_backends_sessions_move_clockwise_and_no_others_do() {
    let r = router(4, Placement::Ring);
    let keys = keys(4000);
    let before: Vec<String> = keys.iter().map(|k| place_new(&r, k)).collect();
    let on_api2 = before.iter().filter(|b| *b == "api-2").count() as u64;
    let summary = r.set_state("api-2", BackendState::Killed).unwrap().unwrap();
    assert_eq!(summary.kind, ChangeKind::Left);
    assert_eq!(summary.moved, on_api2);
    assert_eq!(summary.sessions, 4000);
    assert_eq!(summary.ring, on_api2);
    assert!(summary.modulo_share() > 0.6, "{summary}");
    assert_eq!(summary.ideal, 0.25);
    assert_eq!(
        r.topology().find("api-2").unwrap().counters.sessions(KeyDomain::Text),
        0
    );
    let topo = r.topology();
    for (k, b) in keys.iter().zip(&before) {
        let route = r.route(SessionKey::Text(k.as_bytes()), T0).unwrap();
        if b == "api-2" {
            assert_eq!(
                route.outcome,
                Outcome::Reassigned {
                    from: Some(BackendId(1))
                }
            );
            let expected = topo.ring_owner(crc32fast::hash(k.as_bytes())).unwrap();
            assert_eq!(route.backend.id, expected, "moved to the next backend clockwise");
        } else {
            assert_eq!(route.outcome, Outcome::Kept);
            assert_eq!(&*route.backend.name, b.as_str());
        }
    }
    assert_eq!(r.stats_snapshot().reassigned, on_api2);
    // Coming back does not pull sessions back: they are sticky.
    let back = r.set_state("api-2", BackendState::Up).unwrap().unwrap();
    assert_eq!(back.kind, ChangeKind::Joined);
    assert_eq!(back.moved, 0);
    assert!(back.ring > 0);
    for (k, b) in keys.iter().zip(&before).take(200) {
        if b != "api-2" {
            assert_eq!(
                &*r.route(SessionKey::Text(k.as_bytes()), T0).unwrap().backend.name,
                b.as_str()
            );
        }
    }
}

#[test]
fn sessions_redispatched_before_a_failure_is_detected_count_as_moved() {
    let r = router(3, Placement::Ring);
    let keys = keys(900);
    let before: Vec<String> = keys.iter().map(|k| place_new(&r, k)).collect();
    let on_api2 = before.iter().filter(|b| *b == "api-2").count() as u64;
    // The server died; until it is marked down, requests to it fail to
    // connect and are redispatched, each moving its session.
    let early: Vec<&String> = keys
        .iter()
        .zip(&before)
        .filter(|(_, b)| *b == "api-2")
        .map(|(k, _)| k)
        .take(7)
        .collect();
    for k in &early {
        let route = r.route(SessionKey::Text(k.as_bytes()), T0).unwrap();
        assert_eq!(&*route.backend.name, "api-2");
        let moved = r.redispatch(&route, &[], T0).unwrap();
        assert_ne!(&*moved.backend.name, "api-2");
    }
    let summary = r.set_state("api-2", BackendState::Down).unwrap().unwrap();
    assert_eq!(summary.kind, ChangeKind::Left);
    assert_eq!(summary.moved, on_api2, "{summary}");
    assert_eq!(summary.redispatched, 7);
    assert!(summary.to_string().contains("7 of them by redispatch"), "{summary}");
    assert_eq!(r.stats_snapshot().reassigned, on_api2);
    // Counted once: the next change starts from nothing.
    let back = r.set_state("api-2", BackendState::Up).unwrap().unwrap();
    assert_eq!(back.redispatched, 0);
    let again = r.set_state("api-2", BackendState::Down).unwrap().unwrap();
    assert_eq!((again.moved, again.redispatched), (0, 0));
}

#[test]
fn a_passing_failure_is_forgotten_when_the_backend_answers() {
    let r = router(3, Placement::Ring);
    let keys = keys(300);
    let before: Vec<String> = keys.iter().map(|k| place_new(&r, k)).collect();
    let k = keys.iter().zip(&before).find(|(_, b)| *b == "api-3").unwrap().0;
    let route = r.route(SessionKey::Text(k.as_bytes()), T0).unwrap();
    r.redispatch(&route, &[], T0).unwrap();
    r.forget_redispatches(route.backend.id);
    let summary = r.set_state("api-3", BackendState::Down).unwrap().unwrap();
    assert_eq!(summary.redispatched, 0);
}

#[test]
fn a_drains_end_says_what_it_moved() {
    let r = router(3, Placement::Ring);
    let keys = keys(300);
    let before: Vec<String> = keys.iter().map(|k| place_new(&r, k)).collect();
    let on_api1 = before.iter().filter(|b| *b == "api-1").count() as u64;
    let start = r.set_state("api-1", BackendState::Draining).unwrap().unwrap();
    let text = start.to_string();
    assert!(text.contains("no session moved") && !text.contains("modulo"), "{text}");
    let end = r.set_state("api-1", BackendState::Drained).unwrap().unwrap();
    assert_eq!(end.kind, ChangeKind::Drained);
    assert_eq!(end.moved, on_api1);
    let text = end.to_string();
    assert!(
        text.starts_with(&format!(
            "api-1's drain ended: the {on_api1} sessions still on it moved"
        )),
        "{text}"
    );
    assert!(!text.contains("modulo"), "{text}");
}

#[test]
fn draining_keeps_sessions_and_refuses_new_ones() {
    let r = router(3, Placement::Ring);
    let keys = keys(600);
    let before: Vec<String> = keys.iter().map(|k| place_new(&r, k)).collect();
    let summary = r.set_state("api-1", BackendState::Draining).unwrap().unwrap();
    assert_eq!(summary.kind, ChangeKind::Draining);
    assert_eq!(summary.moved, 0);
    for (k, b) in keys.iter().zip(&before) {
        assert_eq!(
            &*r.route(SessionKey::Text(k.as_bytes()), T0).unwrap().backend.name,
            b.as_str()
        );
    }
    for i in 0..300 {
        assert_ne!(place_new(&r, &format!("new-{i}")), "api-1");
    }
    // The drain ends: what is left moves.
    let left = r.topology().find("api-1").unwrap().counters.sessions(KeyDomain::Text);
    assert!(left > 0);
    let end = r
        .remove_backend("api-1")
        .unwrap()
        .expect("a serving backend moves its sessions");
    assert_eq!(end.moved, left);
    assert_eq!(r.topology().find("api-1").map(|b| b.id), None);
}

#[test]
fn sessions_expire_when_idle() {
    let r = router_with(
        2,
        RouterConfig {
            idle_timeout_secs: 60,
            ..Default::default()
        },
    );
    place_new(&r, "a");
    place_new(&r, "b");
    // "a" is used at 50 s; "b" is not.
    assert_eq!(
        r.route(SessionKey::Text(b"a"), Timestamp::from_secs(50))
            .unwrap()
            .outcome,
        Outcome::Kept
    );
    assert_eq!(r.sweep(Timestamp::from_secs(59)), 0);
    assert_eq!(r.sweep(Timestamp::from_secs(60)), 1);
    assert_eq!(r.session_count(), 1);
    // "a" expires lazily when requested after its timeout.
    let again = r.route(SessionKey::Text(b"a"), Timestamp::from_secs(111)).unwrap();
    assert_eq!(again.outcome, Outcome::Created);
    let s = r.stats_snapshot();
    assert_eq!((s.expired, s.created, s.sessions), (2, 3, 1));
    let total: u64 = r
        .topology()
        .members()
        .map(|b| b.counters.sessions(KeyDomain::Text))
        .sum();
    assert_eq!(total, 1);
}

#[test]
fn a_full_table_evicts_the_least_recently_used() {
    let sink = Arc::new(CollectSink::default());
    let r = Router::new(
        RouterConfig {
            max_sessions: 3,
            ..Default::default()
        },
        sink.clone(),
    );
    r.set_affinity(AffinityMode::AppCookie);
    r.add_backend(&BackendSpec::new("api-1", addr(1), 1).unwrap()).unwrap();
    for (t, k) in ["a", "b", "c"].iter().enumerate() {
        r.route(SessionKey::Text(k.as_bytes()), Timestamp::from_secs(t as u64))
            .unwrap();
    }
    r.route(SessionKey::Text(b"a"), Timestamp::from_secs(5)).unwrap();
    r.route(SessionKey::Text(b"d"), Timestamp::from_secs(6)).unwrap();
    assert_eq!(r.stats_snapshot().evicted, 1);
    assert_eq!(r.session_count(), 3);
    let evicted: Vec<u64> = sink
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionEnded { session, .. } => Some(session.fingerprint),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, [r.fingerprint(SessionKey::Text(b"b")).unwrap()]);
    assert_eq!(
        r.topology().find("api-1").unwrap().counters.sessions(KeyDomain::Text),
        3
    );
}

#[test]
fn logout_ends_a_session() {
    let r = router(2, Placement::Ring);
    place_new(&r, "x");
    assert!(r.end_session(SessionKey::Text(b"x")));
    assert!(!r.end_session(SessionKey::Text(b"x")));
    assert_eq!(r.session_count(), 0);
    assert_eq!(r.stats_snapshot().ended, 1);
}

#[test]
fn nothing_available_is_an_error_not_a_panic() {
    let empty = Router::new(RouterConfig::default(), Arc::new(NullSink));
    assert_eq!(
        empty.route(SessionKey::Text(b"k"), T0).unwrap_err(),
        RouterError::NoBackend
    );
    let r = router(2, Placement::Ring);
    place_new(&r, "k");
    r.set_state("api-1", BackendState::Down).unwrap();
    r.set_state("api-2", BackendState::Down).unwrap();
    for key in [
        SessionKey::Text(b"k"),
        SessionKey::Text(b"new"),
        SessionKey::None,
        SessionKey::NewCookie,
    ] {
        assert_eq!(r.route(key, T0).unwrap_err(), RouterError::NoBackend);
    }
    assert!(r.stats_snapshot().unroutable >= 4);
    // Recovery: the stranded session finds a home again.
    r.set_state("api-1", BackendState::Up).unwrap();
    assert_eq!(&*r.route(SessionKey::Text(b"k"), T0).unwrap().backend.name, "api-1");
}

#[test]
fn events_tell_the_story() {
    let sink = Arc::new(CollectSink::default());
    let r = Router::new(
        RouterConfig {
            placement: Placement::RoundRobin,
            ..Default::default()
        },
        sink.clone(),
    );
    r.set_affinity(AffinityMode::AppCookie);
    for i in 1..=2 {
        r.add_backend(&BackendSpec::new(&format!("api-{i}"), addr(i), 1).unwrap())
            .unwrap();
    }
    sink.take();
    r.route(SessionKey::Text(b"a"), T0).unwrap();
    r.set_state("api-1", BackendState::Down).unwrap();
    let events = sink.take();
    assert!(matches!(
        events[0],
        Event::SessionCreated {
            backend: BackendId(0),
            ..
        }
    ));
    assert!(matches!(
        events[1],
        Event::Routed {
            via: Via::Placement,
            ..
        }
    ));
    assert!(matches!(
        events[2],
        Event::BackendState {
            from: BackendState::Up,
            to: BackendState::Down,
            ..
        }
    ));
    assert!(matches!(
        events[3],
        Event::SessionReassigned {
            from: BackendId(0),
            to: BackendId(1),
            ..
        }
    ));
    match &events[4] {
        Event::Remap(s) => {
            let text = s.to_string();
            assert!(
                text.starts_with("api-1 left: 1 of 1 sessions moved (100.0%) — modulo would have moved"),
                "{text}"
            );
            assert!(text.ends_with("ideal 50.0%"), "{text}");
        }
        e => panic!("expected a remap, got {e:?}"),
    }
}

// ---- affinity keys and balancer cookies -----------------------------------------

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));

fn affinity(mode: AffinityMode, protection: Protection) -> Affinity {
    Affinity::new(
        AffinityConfig {
            mode,
            ..Default::default()
        },
        CookieCodec::new("SERVERID", protection, Some(SECRET)).unwrap(),
    )
}

fn cookie_headers(values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(http::header::COOKIE, HeaderValue::from_str(v).unwrap());
    }
    h
}

/// One request through extraction and routing, as the proxy will do it.
fn request(r: &Router, a: &Affinity, headers: &HeaderMap, query: Option<&str>) -> (ringside::router::Route, bool) {
    let topo = r.topology();
    let x = a.extract(
        &RequestView {
            headers,
            query,
            peer: PEER,
            verified: None,
        },
        &topo,
    );
    if x.forged {
        r.note_forged_cookie();
    }
    (r.route(x.key, T0).unwrap(), x.forged)
}

#[test]
fn every_protection_keeps_a_client_on_its_backend() {
    for p in [
        Protection::Private,
        Protection::Signed,
        Protection::Hashed,
        Protection::Plain,
    ] {
        let r = router(3, Placement::Ring);
        let a = affinity(AffinityMode::LbCookie, p);
        let (first, forged) = request(&r, &a, &HeaderMap::new(), None);
        assert!(!forged);
        assert_eq!(first.outcome, Outcome::Created);
        assert!(first.set_cookie);
        let value = a.codec().encode(first.session_id.unwrap(), &first.backend);
        for _ in 0..5 {
            let (next, _) = request(&r, &a, &cookie_headers(&[&format!("SERVERID={value}")]), None);
            assert_eq!(next.backend.id, first.backend.id, "{p}");
            assert_eq!(next.outcome, Outcome::Kept, "{p}");
            assert!(!next.set_cookie, "{p}");
        }
    }
}

#[test]
fn the_balancer_cookie_and_the_application_cookie_are_read_from_one_pass_in_any_order() {
    let r = router(3, Placement::Ring);
    let a = affinity(AffinityMode::LbCookie, Protection::Private);
    let (first, _) = request(&r, &a, &HeaderMap::new(), None);
    let valid = format!(
        "SERVERID={}",
        a.codec().encode(first.session_id.unwrap(), &first.backend)
    );
    let read = |a: &Affinity, values: &[&str]| {
        let headers = cookie_headers(values);
        let x = a.extract(
            &RequestView {
                headers: &headers,
                query: None,
                peer: PEER,
                verified: None,
            },
            &r.topology(),
        );
        let claimed = matches!(x.key, SessionKey::Cookie { .. });
        (claimed, x.forged, x.app_session.map(<[u8]>::to_vec))
    };
    let app = |s: &str| Some(s.as_bytes().to_vec());
    // The application's cookie before, after or in another header; its first non-empty value.
    assert_eq!(read(&a, &["session_id=abc", &valid]), (true, false, app("abc")));
    assert_eq!(
        read(&a, &[&format!("{valid}; session_id=; session_id=def; session_id=ghi")]),
        (true, false, app("def"))
    );
    // A forged balancer cookie before a valid one: the valid one routes, nothing counted.
    assert_eq!(
        read(&a, &["SERVERID=forged; session_id=x", &valid]),
        (true, false, app("x"))
    );
    // Only forged ones: a new session, counted; the application's cookie still read.
    assert_eq!(read(&a, &["session_id=y; SERVERID=forged"]), (false, true, app("y")));
    assert_eq!(read(&a, &["other=1"]), (false, false, None));
    // One name for both cookies: its first non-empty value is also the application's.
    let same = Affinity::new(
        AffinityConfig {
            mode: AffinityMode::LbCookie,
            app_cookie: "SERVERID".into(),
            ..Default::default()
        },
        CookieCodec::new("SERVERID", Protection::Private, Some(SECRET)).unwrap(),
    );
    let value = valid.strip_prefix("SERVERID=").unwrap();
    assert_eq!(read(&same, &["SERVERID=forged", &valid]), (true, false, app("forged")));
    assert_eq!(read(&same, &[&valid]), (true, false, app(value)));
}

#[test]
fn forged_cookies_are_ignored_and_counted() {
    let r = router(3, Placement::Ring);
    let a = affinity(AffinityMode::LbCookie, Protection::Private);
    let (first, _) = request(&r, &a, &HeaderMap::new(), None);
    let value = a.codec().encode(first.session_id.unwrap(), &first.backend);
    let other_key = CookieCodec::new(
        "SERVERID",
        Protection::Private,
        Some(b"a different secret, also 32 bytes+"),
    )
    .unwrap()
    .encode(first.session_id.unwrap(), &first.backend);
    let mut flipped = value.clone().into_bytes();
    flipped[3] ^= 0x01;
    let flipped = String::from_utf8(flipped).unwrap();
    let bad = [
        flipped.as_str(),
        &value[..value.len() - 2],
        other_key.as_str(),
        "api-1",
        "0000000000000001.00000000",
        "%%%%",
    ];
    for (i, v) in bad.iter().enumerate() {
        let (route, forged) = request(&r, &a, &cookie_headers(&[&format!("SERVERID={v}")]), None);
        assert!(forged, "{v:?} was trusted");
        assert_eq!(route.outcome, Outcome::Created, "{v:?}: a new session instead");
        assert_ne!(route.session_id, first.session_id);
        assert_eq!(r.stats_snapshot().forged_cookies, i as u64 + 1);
    }
    // A valid cookie among forged ones still counts; thousands of cookies are fine.
    let mut many: Vec<String> = (0..2000).map(|i| format!("c{i}=v{i}")).collect();
    many.push("SERVERID=garbage".into());
    many.push(format!("SERVERID={value}"));
    let (route, forged) = request(&r, &a, &cookie_headers(&[&many.join("; ")]), None);
    assert!(!forged);
    assert_eq!(route.backend.id, first.backend.id);
    // A balancer cookie that is not even text is forged; a non-ASCII cookie
    // beside a valid one hides nothing.
    let mut h = HeaderMap::new();
    h.append(
        http::header::COOKIE,
        HeaderValue::from_bytes(b"SERVERID=\xff\xfe").unwrap(),
    );
    let (route, forged) = request(&r, &a, &h, None);
    assert!(forged);
    assert_eq!(route.outcome, Outcome::Created);
    let mut h = HeaderMap::new();
    h.append(
        http::header::COOKIE,
        HeaderValue::from_bytes(format!("city=Zürich; SERVERID={value}").as_bytes()).unwrap(),
    );
    let (route, forged) = request(&r, &a, &h, None);
    assert!(!forged);
    assert_eq!(route.backend.id, first.backend.id);
}

#[test]
fn a_cookie_naming_a_dead_backend_is_rewritten() {
    let r = router(3, Placement::Ring);
    let a = affinity(AffinityMode::LbCookie, Protection::Signed);
    let (first, _) = request(&r, &a, &HeaderMap::new(), None);
    let value = a.codec().encode(first.session_id.unwrap(), &first.backend);
    let headers = cookie_headers(&[&format!("SERVERID={value}")]);
    r.set_state(&first.backend.name, BackendState::Killed).unwrap();
    let (moved, _) = request(&r, &a, &headers, None);
    assert_ne!(moved.backend.id, first.backend.id);
    assert_eq!(
        moved.outcome,
        Outcome::Reassigned {
            from: Some(first.backend.id)
        }
    );
    assert!(moved.set_cookie);
    assert_eq!(moved.session_id, first.session_id, "same session, new backend");
    // A client that kept the stale cookie keeps being told.
    let (again, _) = request(&r, &a, &headers, None);
    assert_eq!(again.backend.id, moved.backend.id);
    assert!(again.set_cookie);
    let fresh = cookie_headers(&[&format!(
        "SERVERID={}",
        a.codec().encode(moved.session_id.unwrap(), &moved.backend)
    )]);
    assert!(!request(&r, &a, &fresh, None).0.set_cookie);
}

#[test]
fn a_valid_cookie_survives_a_lost_table() {
    // Another balancer (same secret, same backends, empty table) honours the cookie.
    let one = router(3, Placement::Ring);
    let two = router(3, Placement::Ring);
    let a = affinity(AffinityMode::LbCookie, Protection::Private);
    let (first, _) = request(&one, &a, &HeaderMap::new(), None);
    let headers = cookie_headers(&[&format!(
        "SERVERID={}",
        a.codec().encode(first.session_id.unwrap(), &first.backend)
    )]);
    let (there, _) = request(&two, &a, &headers, None);
    assert_eq!(there.backend.name, first.backend.name);
    assert_eq!(there.outcome, Outcome::Adopted);
    assert_eq!(there.via, Via::Cookie);
    assert!(!there.set_cookie);
}

#[test]
fn app_cookie_header_query_and_source_ip_modes() {
    let r = router(3, Placement::RoundRobin);
    let app = affinity(AffinityMode::AppCookie, Protection::Private);
    let h = cookie_headers(&["theme=dark; session_id=abc123"]);
    let (a1, _) = request(&r, &app, &h, None);
    assert_eq!(a1.outcome, Outcome::Created);
    assert_eq!(request(&r, &app, &h, None).0.backend.id, a1.backend.id);
    assert!(!a1.set_cookie, "the application owns its cookie");

    let hdr = affinity(AffinityMode::Header, Protection::Private);
    let mut h = HeaderMap::new();
    h.insert("x-session-id", HeaderValue::from_static("sess_abc123xyz"));
    let (h1, _) = request(&r, &hdr, &h, None);
    assert_eq!(request(&r, &hdr, &h, None).0.backend.id, h1.backend.id);

    let q = affinity(AffinityMode::Query, Protection::Private);
    let (q1, _) = request(&r, &q, &HeaderMap::new(), Some("session=sess_abc123xyz&x=1"));
    assert_eq!(q1.outcome, Outcome::Kept, "same id as the header: same session");
    assert_eq!(q1.backend.id, h1.backend.id);

    let ip = affinity(AffinityMode::SourceIp, Protection::Private);
    let (i1, _) = request(&r, &ip, &HeaderMap::new(), None);
    assert_eq!(i1.outcome, Outcome::Created);
    let (i2, _) = request(&r, &ip, &HeaderMap::new(), None);
    assert_eq!(i2.outcome, Outcome::Kept);
    // Spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let mut spoof = HeaderMap::new();
    spoof.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.50"));
    assert_eq!(request(&r, &ip, &spoof, None).0.outcome, Outcome::Kept);

    let none = affinity(AffinityMode::None, Protection::Private);
    let (n1, _) = request(&r, &none, &h, None);
    assert_eq!(n1.outcome, Outcome::Stateless);
    // No key in a keyed mode: placement, no session.
    assert_eq!(request(&r, &app, &HeaderMap::new(), None).0.outcome, Outcome::Stateless);
}

#[test]
fn store_news_no_newer_than_the_table_is_ignored() {
    let r = router(3, Placement::Ring);
    let key = SessionKey::Text(b"news");
    let first = r.route(key, T0).unwrap().backend.name.to_string();
    let fp = r.fingerprint(key).unwrap();
    let other = if first == "api-1" { "api-2" } else { "api-1" };
    let third = ["api-1", "api-2", "api-3"]
        .into_iter()
        .find(|b| *b != first && *b != other)
        .unwrap();
    let here = |r: &Router| name_of(r, r.table(KeyDomain::Text).get(fp).unwrap().backend);
    // A move at version 10 is followed; one at version 9 comes too late.
    assert!(r.follow(fp, other, 10));
    assert_eq!(here(&r), other);
    assert!(!r.follow(fp, third, 9));
    assert_eq!(
        r.adopt(KeyDomain::Text, fp, third, 10),
        ringside::router::Adoption::Unchanged
    );
    assert_eq!(here(&r), other);
    // An end older than the move is ignored; a newer one ends it.
    assert!(!r.forget(fp, 10));
    assert!(r.forget(fp, 11));
    assert!(r.table(KeyDomain::Text).get(fp).is_none());
    // A backend that keeps no sessions here is refused, not taken.
    r.route(key, T0).unwrap();
    r.set_state(third, BackendState::Killed).unwrap();
    assert_eq!(
        r.adopt(KeyDomain::Text, fp, third, 5),
        ringside::router::Adoption::Refused
    );
    assert_ne!(here(&r), third);
}

#[test]
fn a_newer_move_to_a_backend_that_keeps_no_sessions_here_removes_the_session() {
    let r = router(3, Placement::Ring);
    let key = SessionKey::Text(b"elsewhere");
    let first = r.route(key, T0).unwrap().backend.name.to_string();
    let fp = r.fingerprint(key).unwrap();
    let gone = ["api-1", "api-2", "api-3"].into_iter().find(|b| *b != first).unwrap();
    r.set_state(gone, BackendState::Down).unwrap();
    // News of where it is already: nothing moves, the version is taken.
    assert!(!r.follow(fp, first.as_str(), 10));
    assert_eq!(r.table(KeyDomain::Text).get(fp).unwrap().version, 10);
    // Older news changes nothing; newer news to a backend down here leaves
    // nothing true to route by: the session goes, its next request asks the store.
    assert!(!r.follow(fp, gone, 9));
    assert!(r.table(KeyDomain::Text).get(fp).is_some());
    assert!(r.follow(fp, gone, 11));
    assert!(r.table(KeyDomain::Text).get(fp).is_none());
}

//! Two balancers sharing a session table in a real `redis-server` on a
//! loopback port: sessions follow a client from one balancer to the other, a
//! kill seen by one moves the sessions on the other, and Redis stopping or
//! stalling fails no request. `.ci/run` installs redis-server; elsewhere the
//! tests are skipped with a note when it is missing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{Redis, shared_config, three_backends};
use common::{Client, Lb, admin_json};
use http::{Method, StatusCode};
use ringside::router::SessionKey;
use ringside::router::affinity::AffinityMode;
use ringside::store::StoreState;

const SECS: Duration = Duration::from_secs(1);

async fn wait_store(lb: &Lb, state: StoreState) {
    let deadline = tokio::time::Instant::now() + 10 * SECS;
    loop {
        let now = lb.handle.store().expect("a store").state();
        if now == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store stayed {now:?}, not {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the store has written every change it holds.
async fn wait_flushed(lb: &Lb) {
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    while lb.handle.store().unwrap().view().pending != 0 {
        assert!(tokio::time::Instant::now() < deadline, "changes never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A client that sends its session id in `x-session-id`.
fn with_session_header(id: &str) -> Client {
    let mut c = Client::default();
    c.headers.push(("x-session-id".into(), id.into()));
    c
}

async fn profile(client: &mut Client, proxy: SocketAddr) -> (StatusCode, String) {
    let a = client.get(proxy, "/profile").await;
    (a.status, a.backend().unwrap_or("-").to_owned())
}

#[tokio::test]
async fn a_logged_in_user_keeps_their_backend_across_two_balancers() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let one = Lb::start(shared_config(Some(&redis), &backends, AffinityMode::AppCookie)).await;
    let two = Lb::start(shared_config(Some(&redis), &backends, AffinityMode::AppCookie)).await;
    let alone = Lb::start(shared_config(None, &backends, AffinityMode::AppCookie)).await;
    wait_store(&one, StoreState::Ok).await;
    wait_store(&two, StoreState::Ok).await;

    let mut lost_without_store = 0;
    let mut session_ids = Vec::new();
    for user in 0..10 {
        let mut client = Client::default();
        let login = client.post(one.proxy, &format!("/login?user=u{user}")).await;
        assert_eq!(login.status, StatusCode::OK);
        let home = login.backend().unwrap().to_owned();
        session_ids.extend(client.jar.values().cloned());
        wait_flushed(&one).await;
        for round in 0..3 {
            for lb in [&two, &one] {
                assert_eq!(
                    profile(&mut client, lb.proxy).await,
                    (StatusCode::OK, home.clone()),
                    "round {round}"
                );
            }
        }
        // A balancer that does not share the store places the session anew.
        if profile(&mut client, alone.proxy).await.0 != StatusCode::OK {
            lost_without_store += 1;
        }
    }
    assert!(lost_without_store > 0, "the control balancer never lost a session");
    // Redis holds fingerprints, backends, positions and versions: no session id.
    let stored = redis.sessions();
    assert!(stored.len() >= 10, "{stored:?}");
    for (key, value) in &stored {
        let fields: Vec<&str> = value.split('\t').collect();
        assert_eq!(fields.len(), 3, "{key} → {value:?}");
        assert!(
            fields[1].parse::<u32>().is_ok() && fields[2].parse::<u32>().is_ok(),
            "{value:?}"
        );
        for id in &session_ids {
            assert!(
                !key.contains(&id[..8]) && !value.contains(&id[..8]),
                "{id} in {key} → {value:?}"
            );
        }
    }
    let store = two.handle.store().unwrap().view();
    assert!(store.hits >= 10, "{store:?}");
    assert_eq!(two.handle.stats_view().router.synced, store.hits);
    for lb in [one, two, alone] {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn a_kill_seen_by_one_balancer_moves_the_sessions_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::LbCookie);
    config.health.interval_ms = 60_000; // only the kill on balancer one acts
    let one = Lb::start(config.clone()).await;
    let two = Lb::start(config).await;
    wait_store(&one, StoreState::Ok).await;
    wait_store(&two, StoreState::Ok).await;

    let mut clients = vec![Client::default(); 30];
    let mut homes = Vec::new();
    for c in &mut clients {
        let home = c.get(one.proxy, "/").await.backend().unwrap().to_owned();
        wait_flushed(&one).await;
        assert_eq!(c.get(two.proxy, "/").await.backend(), Some(home.as_str()));
        homes.push(home);
    }
    let victim = homes[0].clone();
    let mut heard = two.handle.shared().bus.subscribe();
    one.handle
        .execute(ringside::engine::Command::Kill(victim.clone()))
        .await
        .unwrap();
    wait_flushed(&one).await;
    assert_eq!(two.state(&victim), "up", "balancer two saw nothing itself");
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    while two
        .handle
        .backends_view()
        .iter()
        .find(|b| b.name == victim)
        .unwrap()
        .sessions
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "balancer two kept sessions on {victim}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (c, home) in clients.iter_mut().zip(&homes) {
        let via_two = c.get(two.proxy, "/").await.backend().unwrap().to_owned();
        let via_one = c.get(one.proxy, "/").await.backend().unwrap().to_owned();
        assert_eq!(via_two, via_one, "both balancers agree");
        if *home == victim {
            assert_ne!(via_two, victim);
        } else {
            assert_eq!(via_two, *home, "sessions elsewhere never move");
        }
    }
    assert!(two.handle.store().unwrap().view().remote_updates > 0);
    // Balancer two's event log shows the kill made on balancer one.
    let told = format!("balancer {}: killed {victim}", one.proxy);
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    let mut events = Vec::new();
    while !events.iter().any(|e: &std::sync::Arc<ringside::bus::Published>| {
        matches!(&e.event, ringside::bus::BusEvent::Command(text) if text.starts_with(&told))
    }) {
        assert!(tokio::time::Instant::now() < deadline, "never heard {told:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        heard.drain_into(&mut events);
    }
    for lb in [one, two] {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn redis_stopping_fails_no_request_and_the_table_is_put_back() {
    let Some(mut redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let lb = Lb::start(shared_config(Some(&redis), &backends, AffinityMode::Header)).await;
    wait_store(&lb, StoreState::Ok).await;
    let mut clients: Vec<Client> = (0..10).map(|i| with_session_header(&format!("old-{i}"))).collect();
    let mut homes = Vec::new();
    for c in &mut clients {
        homes.push(c.get(lb.proxy, "/").await.backend().unwrap().to_owned());
    }
    wait_flushed(&lb).await;
    assert_eq!(redis.keys(), 10);

    redis.stop();
    // Every request is served while the store is away, old sessions and new.
    for _ in 0..3 {
        for (c, home) in clients.iter_mut().zip(&homes) {
            let a = c.get(lb.proxy, "/").await;
            assert_eq!((a.status, a.backend()), (StatusCode::OK, Some(home.as_str())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_store(&lb, StoreState::Degraded).await;
    let mut newcomers: Vec<Client> = (0..5).map(|i| with_session_header(&format!("new-{i}"))).collect();
    for c in &mut newcomers {
        assert_eq!(c.get(lb.proxy, "/").await.status, StatusCode::OK);
    }
    let (_, stats) = admin_json(lb.admin, Method::GET, "/api/stats", None).await;
    assert_eq!(stats["store"]["state"], "degraded", "{stats}");
    assert!(stats["store"]["degraded_total"].as_u64() >= Some(1));

    redis.restart();
    wait_store(&lb, StoreState::Ok).await;
    wait_flushed(&lb).await;
    assert_eq!(redis.keys(), 15, "every local session is back in the store");
    assert!(lb.handle.store().unwrap().view().resyncs >= 2);
    lb.handle.shutdown().await;
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn a_stalled_redis_costs_a_lookup_timeout_not_a_failed_request() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::Header);
    config.sessions.store_timeout_ms = 100;
    let lb = Lb::start(config).await;
    wait_store(&lb, StoreState::Ok).await;

    // Redis stops answering (SIGSTOP) until it is continued.
    redis.signal("STOP");
    let started = tokio::time::Instant::now();
    let mut client = Client::default();
    client.headers.push(("x-session-id".into(), "unknown-here".into()));
    let a = client.get(lb.proxy, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        started.elapsed() < SECS,
        "the request waited {:?} for Redis",
        started.elapsed()
    );
    wait_store(&lb, StoreState::Degraded).await;
    // Degraded: no more lookups, requests go straight through.
    let lookups = lb.handle.store().unwrap().view().lookups;
    for i in 0..5 {
        let mut c = Client::default();
        c.headers.push(("x-session-id".into(), format!("new-{i}")));
        assert_eq!(c.get(lb.proxy, "/").await.status, StatusCode::OK);
    }
    assert_eq!(lb.handle.store().unwrap().view().lookups, lookups);
    redis.signal("CONT");
    wait_store(&lb, StoreState::Ok).await;
    lb.handle.shutdown().await;
    for b in backends {
        b.kill().await;
    }
}

/// Where `lb`'s table has the session of `key` (`-` when it has none).
fn table_backend(lb: &Lb, key: SessionKey<'_>) -> String {
    let router = lb.handle.router();
    let fingerprint = router.fingerprint(key).unwrap();
    let domain = key.domain().unwrap();
    router
        .table(domain)
        .get(fingerprint)
        .map_or("-".into(), |s| router.topology().backend(s.backend).name.to_string())
}

/// A relay on loopback in front of Redis whose answers to commands (not to
/// subscriptions) wait while it is held.
struct Relay {
    addr: SocketAddr,
    held: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(redis: &Redis) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = SocketAddr::from(([127, 0, 0, 1], redis.port));
        let (held, gate) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let subscriber = Arc::new(AtomicBool::new(false));
                let seen = Arc::clone(&subscriber);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        if buf[..n].windows(9).any(|w| w == b"SUBSCRIBE") {
                            seen.store(true, Ordering::Relaxed);
                        }
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut gate = gate.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                        if !subscriber.load(Ordering::Relaxed) && gate.wait_for(|held| !*held).await.is_err() {
                            return;
                        }
                        if to_client.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Relay { addr, held }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }
}

#[tokio::test]
async fn a_move_heard_while_its_key_is_looked_up_is_taken_after() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let relay = Relay::start(&redis).await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::Header);
    config.sessions.store = Some(relay.url());
    config.sessions.store_timeout_ms = 5000;
    let lb = Lb::start(config).await;
    wait_store(&lb, StoreState::Ok).await;

    // The lookup's answer waits in the relay after Redis wrote the proposal.
    let key = SessionKey::Text(b"late-news");
    let fingerprint = lb.handle.router().fingerprint(key).unwrap();
    let stored_key = format!("ringside:session:{fingerprint:016x}");
    relay.hold(true);
    let proxy = lb.proxy;
    let request = tokio::spawn(async move { with_session_header("late-news").get(proxy, "/").await });
    let deadline = tokio::time::Instant::now() + 5 * SECS;
    let proposed = loop {
        if let Some((_, value)) = redis.sessions().into_iter().find(|(k, _)| *k == stored_key) {
            break value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proposal never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let fields: Vec<&str> = proposed.split('\t').collect();
    let (mine, position, version) = (fields[0], fields[1], fields[2].parse::<u32>().unwrap());
    // Meanwhile another balancer moves the session, and says so: the
    // message arrives before the answer, while the table lacks the key.
    let theirs = ["api-1", "api-2", "api-3"].into_iter().find(|b| *b != mine).unwrap();
    let value = format!("{theirs}\\t{position}\\t{}", version + 1);
    assert_eq!(
        redis.command(&["SET", &stored_key, &format!("\"{value}\"")]).as_deref(),
        Some("+OK")
    );
    let message = format!("\"00000000000000ff\\t{fingerprint:016x}\\t{value}\"");
    assert_eq!(
        redis.command(&["PUBLISH", "ringside:sessions", &message]).as_deref(),
        Some(":1")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.hold(false);

    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.backend(), Some(theirs), "the request follows the move");
    assert_eq!(table_backend(&lb, key), theirs, "the table holds what Redis holds");
    assert_eq!(lb.handle.store().unwrap().view().remote_updates, 1);
    lb.handle.shutdown().await;
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn a_client_that_switches_balancer_at_once_keeps_its_session() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let one = Lb::start(shared_config(Some(&redis), &backends, AffinityMode::AppCookie)).await;
    let two = Lb::start(shared_config(Some(&redis), &backends, AffinityMode::AppCookie)).await;
    wait_store(&one, StoreState::Ok).await;
    wait_store(&two, StoreState::Ok).await;

    // Every next request goes to the other balancer at once, as behind DNS
    // round-robin: the login's session must be in Redis when it answers.
    let mut lost = Vec::new();
    for user in 0..40 {
        let (first, second) = if user % 2 == 0 { (&one, &two) } else { (&two, &one) };
        let mut client = Client::default();
        let login = client.post(first.proxy, &format!("/login?user=u{user}")).await;
        assert_eq!(login.status, StatusCode::OK);
        let home = login.backend().unwrap().to_owned();
        for lb in [second, first, second] {
            let answer = profile(&mut client, lb.proxy).await;
            if answer != (StatusCode::OK, home.clone()) {
                lost.push((user, answer));
            }
        }
    }
    assert!(lost.is_empty(), "sessions lost: {lost:?}");
    for lb in [&one, &two] {
        let store = lb.handle.store().unwrap().view();
        assert_eq!(store.waits, 20, "one wait per login through it: {store:?}");
        assert_eq!(store.state, StoreState::Ok);
    }
    for lb in [one, two] {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn balancers_that_miss_the_same_key_at_once_agree_on_one_backend() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::Header);
    // A random placement: without one winner the balancers would disagree.
    config.routing.placement = ringside::router::Placement::P2c;
    let one = Lb::start(config.clone()).await;
    let two = Lb::start(config).await;
    wait_store(&one, StoreState::Ok).await;
    wait_store(&two, StoreState::Ok).await;

    let mut split = Vec::new();
    for i in 0..60 {
        let id = format!("racer-{i}");
        let (mut a, mut b) = (with_session_header(&id), with_session_header(&id));
        let (x, y) = tokio::join!(a.get(one.proxy, "/"), b.get(two.proxy, "/"));
        assert_eq!((x.status, y.status), (StatusCode::OK, StatusCode::OK));
        let key = SessionKey::Text(id.as_bytes());
        let tables = (table_backend(&one, key), table_backend(&two, key));
        if x.backend() != y.backend() || tables.0 != tables.1 || x.backend() != Some(tables.0.as_str()) {
            split.push((
                id,
                x.backend().map(str::to_owned),
                y.backend().map(str::to_owned),
                tables,
            ));
        }
    }
    assert!(split.is_empty(), "the balancers disagreed: {split:?}");
    let conflicts: u64 = [&one, &two]
        .iter()
        .map(|lb| lb.handle.store().unwrap().view().conflicts + lb.handle.store().unwrap().view().hits)
        .sum();
    assert!(conflicts > 0, "no request ever found the other balancer's value");
    for lb in [one, two] {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn two_moves_of_one_session_at_once_end_on_one_backend() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::Header);
    config.health.interval_ms = 60_000; // only the commands act
    let one = Lb::start(config.clone()).await;
    let two = Lb::start(config).await;
    wait_store(&one, StoreState::Ok).await;
    wait_store(&two, StoreState::Ok).await;

    // Sessions on api-1, known to both balancers.
    let mut ids = Vec::new();
    for i in 0.. {
        if ids.len() == 40 {
            break;
        }
        let id = format!("mover-{i}");
        let mut c = with_session_header(&id);
        if c.get(one.proxy, "/").await.backend() == Some("api-1") {
            assert_eq!(c.get(two.proxy, "/").await.backend(), Some("api-1"));
            ids.push(id);
        }
    }
    // The balancers see the topology differently (api-2 drains on one,
    // api-3 on two), so each would move api-1's sessions elsewhere.
    for (lb, draining) in [(&one, "api-2"), (&two, "api-3")] {
        let drain = ringside::engine::Command::Drain {
            backend: draining.into(),
            timeout: Some(Duration::from_secs(600)),
        };
        lb.handle.execute(drain).await.unwrap();
    }
    let kill = || ringside::engine::Command::Kill("api-1".into());
    let (a, b) = tokio::join!(one.handle.execute(kill()), two.handle.execute(kill()));
    a.unwrap();
    b.unwrap();
    wait_flushed(&one).await;
    wait_flushed(&two).await;

    let stored: std::collections::HashMap<String, String> = redis.sessions().into_iter().collect();
    let mut split = Vec::new();
    for id in &ids {
        let key = SessionKey::Text(id.as_bytes());
        let (x, y) = (table_backend(&one, key), table_backend(&two, key));
        let fingerprint = one.handle.router().fingerprint(key).unwrap();
        let in_redis = stored
            .get(&format!("ringside:session:{fingerprint:016x}"))
            .map(|v| v.split('\t').next().unwrap().to_owned());
        if x != y || in_redis.as_deref() != Some(x.as_str()) || x == "api-1" {
            split.push((id, x, y, in_redis));
        }
    }
    assert!(split.is_empty(), "{} of {} disagree: {split:?}", split.len(), ids.len());
    // The second move of a session found the first one's and took it.
    let conflicts: u64 = [&one, &two]
        .iter()
        .map(|lb| lb.handle.store().unwrap().view().conflicts)
        .sum();
    assert!(conflicts > 0, "no move found another one first");
    for lb in [one, two] {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

#[tokio::test]
async fn redis_holds_no_cookie_session_until_it_moves_and_other_keys_up_to_store_max() {
    let Some(redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::LbCookie);
    config.health.interval_ms = 60_000;
    let lb = Lb::start(config).await;
    wait_store(&lb, StoreState::Ok).await;

    // A cookieless flood: every request a new session, none written.
    let mut homes = std::collections::HashMap::<String, u64>::new();
    for _ in 0..150 {
        let a = Client::default().get(lb.proxy, "/").await;
        *homes.entry(a.backend().unwrap().to_owned()).or_default() += 1;
    }
    wait_flushed(&lb).await;
    assert_eq!(redis.keys(), 0, "a balancer cookie routes on its own");
    assert_eq!(lb.handle.store().unwrap().view().keys, 0);
    // A kill moves api-2's sessions: those are written, and only those.
    lb.handle
        .execute(ringside::engine::Command::Kill("api-2".into()))
        .await
        .unwrap();
    wait_flushed(&lb).await;
    assert_eq!(redis.keys(), homes["api-2"], "{homes:?}");
    lb.handle.shutdown().await;

    // Application keys: at most store_max per balancer, the rest unshared.
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::Header);
    config.sessions.store_max = 20;
    let capped = Lb::start(config).await;
    wait_store(&capped, StoreState::Ok).await;
    let before = redis.keys();
    for i in 0..50 {
        let a = with_session_header(&format!("flood-{i}")).get(capped.proxy, "/").await;
        assert_eq!(a.status, StatusCode::OK);
    }
    wait_flushed(&capped).await;
    assert_eq!(redis.keys() - before, 20);
    let store = capped.handle.store().unwrap().view();
    assert_eq!((store.keys, store.keys_max, store.unshared), (20, 20, 30), "{store:?}");
    let (_, stats) = admin_json(capped.admin, Method::GET, "/api/stats", None).await;
    assert_eq!(stats["store"]["keys"], 20, "{stats}");
    assert_eq!(stats["store"]["unshared"], 30, "{stats}");
    capped.handle.shutdown().await;
    for b in backends {
        b.kill().await;
    }
}

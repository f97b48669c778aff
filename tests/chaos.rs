//! Chaos with three balancers sharing one Redis in front of the demo
//! backends (app-cookie mode): clients that send every request to the next
//! balancer, as behind DNS round-robin, while Redis is killed and restarted
//! empty, then stopped (SIGSTOP) while a backend is killed; backends are
//! killed through one balancer and drained through another. The test prints
//! what happened and asserts that no request failed away from a killed
//! backend, that no session was lost away from a fault, that once the faults
//! stop the three tables and Redis agree on every key, and that then no
//! client loses its session. `.ci/run` installs
//! redis-server; elsewhere the test is skipped with a note when it is missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::Lb;
use common::redis::{Redis, shared_config, three_backends};
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ringside::engine::Command;
use ringside::router::KeyDomain;
use ringside::router::affinity::AffinityMode;
use ringside::store::{RedisStore, StoreState};
use tokio::time::{Instant, sleep};

const CLIENTS: usize = 12;
/// Requests per client at most, however long the faults take.
const MAX_REQUESTS: usize = 4000;
const MS: Duration = Duration::from_millis(1);

/// What a balancer answered, as far as the client cares.
struct Reply {
    status: u16,
    backend: Option<String>,
    /// The application's `session_id` cookie: set (`Some(id)`) or deleted (`Some("")`).
    session: Option<String>,
}

/// One request on a fresh connection; any failure to get an answer is an error.
async fn send(addr: SocketAddr, method: Method, path: &str, session: Option<&str>) -> Result<Reply, String> {
    let mut req = Request::builder().method(method).uri(path).header("host", "chaos.test");
    if let Some(id) = session {
        req = req.header("cookie", format!("session_id={id}"));
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let backend = header("x-backend");
        let session = resp.headers().get_all("set-cookie").iter().find_map(|v| {
            let v = v.to_str().ok()?;
            let id = v.strip_prefix("session_id=")?.split(';').next()?;
            Some(id.to_owned())
        });
        let status = resp.status().as_u16();
        resp.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            backend,
            session,
        })
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 5 s".into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Redis,
    Kill,
    Drain,
    /// A store degraded with no fault made (a write slower than the store
    /// timeout on a busy machine).
    Degraded,
}

/// A fault and when it lasted.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    backend: Option<String>,
    from: Instant,
    to: Option<Instant>,
}

/// The faults so far.
#[derive(Default)]
struct Faults(Mutex<Vec<Fault>>);

impl Faults {
    fn begin(&self, kind: Kind, backend: Option<&str>) -> usize {
        let mut f = self.0.lock().unwrap();
        f.push(Fault {
            kind,
            backend: backend.map(str::to_owned),
            from: Instant::now(),
            to: None,
        });
        f.len() - 1
    }

    fn end(&self, i: usize) {
        self.0.lock().unwrap()[i].to = Some(Instant::now());
    }

    /// The first kind of fault that explains trouble at `at` for a client
    /// homed on `home` (any backend when it had none): a kill or drain of
    /// that backend, Redis, or a degraded store, within `slack` of it.
    fn blame(&self, at: Instant, home: Option<&str>, slack: Duration) -> Option<Kind> {
        let faults = self.0.lock().unwrap();
        let during = |f: &Fault| at + slack >= f.from && f.to.is_none_or(|to| at <= to + slack);
        let on_home = |f: &Fault| f.backend.is_none() || home.is_none() || f.backend.as_deref() == home;
        [Kind::Kill, Kind::Drain, Kind::Redis, Kind::Degraded]
            .into_iter()
            .find(|&kind| faults.iter().any(|f| f.kind == kind && during(f) && on_home(f)))
    }

    /// How many times a store degraded away from the Redis faults.
    fn spurious(&self) -> usize {
        let faults = self.0.lock().unwrap();
        let end = |f: &Fault| f.to.unwrap_or_else(Instant::now);
        let redis: Vec<_> = faults.iter().filter(|f| f.kind == Kind::Redis).collect();
        faults
            .iter()
            .filter(|d| d.kind == Kind::Degraded && !redis.iter().any(|r| d.from <= end(r) && r.from <= end(d)))
            .count()
    }
}

/// Records each stretch during which some balancer's store is not connected
/// as a `Degraded` fault, until `stop`.
async fn watch_stores(stores: Vec<Arc<RedisStore>>, faults: Arc<Faults>, stop: Arc<AtomicBool>) {
    let mut open = None;
    while !stop.load(Ordering::Relaxed) {
        let degraded = stores.iter().any(|s| s.state() != StoreState::Ok);
        match (degraded, open) {
            (true, None) => open = Some(faults.begin(Kind::Degraded, None)),
            (false, Some(i)) => {
                faults.end(i);
                open = None;
            }
            _ => {}
        }
        sleep(5 * MS).await;
    }
    if let Some(i) = open {
        faults.end(i);
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    /// Failed requests (no answer, or 5xx): when, the client's backend, what.
    errors: Vec<(Instant, Option<String>, String)>,
    /// Sessions lost (401 to a logged-in client): when, and its backend.
    lost: Vec<(Instant, String)>,
    /// Logged-in requests answered by another backend than the session's.
    strays: u64,
}

/// A client that logs in, browses, now and then logs out, each request
/// through the next balancer, until `stop`.
async fn client(id: usize, lbs: [SocketAddr; 3], stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut session: Option<(String, String)> = None; // (id, backend)
    let mut next = id % 3;
    for n in 0..MAX_REQUESTS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let lb = lbs[next];
        next = (next + 1) % 3;
        let (method, path) = match (&session, n % 10) {
            (None, _) => (Method::POST, format!("/login?user=c{id}-{n}")),
            (Some(_), 0) => (Method::POST, "/logout".to_owned()),
            (Some(_), 1 | 4 | 7) => (Method::POST, "/cart?item=i{n}".to_owned()),
            (Some(_), 2 | 5 | 8) => (Method::GET, "/cart".to_owned()),
            (Some(_), _) => (Method::GET, "/profile".to_owned()),
        };
        let sent = Instant::now();
        tally.requests += 1;
        let home = session.as_ref().map(|(_, b)| b.clone());
        match send(lb, method, &path, session.as_ref().map(|(s, _)| s.as_str())).await {
            Err(e) => tally.errors.push((sent, home, e)),
            Ok(r) if r.status >= 500 => tally.errors.push((sent, home, format!("{} from {lb}", r.status))),
            Ok(r) => match (&session, r.status) {
                (None, 200) => {
                    session = r.session.filter(|s| !s.is_empty()).zip(r.backend);
                }
                (None, _) => {}
                (Some(_), 200) if path == "/logout" => session = None,
                (Some((_, home)), 200) => {
                    if r.backend.as_deref() != Some(home.as_str()) {
                        tally.strays += 1;
                    }
                }
                (Some((_, home)), _) => {
                    tally.lost.push((sent, home.clone()));
                    session = None;
                }
            },
        }
    }
    tally
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> impl Future<Output = ()> {
    let deadline = Instant::now() + within;
    let what = what.to_owned();
    async move {
        while !ok() {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
            sleep(20 * MS).await;
        }
    }
}

async fn stores_ok(lbs: &[Lb]) {
    wait_until("every store connected", Duration::from_secs(10), || {
        lbs.iter()
            .all(|lb| lb.handle.store().unwrap().state() == StoreState::Ok)
    })
    .await;
}

async fn everywhere_up(lbs: &[Lb], backend: &str) {
    for lb in lbs {
        lb.wait_state(backend, "up", Duration::from_secs(10)).await;
    }
}

/// Every key in the three tables and in Redis, and the backends named for
/// it; the keys with more than one.
fn disagreements(lbs: &[Lb], redis: &Redis) -> (usize, Vec<(String, Vec<String>)>) {
    let mut named: HashMap<String, Vec<String>> = HashMap::new();
    for lb in lbs {
        let router = lb.handle.router();
        let topo = router.topology();
        for s in router.table(KeyDomain::Text).list(usize::MAX, |_| true) {
            named
                .entry(format!("{:016x}", s.fingerprint))
                .or_default()
                .push(topo.backend(s.backend).name.to_string());
        }
    }
    for (key, value) in redis.sessions() {
        let fingerprint = key.trim_start_matches("ringside:session:").to_owned();
        let backend = value.split('\t').next().unwrap_or("").to_owned();
        named.entry(fingerprint).or_default().push(format!("{backend} (redis)"));
    }
    let keys = named.len();
    let split = named
        .into_iter()
        .filter(|(_, b)| {
            b.iter()
                .map(|n| n.trim_end_matches(" (redis)"))
                .collect::<HashSet<_>>()
                .len()
                > 1
        })
        .collect();
    (keys, split)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_switching_balancers_through_redis_and_backend_faults() {
    let Some(mut redis) = Redis::start() else { return };
    let backends = three_backends().await;
    let mut config = shared_config(Some(&redis), &backends, AffinityMode::AppCookie);
    config.sessions.store_timeout_ms = 200;
    config.proxy.threads = 1;
    let mut lbs = Vec::new();
    for _ in 0..3 {
        lbs.push(Lb::start(config.clone()).await);
    }
    stores_ok(&lbs).await;
    let addrs = [lbs[0].proxy, lbs[1].proxy, lbs[2].proxy];
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, addrs, Arc::clone(&stop))))
        .collect();
    let faults = Arc::new(Faults::default());
    let stores = lbs.iter().map(|lb| Arc::clone(lb.handle.store().unwrap())).collect();
    let watch = tokio::spawn(watch_stores(stores, Arc::clone(&faults), Arc::clone(&stop)));
    sleep(1000 * MS).await;

    // Redis killed (-9) and started again, empty.
    let f = faults.begin(Kind::Redis, None);
    redis.stop();
    sleep(1200 * MS).await;
    redis.restart();
    stores_ok(&lbs).await;
    faults.end(f);
    sleep(800 * MS).await;

    // api-1 dies; balancer one is told (kill), the others find out.
    let f = faults.begin(Kind::Kill, Some("api-1"));
    backends[0].kill().await;
    lbs[0].handle.execute(Command::Kill("api-1".into())).await.unwrap();
    sleep(1500 * MS).await;
    backends[0].revive().await.unwrap();
    lbs[0].handle.execute(Command::Revive("api-1".into())).await.unwrap();
    everywhere_up(&lbs, "api-1").await;
    faults.end(f);
    sleep(500 * MS).await;

    // Redis stops answering (SIGSTOP) while api-2 dies, told to balancer two.
    let r = faults.begin(Kind::Redis, None);
    redis.signal("STOP");
    let f = faults.begin(Kind::Kill, Some("api-2"));
    backends[1].kill().await;
    lbs[1].handle.execute(Command::Kill("api-2".into())).await.unwrap();
    sleep(1500 * MS).await;
    redis.signal("CONT");
    backends[1].revive().await.unwrap();
    lbs[1].handle.execute(Command::Revive("api-2".into())).await.unwrap();
    everywhere_up(&lbs, "api-2").await;
    faults.end(f);
    stores_ok(&lbs).await;
    faults.end(r);
    sleep(500 * MS).await;

    // api-3 drained through balancer three to its end, then back in service.
    let f = faults.begin(Kind::Drain, Some("api-3"));
    let drain = Command::Drain {
        backend: "api-3".into(),
        timeout: Some(Duration::from_secs(1)),
    };
    lbs[2].handle.execute(drain).await.unwrap();
    lbs[2].wait_state("api-3", "drained", Duration::from_secs(5)).await;
    sleep(300 * MS).await;
    lbs[2].handle.execute(Command::Undrain("api-3".into())).await.unwrap();
    everywhere_up(&lbs, "api-3").await;
    faults.end(f);
    sleep(1000 * MS).await;

    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for c in clients {
        tallies.push(c.await.unwrap());
    }
    watch.await.unwrap();
    let faulted = started.elapsed();

    // The faults have stopped: every change written, every message taken.
    stores_ok(&lbs).await;
    wait_until("every change written", Duration::from_secs(5), || {
        lbs.iter().all(|lb| lb.handle.store().unwrap().view().pending == 0)
    })
    .await;
    sleep(300 * MS).await;
    let (keys, split) = disagreements(&lbs, &redis);

    // And now nobody loses a session, wherever their requests go.
    let quiet: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(async move {
                let mut lost = 0;
                let login = send(addrs[id % 3], Method::POST, &format!("/login?user=q{id}"), None)
                    .await
                    .unwrap();
                let (session, home) = (login.session.unwrap(), login.backend.unwrap());
                for i in 1..=6 {
                    let r = send(addrs[(id + i) % 3], Method::GET, "/profile", Some(&session))
                        .await
                        .unwrap();
                    if (r.status, r.backend.as_deref()) != (200, Some(home.as_str())) {
                        lost += 1;
                    }
                }
                lost
            })
        })
        .collect();
    let mut quiet_lost = 0;
    for q in quiet {
        quiet_lost += q.await.unwrap();
    }
    let (keys_after, split_after) = disagreements(&lbs, &redis);

    let requests: u64 = tallies.iter().map(|t| t.requests).sum();
    let strays: u64 = tallies.iter().map(|t| t.strays).sum();
    let slack = 1000 * MS;
    let mut errors: HashMap<Option<Kind>, Vec<String>> = HashMap::new();
    let mut lost: HashMap<Option<Kind>, u64> = HashMap::new();
    for t in &tallies {
        for (at, home, what) in &t.errors {
            let blame = faults.blame(*at, home.as_deref(), slack).filter(|k| *k == Kind::Kill);
            errors.entry(blame).or_default().push(format!("{what} (home {home:?})"));
        }
        for (at, home) in &t.lost {
            *lost.entry(faults.blame(*at, Some(home), slack)).or_default() += 1;
        }
    }
    let stores: Vec<_> = lbs.iter().map(|lb| lb.handle.store().unwrap().view()).collect();
    let count = |k: Option<Kind>| lost.get(&k).copied().unwrap_or(0);
    eprintln!(
        "chaos: {requests} requests in {:.1} s by {CLIENTS} clients switching balancer on every request; \
         {} failed on killed backends, {} elsewhere; sessions lost: {} on killed backends, {} on the drained one, \
         {} during Redis faults, {} while a store was degraded otherwise ({} times), {} otherwise; \
         {strays} answered by another backend",
        faulted.as_secs_f64(),
        errors.get(&Some(Kind::Kill)).map_or(0, Vec::len),
        errors.get(&None).map_or(0, Vec::len),
        count(Some(Kind::Kill)),
        count(Some(Kind::Drain)),
        count(Some(Kind::Redis)),
        count(Some(Kind::Degraded)),
        faults.spurious(),
        count(None),
    );
    eprintln!(
        "chaos: once the faults stopped, {keys} keys in three tables and Redis, {} disagree; \
         {CLIENTS} new logins with 6 requests each through every balancer: {quiet_lost} lost; \
         then {keys_after} keys, {} disagree",
        split.len(),
        split_after.len()
    );
    for (i, s) in stores.iter().enumerate() {
        eprintln!(
            "chaos: balancer {}: degraded {} times, {} lookups, {} waits, {} conflicts, {} remote updates, {} resyncs, {} keys",
            i + 1,
            s.degraded_total,
            s.lookups,
            s.waits,
            s.conflicts,
            s.remote_updates,
            s.resyncs,
            s.keys
        );
    }

    assert!(
        !errors.contains_key(&None),
        "requests failed away from killed backends: {:?}",
        errors[&None]
    );
    assert!(split.is_empty(), "keys the balancers disagree on: {split:?}");
    assert!(
        split_after.is_empty(),
        "keys the balancers disagree on: {split_after:?}"
    );
    assert_eq!(count(None), 0, "sessions lost away from any fault");
    assert_eq!(quiet_lost, 0, "sessions lost once the faults stopped");
    assert_eq!(strays, 0, "a session answered by another backend");
    assert!(requests > 1000, "only {requests} requests");
    assert!(
        stores.iter().all(|s| s.degraded_total >= 2 && s.resyncs >= 3),
        "every balancer lived through both Redis faults: {stores:?}"
    );
    for lb in lbs {
        lb.handle.shutdown().await;
    }
    for b in backends {
        b.kill().await;
    }
}

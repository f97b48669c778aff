//! Soak: steady keep-alive load while a backend is killed, revived and
//! another drained, over and over. Checks that no request fails unless its
//! backend was the one being killed, and that memory, file descriptors,
//! tasks and connections come back to where they were.
//!
//! `RINGSIDE_SOAK_SECS` sets the length (20 s by default, 60 s for the
//! documented run: `RINGSIDE_SOAK_SECS=60 cargo test --release --test soak -- --nocapture`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Lb, test_config};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ringside::engine::Command;
use tokio::net::TcpStream;

const CLIENTS: usize = 16;
const CYCLE: Duration = Duration::from_secs(5);

fn soak_length() -> Duration {
    let secs = std::env::var("RINGSIDE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Which backend is being killed right now, if any.
#[derive(Default)]
struct Chaos {
    killing: Mutex<Option<String>>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed_on_victim: AtomicU64,
    failed_elsewhere: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// One keep-alive client with a cookie: asks `GET /` until `stop`.
async fn client(proxy: std::net::SocketAddr, chaos: Arc<Chaos>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut cookie: Option<String> = None;
    let mut home: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let mut req = Request::get("/").header("host", "soak");
            if let Some(c) = &cookie {
                req = req.header("cookie", c.as_str());
            }
            let victim_before = chaos.killing.lock().unwrap().clone();
            let answer = match sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await {
                Ok(resp) => {
                    let status = resp.status();
                    let backend = resp
                        .headers()
                        .get("x-backend")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if let Some(set) = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
                        cookie = set.split(';').next().map(str::to_owned);
                    }
                    let body = resp.into_body().collect().await;
                    Ok((status, backend, body.is_ok()))
                }
                Err(e) => Err(e.to_string()),
            };
            let failure = match &answer {
                Ok((status, backend, true)) if status.is_success() => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    home = backend.clone();
                    None
                }
                Ok((status, _, _)) => Some(format!("{status}")),
                Err(e) => Some(e.clone()),
            };
            if let Some(what) = failure {
                let victim_after = chaos.killing.lock().unwrap().clone();
                let on_victim = home.is_some() && (home == victim_before || home == victim_after);
                if on_victim {
                    tally.failed_on_victim.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.failed_elsewhere.fetch_add(1, Ordering::Relaxed);
                    tally.failures.lock().unwrap().push(format!("{what} (home {home:?})"));
                }
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_revives_and_drains_under_load_lose_nothing_and_leak_nothing() {
    let length = soak_length();
    let fds_before = open_fds();
    let tasks_before = tokio::runtime::Handle::current().metrics().num_alive_tasks();

    let mut config = test_config();
    config.drain.timeout_secs = 1;
    let lb = Lb::start(config).await;
    let names = ["api-1", "api-2", "api-3"];
    for n in names {
        lb.wait_state(n, "up", Duration::from_secs(3)).await;
    }
    let chaos = Arc::new(Chaos::default());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client(
                lb.proxy,
                Arc::clone(&chaos),
                Arc::clone(&tally),
                Arc::clone(&stop),
            ))
        })
        .collect();

    // Every cycle: kill one backend, revive it, drain the next, bring it back.
    let started = tokio::time::Instant::now();
    let mut rss_warm = 0;
    let mut peak_rss = 0;
    let cycles = (length.as_secs() / CYCLE.as_secs()).max(2) as usize;
    let mut cycle = 0;
    while cycle < cycles {
        let victim = names[cycle % 3];
        let drained = names[(cycle + 1) % 3];
        *chaos.killing.lock().unwrap() = Some(victim.to_owned());
        lb.handle.execute(Command::Kill(victim.into())).await.unwrap();
        tokio::time::sleep(CYCLE / 5).await;
        lb.handle.execute(Command::Revive(victim.into())).await.unwrap();
        lb.wait_state(victim, "up", Duration::from_secs(3)).await;
        *chaos.killing.lock().unwrap() = None;
        tokio::time::sleep(CYCLE / 5).await;
        lb.handle
            .execute(Command::Drain {
                backend: drained.into(),
                timeout: Some(Duration::from_secs(1)),
            })
            .await
            .unwrap();
        lb.wait_state(drained, "drained", Duration::from_secs(4)).await;
        lb.handle.execute(Command::Revive(drained.into())).await.unwrap();
        lb.wait_state(drained, "up", Duration::from_secs(3)).await;
        let rest = (CYCLE * (cycle as u32 + 1)).saturating_sub(started.elapsed());
        tokio::time::sleep(rest).await;
        let rss = rss_kib();
        peak_rss = peak_rss.max(rss);
        if cycle == 0 {
            rss_warm = rss;
        }
        cycle += 1;
    }
    let rss_end = rss_kib();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("clients stop")
            .unwrap();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let on_victim = tally.failed_on_victim.load(Ordering::Relaxed);
    let elsewhere = tally.failures.lock().unwrap().clone();
    let stats = lb.handle.stats_view();
    println!(
        "soak {length:?}, {cycle} cycles: {ok} ok, {on_victim} failed on the killed backend, {} elsewhere; \
         {} redispatched, {} reassigned; RSS {rss_warm} KiB after warm-up, {rss_end} KiB at the end, peak {peak_rss} KiB",
        elsewhere.len(),
        stats.redispatched,
        stats.router.reassigned,
    );
    assert!(ok > 1000, "only {ok} requests answered");
    assert!(
        elsewhere.is_empty(),
        "failures away from the killed backend: {elsewhere:?}"
    );
    let drift = rss_end as f64 / rss_warm as f64;
    assert!((0.9..=1.1).contains(&drift), "RSS {rss_warm} → {rss_end} KiB");

    // Everything closes: connections, then tasks and descriptors.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while lb.handle.stats_view().client_connections != 0 || lb.handle.backends_view().iter().any(|b| b.active != 0) {
        assert!(tokio::time::Instant::now() < deadline, "connections left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.handle.shutdown().await;
    drop(lb);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let fds = open_fds();
        if tasks <= tasks_before && fds <= fds_before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leak: {tasks} tasks (were {tasks_before}), {fds} descriptors (were {fds_before})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

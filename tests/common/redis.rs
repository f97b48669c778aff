//! A redis-server of a test's own on a loopback port chosen by the OS.
//! `.ci/run` installs redis-server; elsewhere a test without it is skipped
//! with a note.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ringside::config::{BackendEntry, Config};
use ringside::demo::backend::DemoBackend;
use ringside::router::affinity::AffinityMode;

use super::test_config;

const SECS: Duration = Duration::from_secs(1);

/// A redis-server of the test's own, killed on drop.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Option<Redis> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is required under CI (.ci/run installs it)"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis { port, child: None };
        redis.restart();
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + 10 * SECS;
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (STOP, CONT) to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command in Redis's inline form; the first line of the answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(5 * SECS)).ok()?;
        s.write_all(format!("{}\r\n", args.join(" ")).as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    /// Every session entry: key and value (`KEYS`, then `GET` each).
    pub fn sessions(&self) -> Vec<(String, String)> {
        use std::io::{BufRead, BufReader, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return Vec::new();
        };
        s.set_read_timeout(Some(5 * SECS)).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let line = |reader: &mut BufReader<std::net::TcpStream>| {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            l.trim_end().to_owned()
        };
        s.write_all(b"KEYS ringside:session:*\r\n").unwrap();
        let count: usize = line(&mut reader).trim_start_matches('*').parse().unwrap();
        let keys: Vec<String> = (0..count)
            .map(|_| {
                line(&mut reader);
                line(&mut reader)
            })
            .collect();
        keys.into_iter()
            .map(|key| {
                s.write_all(format!("GET {key}\r\n").as_bytes()).unwrap();
                line(&mut reader);
                let value = line(&mut reader);
                (key, value)
            })
            .collect()
    }

    pub fn keys(&self) -> u64 {
        let answer = self.command(&["DBSIZE"]).unwrap_or_default();
        answer.trim_start_matches(':').parse().unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.stop();
    }
}

/// Demo backends api-1, api-2 and api-3 on loopback ports of their own.
pub async fn three_backends() -> Vec<DemoBackend> {
    let mut backends = Vec::new();
    for name in ["api-1", "api-2", "api-3"] {
        backends.push(DemoBackend::start(name, "127.0.0.1:0".parse().unwrap()).await.unwrap());
    }
    backends
}

/// A balancer's config in front of `backends` in `mode`, sharing its
/// session table through `redis` when given.
pub fn shared_config(redis: Option<&Redis>, backends: &[DemoBackend], mode: AffinityMode) -> Config {
    let mut config = test_config();
    config.backends = backends
        .iter()
        .map(|b| BackendEntry {
            name: b.name().into(),
            addr: b.addr(),
            weight: 1,
        })
        .collect();
    config.affinity.mode = mode;
    config.sessions.store = redis.map(Redis::url);
    config
}

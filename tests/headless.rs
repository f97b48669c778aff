//! The built binary: headless start-up and shutdown, config errors, a
//! demo backend as its own process, SIGHUP (reload, ignore, or with the
//! dashboard a clean shutdown) and the cookie secret kept across restarts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary, with a state directory of its own (where the cookie secret is kept).
fn ringside(args: &[&str]) -> Command {
    ringside_in(&temp_dir("state"), args)
}

/// The binary, keeping its state (the cookie secret) in `state`.
fn ringside_in(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringside"));
    c.args(args)
        .env_remove("RINGSIDE_COOKIE_SECRET")
        .env("XDG_STATE_HOME", state);
    c
}

/// A fresh directory name under the system's temporary directory.
fn temp_dir(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringside-{what}-{}-{}", std::process::id(), fastrand::u64(..)))
}

/// A child process killed when the test ends, passed or not.
struct Reaped(Child);

impl Reaped {
    fn spawn(command: &mut Command) -> Reaped {
        Reaped(command.spawn().expect("the binary starts"))
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first stdout line within a time limit.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("a first line within 20 s")
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn headless_prints_its_addresses_serves_and_stops_on_sigterm() {
    let mut child = Reaped::spawn(
        ringside(&[
            "--headless",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--demo-port",
            "0",
            "--demo",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()),
    );
    let line = first_line(&mut child);
    let v: Value = serde_json::from_str(&line).expect("one JSON line");
    assert!(line.starts_with(r#"{"proxy":"127.0.0.1:"#), "{line}");
    let proxy = v["proxy"].as_str().unwrap();
    let admin = v["admin"].as_str().unwrap();
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["name"], "api-1");
    assert!(http_get(proxy, "/").contains("Backend Server api-"));
    assert!(http_get(admin, "/api/backends").contains("\"api-2\""));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("cookie secret kept in") && err.contains("ringside-state-"),
        "where the secret is kept is said: {err}"
    );
}

#[test]
fn bad_config_names_the_file_the_key_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("ringside-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[health]\nfall = 0\n").unwrap();
    let out = ringside(&["--headless", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("health.fall") && err.contains("1 to 100"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    std::fs::write(&file, "[routing]\nplacement = \"modulo\"\n").unwrap();
    let out = ringside(&["--headless", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("placement"), "{err}");
    let out = ringside(&["--headless", "--config", "/nonexistent/ringside.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let out = ringside(&["--headless", "--admin", "0.0.0.0:0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = ringside(&[
        "--headless",
        "--listen",
        &addr,
        "--admin",
        "127.0.0.1:0",
        "--demo-port",
        "0",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("proxy"), "{err}");
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/ringside.toml");
    ringside::config::Config::load(std::path::Path::new(path)).expect("assets/ringside.toml is valid");
}

#[test]
fn a_demo_backend_runs_as_its_own_process() {
    let mut child = Reaped::spawn(
        ringside(&["demo-backend", "--name", "api-9", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let line = first_line(&mut child);
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    assert!(http_get(&addr, "/").contains("Backend Server api-9"), "{line}");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn without_a_terminal_dashboard_it_points_to_headless() {
    let out = ringside(&["--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--headless"));
}

#[test]
fn a_second_ringside_cannot_share_the_proxy_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut first = Reaped::spawn(
        ringside(&[
            "--headless",
            "--listen",
            &port,
            "--admin",
            "127.0.0.1:0",
            "--demo-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null()),
    );
    first_line(&mut first);
    let second = ringside(&[
        "--headless",
        "--listen",
        &port,
        "--admin",
        "127.0.0.1:0",
        "--demo-port",
        "0",
    ])
    .output()
    .unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success(), "the second instance started on the same port");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&port) && err.contains("proxy"), "{err}");
}

/// A headless ringside whose stderr (its log) is collected as it comes.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    proxy: String,
    admin: String,
}

impl Running {
    /// Starts `command` and waits for its addresses line.
    fn start(mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let line = first_line(&mut child);
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no addresses line: {line:?}; log:\n{}", log.lock().unwrap())
        });
        Running {
            proxy: v["proxy"].as_str().unwrap().to_owned(),
            admin: v["admin"].as_str().unwrap().to_owned(),
            child,
            log,
        }
    }

    /// Sends a signal (`HUP`, `TERM`).
    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits up to 10 s for a log line holding `what`, and returns that line.
    fn wait_log(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log.lock().unwrap().lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the log never said {what:?}:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// JSON from its admin API.
    fn admin_json(&self, path: &str) -> Value {
        let answer = http_get(&self.admin, path);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|_| panic!("GET {path}: {answer}"))
    }

    /// (name, weight) of every backend, from the admin API.
    fn backends(&self) -> Vec<(String, u64)> {
        self.admin_json("/api/backends")
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_owned(), b["weight"].as_u64().unwrap()))
            .collect()
    }

    /// Stops it with SIGTERM and returns its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        wait_exit(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file for a headless ringside over external backends.
fn config_file(backends: &[(&str, std::net::SocketAddr, u32)], extra: &str) -> String {
    let mut text = String::from("listen = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n");
    for (name, addr, weight) in backends {
        text.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\naddr = \"{addr}\"\nweight = {weight}\n\n"
        ));
    }
    text.push_str(extra);
    text
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_file_keeps_the_running_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|n| {
        rt.block_on(ringside::demo::backend::DemoBackend::start(
            n,
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap()
    });
    let dir = temp_dir("reload");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringside.toml");
    let before = config_file(
        &[("a", a.addr(), 1), ("b", b.addr(), 1)],
        "[health]\ninterval_ms = 200\nrise = 1\n\n[routing]\nplacement = \"ring\"\n",
    );
    std::fs::write(&file, &before).unwrap();
    let running = Running::start(ringside(&["--headless", "--config", file.to_str().unwrap()]));
    assert_eq!(running.backends(), [("a".to_owned(), 1), ("b".to_owned(), 1)]);

    // Add c, remove b, reweight a, and change health, affinity and placement.
    let after = config_file(
        &[("a", a.addr(), 5), ("c", c.addr(), 1)],
        "[health]\ninterval_ms = 300\nrise = 1\n\n[routing]\nplacement = \"round-robin\"\n\n[affinity]\nmode = \"source-ip\"\n",
    );
    std::fs::write(&file, &after).unwrap();
    running.signal("HUP");
    let line = running.wait_log("SIGHUP: configuration reloaded");
    for change in [
        "removed b",
        "added c at",
        "a weight 1 → 5",
        "health: GET /health every 300 ms",
        "placement round-robin",
        "affinity is now source-ip",
    ] {
        assert!(line.contains(change), "{change:?} missing: {line}");
    }
    assert_eq!(running.backends(), [("a".to_owned(), 5), ("c".to_owned(), 1)]);
    let stats = running.admin_json("/api/stats");
    assert_eq!(
        (stats["placement"].as_str(), stats["affinity"].as_str()),
        (Some("round-robin"), Some("source-ip"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.admin_json("/api/backends/c")["state"] != "up" {
        assert!(Instant::now() < deadline, "c never came up");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A bad file is refused with its name, key and reason; the running configuration stays.
    std::fs::write(&file, after.replace("rise = 1", "rise = 1\nfall = 0")).unwrap();
    running.signal("HUP");
    let line = running.wait_log("was not reloaded");
    assert!(
        line.contains("ringside.toml") && line.contains("health.fall") && line.contains("1 to 100"),
        "{line}"
    );
    assert_eq!(running.backends(), [("a".to_owned(), 5), ("c".to_owned(), 1)]);
    assert_eq!(running.admin_json("/api/stats")["placement"], "round-robin");
    assert!(
        http_get(&running.proxy, "/").starts_with("HTTP/1.1 200"),
        "still serving"
    );
    let status = running.stop();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
    for backend in [a, b, c] {
        rt.block_on(backend.kill());
    }
}

#[test]
fn without_a_config_file_sighup_is_logged_and_ignored() {
    let running = Running::start(ringside(&[
        "--headless",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--demo-port",
        "0",
    ]));
    running.signal("HUP");
    running.wait_log("SIGHUP ignored");
    assert!(
        http_get(&running.proxy, "/").contains("Backend Server api-"),
        "still serving"
    );
    assert_eq!(running.backends().len(), 3);
    let status = running.stop();
    assert!(status.success(), "{status:?}");
}

/// GET / on the proxy with a balancer cookie (or none): the backend that
/// answered and the `Set-Cookie` it carried.
fn visit(proxy: &str, cookie: Option<&str>) -> (String, Option<String>) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cookie = cookie.map(|c| format!("cookie: {c}\r\n")).unwrap_or_default();
    write!(s, "GET / HTTP/1.1\r\nhost: a\r\n{cookie}connection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let header = |name: &str| {
        answer
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(name))
            .map(|l| l[name.len()..].trim().to_owned())
    };
    let backend = header("x-backend:").unwrap_or_else(|| panic!("{answer}"));
    let set = header("set-cookie:").map(|v| v.split(';').next().unwrap().to_owned());
    (backend, set)
}

#[test]
fn the_cookie_secret_survives_a_restart_unless_ephemeral() {
    let state = temp_dir("secret");
    let args = [
        "--headless",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--demo-port",
        "0",
    ];
    let first = Running::start(ringside_in(&state, &args));
    let visits: Vec<(String, String)> = (0..6)
        .map(|_| {
            let (backend, cookie) = visit(&first.proxy, None);
            (backend, cookie.expect("a balancer cookie"))
        })
        .collect();
    assert!(first.stop().success());
    let file = state.join("ringside").join("cookie-secret");
    let kept = std::fs::read_to_string(&file).expect("the secret is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // A restart on the same state: every cookie routes where it did, and is not rewritten.
    let second = Running::start(ringside_in(&state, &args));
    for (backend, cookie) in &visits {
        let (now, set) = visit(&second.proxy, Some(cookie));
        assert_eq!(&now, backend, "{cookie} moved");
        assert_eq!(set, None, "{cookie} was rewritten");
    }
    assert!(second.stop().success());

    // With --ephemeral-secret the old cookies mean nothing.
    let mut ephemeral_args = args.to_vec();
    ephemeral_args.push("--ephemeral-secret");
    let third = Running::start(ringside_in(&state, &ephemeral_args));
    for (_, cookie) in &visits {
        let (_, set) = visit(&third.proxy, Some(cookie));
        let set = set.expect("a fresh cookie");
        assert_ne!(&set, cookie);
    }
    assert!(third.admin_json("/api/stats")["forged_cookies"].as_u64().unwrap() >= 6);
    assert!(third.stop().success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        kept,
        "the kept secret was touched"
    );
    let _ = std::fs::remove_dir_all(&state);
}

/// The pid of the process whose command line holds `needle` (not a shell).
#[cfg(target_os = "linux")]
fn pid_with_arg(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first()?.ends_with("/ringside") && args.iter().any(|a| a.contains(needle))).then_some(pid)
    })
}

/// A tmux server of its own (named after the session), killed when dropped.
#[cfg(target_os = "linux")]
struct TmuxSession(String);

#[cfg(target_os = "linux")]
impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).status();
    }
}

/// (Linux: the process's signal dispositions are read from /proc.)
#[cfg(target_os = "linux")]
#[test]
fn closing_the_dashboards_terminal_is_a_clean_shutdown() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "tmux is required under CI");
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = temp_dir("hangup");
    std::fs::create_dir_all(&dir).unwrap();
    let (log, status) = (dir.join("dashboard.log"), dir.join("status"));
    // No synthetic clients: the only request is the test's.
    let config = dir.join("quiet.toml");
    std::fs::write(&config, "[traffic]\nenabled = false\n").unwrap();
    // The wrapper shell ignores the hangup so that it lives to write the
    // exit status; ringside catches SIGHUP itself (checked below).
    let script = format!(
        "trap '' HUP; XDG_STATE_HOME={} {} --config {} --listen 127.0.0.1:0 --admin 127.0.0.1:0 --demo-port 0 --log-file {}; echo $? > {}",
        dir.join("state").display(),
        env!("CARGO_BIN_EXE_ringside"),
        config.display(),
        log.display(),
        status.display()
    );
    let session = TmuxSession(format!("ringside-hangup-{}", std::process::id()));
    let started = Command::new("tmux")
        .args([
            "-L",
            &session.0,
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "48",
            &script,
        ])
        .status()
        .unwrap();
    assert!(started.success());
    // The addresses, off the dashboard's header.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (proxy, admin) = loop {
        let out = Command::new("tmux")
            .args(["-L", &session.0, "capture-pane", "-p", "-t", &session.0])
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = |label: &str| {
            screen
                .split(label)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        };
        if let (Some(p), Some(a)) = (after(" proxy "), after(" admin ")) {
            break (p, a);
        }
        assert!(Instant::now() < deadline, "no dashboard:\n{screen}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = pid_with_arg(log.to_str().unwrap()).expect("ringside's pid");
    let signals = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let caught = signals
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(caught & 1, 1, "SIGHUP is not caught by ringside:\n{signals}");

    // A request in flight when the terminal goes away.
    let in_flight = {
        let proxy = proxy.clone();
        std::thread::spawn(move || http_get(&proxy, "/sleep?ms=800"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http_get(&admin, "/api/backends");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let backends: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
        if backends
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["active"].as_u64() > Some(0))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the request never got in flight");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(session);
    let answer = in_flight.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the request in flight was cut: {answer:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Ok(code) = std::fs::read_to_string(&status)
            && !code.trim().is_empty()
        {
            break code.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "ringside did not exit; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        code,
        "0",
        "exit status after the hangup; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(pid_with_arg(log.to_str().unwrap()).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

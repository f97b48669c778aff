//! The built binary: headless start-up and shutdown, config errors, and a
//! demo backend as its own process.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary, with a state directory of its own (where the cookie secret is kept).
fn ringside(args: &[&str]) -> Command {
    let state = std::env::temp_dir().join(format!("ringside-state-{}-{}", std::process::id(), fastrand::u64(..)));
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringside"));
    c.args(args)
        .env_remove("RINGSIDE_COOKIE_SECRET")
        .env("XDG_STATE_HOME", state);
    c
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
    let mut child = ringside(&[
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
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
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
    let mut child = ringside(&["demo-backend", "--name", "api-9", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    let mut first = ringside(&[
        "--headless",
        "--listen",
        &port,
        "--admin",
        "127.0.0.1:0",
        "--demo-port",
        "0",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
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

//! End to end in a real terminal: the built binary in tmux, driven by keys,
//! read off the captured screen. `.ci/run` installs tmux; elsewhere the test
//! is skipped with a note when tmux is missing.

use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
    /// One tmux test at a time: parallel first starts race for the server.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Tmux {
    fn start(command: &str) -> Option<Tmux> {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "tmux is required under CI (.ci/run installs it)"
            );
            eprintln!("skipped: tmux is not installed");
            return None;
        }
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = format!("ringside-test-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "48", command])
            .status()
            .unwrap();
        assert!(status.success());
        Some(Tmux { session, _turn: turn })
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.session, keys])
            .status()
            .unwrap();
    }

    /// Waits until `check` holds on the screen.
    fn wait(&self, what: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// The backends-table row of `name`: the line that names it with a state.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.contains(&format!("{name} "))
            && ["▲ up", "▼ down", "◐ draining", "◌ drained", "✖ killed", "○ removed"]
                .iter()
                .any(|s| l.contains(s))
    })
}

fn state_of(screen: &str, name: &str, state: &str) -> bool {
    row(screen, name).is_some_and(|r| r.contains(state))
}

/// Each key is pressed once the state it acts on is on the screen: a drain
/// (1 s here) ends `drained`, which `u`, `x` and `r` each act on.
#[test]
fn keys_drain_kill_and_revive_a_backend_and_q_leaves_a_clean_shell() {
    let log = std::env::temp_dir().join(format!("ringside-tui-{}.log", std::process::id()));
    let config = std::env::temp_dir().join(format!("ringside-tui-{}.toml", std::process::id()));
    std::fs::write(&config, "[drain]\ntimeout_secs = 1\n").unwrap();
    let command = format!(
        "{} --config {} --ephemeral-secret --demo-port 0 --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-file {}; echo EXITED $?; sleep 30",
        env!("CARGO_BIN_EXE_ringside"),
        config.display(),
        log.display()
    );
    let Some(tmux) = Tmux::start(&command) else { return };
    let long = Duration::from_secs(20);
    tmux.wait("the ring and three backends", long, |s| {
        s.contains("ring") && ["api-1", "api-2", "api-3"].iter().all(|n| state_of(s, n, "▲ up"))
    });
    tmux.keys("j");
    tmux.wait("api-2 selected", long, |s| {
        row(s, "api-2").is_some_and(|r| r.contains("›api-2"))
    });
    // d: the drain ends (empty, or at its 1 s timeout) and leaves it drained; u: back.
    tmux.keys("d");
    tmux.wait("api-2 drained", long, |s| state_of(s, "api-2", "◌ drained"));
    tmux.keys("u");
    tmux.wait("api-2 up after u", long, |s| state_of(s, "api-2", "▲ up"));
    // x on a drained backend kills it at once; r brings it back.
    tmux.keys("d");
    tmux.wait("api-2 drained again", long, |s| state_of(s, "api-2", "◌ drained"));
    tmux.keys("x");
    tmux.wait("api-2 killed while drained", long, |s| state_of(s, "api-2", "✖ killed"));
    tmux.keys("r");
    tmux.wait("api-2 up after r", long, |s| state_of(s, "api-2", "▲ up"));
    // x on a serving backend: the balancer finds it dead, and says how fast.
    tmux.keys("x");
    let killed = tmux.wait("api-2 found dead", long, |s| {
        row(s, "api-2").is_some_and(|r| r.contains("✖ killed") && r.contains("detected in"))
    });
    assert!(row(&killed, "api-2").is_some(), "{killed}");
    // The events pane may already have scrolled past the kill (every moved
    // session is an event); the log file keeps it.
    let deadline = Instant::now() + long;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("killed api-2") {
            break;
        }
        assert!(Instant::now() < deadline, "the log never said `killed api-2`:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys("r");
    tmux.wait("api-2 back up", long, |s| state_of(s, "api-2", "▲ up"));
    tmux.keys("q");
    let after = tmux.wait("a clean exit", long, |s| s.contains("EXITED"));
    assert!(after.contains("EXITED 0"), "{after}");
    assert!(after.contains("ringside: the log is in"), "{after}");
    assert!(
        !after.contains("┌ backends"),
        "the dashboard was left on the screen:\n{after}"
    );
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(config);
}

#[test]
fn a_bad_config_is_reported_without_touching_the_terminal() {
    let file = std::env::temp_dir().join(format!("ringside-tui-bad-{}.toml", std::process::id()));
    std::fs::write(&file, "[routing]\nvnodes = 0\n").unwrap();
    let command = format!(
        "printf 'before\\n'; {} --config {}; echo EXITED $?; sleep 30",
        env!("CARGO_BIN_EXE_ringside"),
        file.display()
    );
    let Some(tmux) = Tmux::start(&command) else { return };
    let screen = tmux.wait("the error", Duration::from_secs(20), |s| s.contains("EXITED"));
    assert!(screen.contains("EXITED 1"), "{screen}");
    assert!(
        screen.contains("routing.vnodes") && screen.contains("use 1 to 10000"),
        "{screen}"
    );
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.first(), Some(&"before"), "the screen was cleared:\n{screen}");
    let _ = std::fs::remove_file(file);
}

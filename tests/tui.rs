//! End to end in a real terminal: the built binary in tmux, driven by keys,
//! read off the captured screen. `.ci/run` installs tmux; elsewhere the
//! tests are skipped with a note when tmux is missing. Every wait polls the
//! screen (or the log file) against a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);

struct Tmux {
    session: String,
    /// One tmux test at a time: each runs a whole demo world, and the
    /// screens are read against deadlines.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Option<Tmux> {
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
        let (w, h) = (width.to_string(), height.to_string());
        let status = Command::new("tmux")
            .args([
                "-L",
                &session,
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &w,
                "-y",
                &h,
                command,
            ])
            .status()
            .unwrap();
        assert!(status.success());
        Some(Tmux { session, _turn: turn })
    }

    /// A tmux command on this test's own server: a shared server may be
    /// exiting as the previous test's session ends, and refuse the next.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.session]);
        command
    }

    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.tmux()
            .args(["send-keys", "-t", &self.session, "--", keys])
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

    /// Checks that `check` stays true for all of `period`, every 100 ms.
    fn holds(&self, what: &str, period: Duration, check: impl Fn(&str) -> bool) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            let screen = self.screen();
            assert!(check(&screen), "{what} stopped holding; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// The dashboard on the demo world, on ports the OS chooses, logging to a
/// file of its own, once its three backends are up; `EXITED <status>`
/// shows when it ends.
fn dashboard(width: u16, height: u16) -> Option<(Tmux, PathBuf)> {
    dashboard_with(width, height, "")
}

/// [`dashboard`] with `config` as its configuration file (TOML) and a
/// cookie secret of its own (none is kept in the user's state directory).
fn dashboard_with(width: u16, height: u16, config: &str) -> Option<(Tmux, PathBuf)> {
    dashboard_in(width, height, config, &std::env::temp_dir())
}

/// A file of this test run's own in the temporary directory.
fn temp_file(ext: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringside-tui-{}-{n}.{ext}", std::process::id()))
}

/// [`dashboard_with`], started in the directory `dir`.
fn dashboard_in(width: u16, height: u16, config: &str, dir: &Path) -> Option<(Tmux, PathBuf)> {
    let (log, config_file) = (temp_file("log"), temp_file("toml"));
    std::fs::write(&config_file, config).unwrap();
    let command = format!(
        "cd {} && {} --config {} --ephemeral-secret --demo-port 0 --listen 127.0.0.1:0 --admin 127.0.0.1:0 --log-file {}; echo EXITED $?; sleep 30",
        dir.display(),
        env!("CARGO_BIN_EXE_ringside"),
        config_file.display(),
        log.display()
    );
    let tmux = Tmux::start(&command, width, height)?;
    tmux.wait("three backends up", LONG, |s| {
        ["api-1", "api-2", "api-3"].iter().all(|n| state_of(s, n, "▲ up"))
    });
    Some((tmux, log))
}

/// Waits until the log file says `text`.
fn wait_for_log(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if content.contains(text) {
            return content;
        }
        assert!(Instant::now() < deadline, "the log never said {text:?}:\n{content}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quit_cleanly(tmux: &Tmux, log: &Path) {
    tmux.keys("q");
    let after = tmux.wait("a clean exit", LONG, |s| s.contains("EXITED"));
    assert!(after.contains("EXITED 0"), "{after}");
    assert!(after.contains("ringside: the log is in"), "{after}");
    assert!(
        !after.contains("┌ backends"),
        "the dashboard was left on the screen:\n{after}"
    );
    let _ = std::fs::remove_file(log);
}

/// The backends-table row of `name`: the line that names it with a state.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.contains(&format!("{name} "))
            && ["▲ up", "▼ down", "◐ draining", "✖ killed", "○ removed", "◌ drained"]
                .iter()
                .any(|s| l.contains(s))
    })
}

fn state_of(screen: &str, name: &str, state: &str) -> bool {
    row(screen, name).is_some_and(|r| r.contains(state))
}

/// The keys line at the bottom.
fn footer(screen: &str) -> &str {
    screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The flash line, just above the keys.
fn flash(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .nth(1)
        .unwrap_or("")
}

/// Each key is pressed once the state it acts on is on the screen: a drain
/// (1 s here) ends `drained`, which `u`, `x` and `r` each act on.
#[test]
fn keys_drain_kill_and_revive_a_backend_and_q_leaves_a_clean_shell() {
    let Some((tmux, log)) = dashboard_with(160, 48, "[drain]\ntimeout_secs = 1\n") else {
        return;
    };
    tmux.keys("j");
    tmux.wait("api-2 selected", LONG, |s| {
        row(s, "api-2").is_some_and(|r| r.contains("›api-2"))
    });
    // d: the drain ends (empty, or at its 1 s timeout) and leaves it drained; u: back.
    tmux.keys("d");
    tmux.wait("api-2 drained", LONG, |s| state_of(s, "api-2", "◌ drained"));
    tmux.keys("u");
    tmux.wait("api-2 up after u", LONG, |s| state_of(s, "api-2", "▲ up"));
    // x on a drained backend kills it at once; r brings it back.
    tmux.keys("d");
    tmux.wait("api-2 drained again", LONG, |s| state_of(s, "api-2", "◌ drained"));
    tmux.keys("x");
    tmux.wait("api-2 killed while drained", LONG, |s| state_of(s, "api-2", "✖ killed"));
    tmux.keys("r");
    tmux.wait("api-2 up after r", LONG, |s| state_of(s, "api-2", "▲ up"));
    // x on a serving backend: the balancer finds it dead, and says how fast.
    tmux.keys("x");
    let killed = tmux.wait("api-2 found dead", LONG, |s| {
        row(s, "api-2").is_some_and(|r| r.contains("✖ killed") && r.contains("detected in"))
    });
    assert!(row(&killed, "api-2").is_some(), "{killed}");
    // The events pane may already have scrolled past the kill; the log keeps it.
    wait_for_log(&log, "killed api-2");
    tmux.keys("r");
    let up = tmux.wait("api-2 back up", LONG, |s| state_of(s, "api-2", "▲ up"));
    assert!(!row(&up, "api-2").unwrap().contains("detected in"), "{up}");
    quit_cleanly(&tmux, &log);
}

#[test]
fn esc_clears_the_filter_and_never_quits() {
    let Some((tmux, log)) = dashboard(80, 24) else { return };
    let idle = tmux.screen();
    assert!(footer(&idle).ends_with("? help · q quit"), "{idle}");
    tmux.keys("/");
    tmux.keys("3");
    tmux.wait("the filter being typed", LONG, |s| footer(s).contains("filter: 3▏"));
    tmux.keys("Escape");
    tmux.wait("the filter cleared", LONG, |s| {
        footer(s).ends_with("? help · q quit") && !s.contains("/3")
    });
    // Nothing left to close: Esc says how to quit, and does not.
    tmux.keys("Escape");
    tmux.wait("the hint", LONG, |s| flash(s).contains("q quits"));
    tmux.holds("the dashboard", Duration::from_secs(1), |s| {
        !s.contains("EXITED") && s.contains("┌ backends")
    });
    quit_cleanly(&tmux, &log);
}

#[test]
fn keys_behind_the_help_do_nothing() {
    let Some((tmux, log)) = dashboard(160, 48) else { return };
    tmux.keys("?");
    tmux.wait("the help", LONG, |s| s.contains(" help ") && s.contains("Esc"));
    tmux.keys("j");
    tmux.keys("x");
    tmux.keys("Escape");
    // Keys are handled in order: once the help is closed, j and x were seen.
    let after = tmux.wait("the help closed", LONG, |s| footer(s).contains("x kill"));
    assert!(
        row(&after, "api-1").unwrap().contains("›api-1"),
        "the selection moved:\n{after}"
    );
    for name in ["api-1", "api-2", "api-3"] {
        assert!(state_of(&after, name, "▲ up"), "{name} was touched:\n{after}");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("killed"), "{text}");
    quit_cleanly(&tmux, &log);
}

#[test]
fn five_fast_plus_keys_give_weight_six() {
    let Some((tmux, log)) = dashboard(160, 48) else { return };
    tmux.keys("j");
    tmux.wait("api-2 selected", LONG, |s| {
        row(s, "api-2").is_some_and(|r| r.contains("›api-2"))
    });
    // Five presses in one burst, faster than any snapshot.
    tmux.keys("+++++");
    tmux.wait("the flash of the last one", LONG, |s| {
        flash(s).contains("api-2: weight 6")
    });
    let text = wait_for_log(&log, "api-2: weight 6");
    let weights: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("api-2: weight ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(weights, ["2", "3", "4", "5", "6"], "{text}");
    // At a bound, the refusal says why.
    tmux.keys("-----");
    tmux.keys("-");
    tmux.wait("the refusal", LONG, |s| flash(s).contains("already 1"));
    quit_cleanly(&tmux, &log);
}

#[test]
fn freeze_keeps_every_number() {
    let Some((tmux, log)) = dashboard(160, 48) else { return };
    tmux.wait("traffic", LONG, |s| {
        s.split("req/s ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|n| n != "0")
    });
    tmux.keys(" ");
    let frozen = tmux.wait("frozen", LONG, |s| s.contains("❚❚ FROZEN"));
    let figures = |s: &str| -> Vec<String> {
        // Everything but the flash line, which reports keys, not figures.
        let flash_line = flash(s).to_owned();
        s.lines().filter(|l| *l != flash_line).map(str::to_owned).collect()
    };
    let before = figures(&frozen);
    tmux.holds("every figure as frozen", Duration::from_secs(3), |s| {
        figures(s) == before
    });
    tmux.keys(" ");
    tmux.wait("live again", LONG, |s| !s.contains("FROZEN") && figures(s) != before);
    quit_cleanly(&tmux, &log);
}

#[test]
fn delete_asks_before_removing() {
    let Some((tmux, log)) = dashboard(160, 48) else { return };
    tmux.keys("G");
    tmux.wait("api-3 selected", LONG, |s| {
        row(s, "api-3").is_some_and(|r| r.contains("›api-3"))
    });
    tmux.keys("DC");
    tmux.wait("the question", LONG, |s| s.contains("Remove api-3 for good?"));
    tmux.keys("n");
    let kept = tmux.wait("the answer", LONG, |s| flash(s).contains("remove api-3: not done"));
    assert!(row(&kept, "api-3").is_some(), "{kept}");
    tmux.keys("DC");
    tmux.wait("the question again", LONG, |s| s.contains("Remove api-3 for good?"));
    tmux.keys("y");
    tmux.wait("api-3 removed", LONG, |s| {
        row(s, "api-3").is_none() && flash(s).contains("removed api-3")
    });
    quit_cleanly(&tmux, &log);
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
    let Some(tmux) = Tmux::start(&command, 160, 48) else {
        return;
    };
    let screen = tmux.wait("the error", LONG, |s| s.contains("EXITED"));
    assert!(screen.contains("EXITED 1"), "{screen}");
    assert!(
        screen.contains("routing.vnodes") && screen.contains("use 1 to 10000"),
        "{screen}"
    );
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.first(), Some(&"before"), "the screen was cleared:\n{screen}");
    let _ = std::fs::remove_file(file);
}

/// The backend a screen line names after `prefix`, e.g. `api-2`.
fn backend_after<'a>(screen: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &screen[screen.find(prefix)? + prefix.len()..];
    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next()
}

/// Selects backend `name` in the backends table (`api-N` is row N).
fn select(tmux: &Tmux, name: &str) {
    let n: usize = name.trim_start_matches("api-").parse().unwrap();
    tmux.keys("g");
    for _ in 1..n {
        tmux.keys("j");
    }
    tmux.wait(&format!("{name} selected"), LONG, |s| {
        row(s, name).is_some_and(|r| r.contains(&format!("›{name}")))
    });
}

#[test]
fn a_key_typed_in_the_probe_shows_its_hash_and_walk() {
    let Some((tmux, log)) = dashboard(80, 24) else { return };
    tmux.keys("i");
    tmux.wait("the probe", LONG, |s| {
        s.contains("probe a key") && footer(s).contains("Enter probe")
    });
    tmux.keys("visitor-3");
    tmux.wait("the key typed", LONG, |s| s.contains("key: visitor-3▏"));
    tmux.keys("Enter");
    // The real router's hash of the key: crc32, and its walk to an owner.
    let position = crc32fast::hash(b"visitor-3");
    let grouped = position
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    let answer = tmux.wait("the walk", LONG, |s| s.contains("walk clockwise under ring"));
    assert!(answer.contains(&format!("{position:#010x}")), "{answer}");
    assert!(answer.contains(&grouped), "{grouped}:\n{answer}");
    let owner = backend_after(&answer, "owner: ").expect("an owner");
    assert!(["api-1", "api-2", "api-3"].contains(&owner), "{answer}");
    assert!(answer.contains('◇'), "the key on the ring:\n{answer}");
    // Esc closes it; the dashboard is back.
    tmux.keys("Escape");
    tmux.wait("the probe closed", LONG, |s| {
        !s.contains("probe a key") && footer(s).contains("i probe")
    });
    quit_cleanly(&tmux, &log);
}

#[test]
fn a_followed_demo_client_shows_its_move_after_a_kill() {
    let Some((tmux, log)) = dashboard(80, 24) else { return };
    // A client the sessions table shows (at 80×24 only a few rows fit).
    let table = tmux.wait("a client with a session", LONG, |s| s.contains(" client-"));
    let client = format!("client-{}", backend_after(&table, " client-").unwrap());
    tmux.keys("f");
    tmux.wait("the follow prompt", LONG, |s| footer(s).contains("Enter follow"));
    tmux.keys(&client);
    tmux.keys("Enter");
    let panel = tmux.wait("the panel", LONG, |s| {
        s.contains(&format!("following {client}")) && s.contains("lived on")
    });
    let home = backend_after(&panel, "│ on ").expect("its backend").to_owned();
    assert!(panel.contains('◎'), "its dot on the ring:\n{panel}");
    select(&tmux, &home);
    tmux.keys("x");
    // Killed, or redispatched when one of its requests got there first.
    let moved = tmux.wait("the move in its history", LONG, |s| {
        let line = s.lines().find(|l| l.contains(&format!("moved {home} → ")));
        line.is_some_and(|l| l.contains(&format!("{home} killed")) || l.contains("by redispatch"))
    });
    let now = backend_after(&moved, &format!("moved {home} → ")).unwrap().to_owned();
    assert_ne!(now, home);
    assert!(
        moved.contains(&format!("on {now} · lived on {home} → {now}")),
        "{moved}"
    );
    tmux.keys("Escape");
    tmux.wait("unfollowed", LONG, |s| {
        flash(s).contains(&format!("stopped following {client}")) && !s.contains(&format!("◎ following {client}"))
    });
    quit_cleanly(&tmux, &log);
}

#[test]
fn a_capture_writes_both_files_and_says_where() {
    let dir = temp_file("shots");
    std::fs::create_dir_all(&dir).unwrap();
    let Some((tmux, log)) = dashboard_in(160, 48, "", &dir) else {
        return;
    };
    tmux.keys("c");
    let said = tmux.wait("the flash", LONG, |s| flash(s).contains("saved ringside-"));
    let line = flash(&said);
    assert!(line.contains(&format!(".svg and .txt in {}", dir.display())), "{line}");
    let stem = backend_after(line, "saved ")
        .unwrap()
        .trim_end_matches(".svg")
        .to_owned();
    let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
    let text = std::fs::read_to_string(dir.join(format!("{stem}.txt"))).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("fill=\"#b5bd68\""), "the colours are kept (green: ▲ up)");
    assert!(text.contains("┌ backends") && text.contains("api-1"), "{text}");
    assert_eq!(text.lines().count(), 48, "the whole 160×48 frame");
    quit_cleanly(&tmux, &log);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lesson_in_the_dashboard_pauses_steps_replays_and_reports() {
    let command = format!(
        "{} scenario {}/assets/scenarios/vnodes.toml --tui; echo EXITED $?; sleep 30",
        env!("CARGO_BIN_EXE_ringside"),
        env!("CARGO_MANIFEST_DIR")
    );
    let Some(tmux) = Tmux::start(&command, 80, 24) else {
        return;
    };
    // It opens on its card, paused.
    tmux.wait("the card", LONG, |s| {
        s.contains("vnodes — why virtual nodes.") && s.contains("Enter starts")
    });
    tmux.keys("Escape");
    tmux.wait("paused", LONG, |s| s.contains("❚❚ paused 0s in, 3 steps to come"));
    // n: each step at once, and the clock stays stopped.
    tmux.keys("n");
    tmux.wait("the first step", LONG, |s| s.contains("❚❚ paused step 1/3"));
    tmux.keys("n");
    let second = tmux.wait("the second step", LONG, |s| {
        s.contains("❚❚ paused step 2/3 at 2s: 150 vnodes")
    });
    assert!(second.contains("150 vnodes"), "{second}");
    tmux.holds("still paused", Duration::from_secs(1), |s| {
        s.contains("❚❚ paused step 2/3")
    });
    // P: on to the end, and the report opens.
    tmux.keys("P");
    let report = tmux.wait("the report", LONG, |s| s.contains("report: 2 of 2 checks passed"));
    assert!(report.contains("✓ ok   at 1.5s: ring_max_over_mean > 1.5"), "{report}");
    // b: once more from the start (at the end, no question asked).
    tmux.keys("b");
    tmux.wait("the replay", LONG, |s| s.contains("(run 2)"));
    tmux.wait("its report", LONG, |s| s.contains("report: 2 of 2 checks passed"));
    tmux.keys("Escape");
    tmux.wait("the report closed", LONG, |s| {
        s.contains("■ ended: 2 of 2 checks passed")
    });
    tmux.keys("q");
    let after = tmux.wait("the printed report", LONG, |s| s.contains("EXITED"));
    assert!(after.contains("EXITED 0"), "{after}");
    assert!(after.contains("ok   at 3.0s: ring_max_over_mean < 1.3"), "{after}");
}

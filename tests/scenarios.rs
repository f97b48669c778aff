//! Every shipped scenario runs on loopback and its checks hold; bad files and
//! failed checks are reported as such.

use std::process::Command;

fn ringside(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .unwrap()
}

const SHIPPED: [&str; 8] = [
    "sydney",
    "nat",
    "modulo-vs-ring",
    "vnodes",
    "failover",
    "drain",
    "bounded-load",
    "scale-out",
];

/// One after the other: they measure load, so they should not share the CPU.
#[test]
fn every_shipped_scenario_passes_its_checks() {
    for name in SHIPPED {
        let path = format!("{}/assets/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(&format!("# {name} — ")),
            "{name}: the file opens with what it teaches"
        );
        let out = ringside(&["scenario", &path, "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
        let checks = report["checks"].as_array().unwrap();
        assert!(!checks.is_empty(), "{name} checks something");
        assert!(checks.iter().all(|c| c["passed"] == true), "{name}: {stdout}");
        let phases = report["phases"].as_array().unwrap();
        assert!(phases.len() >= 2, "{name}: {stdout}");
        // A restart clears the counters: the phase it opens counts from it,
        // not from the figures before it.
        for p in phases.iter().filter(|p| p["started_by"] == "restart the lesson") {
            assert!(
                p["requests"].as_u64() > Some(0) && p["created"].as_u64() > Some(0),
                "{name}: the restart's phase counts nothing: {p}"
            );
        }
    }
}

#[test]
fn failed_checks_fail_the_run_and_bad_files_name_the_line() {
    let dir = std::env::temp_dir().join(format!("ringside-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let failing = dir.join("failing.toml");
    std::fs::write(
        &failing,
        "duration_secs = 1.5\n[setup]\nbackends = 2\n[[steps]]\nat = 1\nexpect = [\"requests == 0\"]\n",
    )
    .unwrap();
    let out = ringside(&["scenario", failing.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAIL at 1.0s: requests == 0"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 check(s) failed: requests == 0"));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "duration_secs = 5\n\n[[steps]]\nat = 1\nkil = \"api-1\"\n").unwrap();
    let out = ringside(&["scenario", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:") && err.contains("unknown field `kil`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_scenario_can_use_external_backends() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backends = rt.block_on(async {
        let a = ringside::demo::backend::DemoBackend::start("ext-1", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let b = ringside::demo::backend::DemoBackend::start("ext-2", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        (a, b)
    });
    let dir = std::env::temp_dir().join(format!("ringside-external-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("external.toml");
    std::fs::write(
        &file,
        format!(
            "duration_secs = 2\n[setup]\nexternal = [{{ name = \"ext-1\", addr = \"{}\" }}, {{ name = \"ext-2\", addr = \"{}\" }}]\n[traffic]\nclients = 5\nrate = 50\n[[steps]]\nat = 1\nkill = \"ext-1\"\n[[steps]]\nat = 2\nexpect = [\"errors == 0\", \"requests > 20\"]\n",
            backends.0.addr(),
            backends.1.addr()
        ),
    )
    .unwrap();
    let out = ringside(&["scenario", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ext-1") && stdout.contains("ext-2"), "{stdout}");
    assert!(stdout.contains("kill ext-1"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
    rt.block_on(async {
        backends.0.kill().await;
        backends.1.kill().await;
    });
}

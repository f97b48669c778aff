//! `ringside ring`: the seed's experiment, run as the built binary.

use std::process::{Command, Output};

use serde_json::Value;

fn ringside(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .expect("run ringside")
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["ring", "--json"];
    all.extend_from_slice(args);
    let out = ringside(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_seed_experiment_remaps_a_third_against_two_thirds() {
    let v = json(&[
        "--backends",
        "3",
        "--vnodes",
        "150",
        "--keys",
        "10000",
        "--remove",
        "api-2",
    ]);
    let before = v["before"].as_object().unwrap();
    assert_eq!(before.keys().collect::<Vec<_>>(), ["api-1", "api-2", "api-3"]);
    assert_eq!(before.values().map(|c| c.as_u64().unwrap()).sum::<u64>(), 10_000);
    let after = v["after"].as_object().unwrap();
    assert_eq!(after.keys().collect::<Vec<_>>(), ["api-1", "api-3"]);
    // Only api-2's keys moved: each survivor keeps all it had.
    for name in ["api-1", "api-3"] {
        assert!(after[name].as_u64() >= before[name].as_u64());
    }
    let ring = v["remapped"]["ring"].as_f64().unwrap();
    let modulo = v["remapped"]["modulo"].as_f64().unwrap();
    assert_eq!(ring, before["api-2"].as_f64().unwrap() / 10_000.0);
    assert!((ring - 1.0 / 3.0).abs() < 0.03, "ring {ring}");
    assert!((modulo - 2.0 / 3.0).abs() < 0.03, "modulo {modulo}");
    assert_eq!(v["remapped"]["ideal"].as_f64().unwrap(), 0.3333);
}

#[test]
fn adding_a_backend_moves_about_one_in_n_plus_one() {
    let v = json(&["--backends", "4", "--keys", "20000", "--add", "api-5"]);
    let ring = v["remapped"]["ring"].as_f64().unwrap();
    assert!((ring - 0.2).abs() < 0.03, "ring {ring}");
    assert!(v["remapped"]["modulo"].as_f64().unwrap() > 0.7);
    assert_eq!(v["remapped"]["ideal"].as_f64().unwrap(), 0.2);
    assert!(v["after"]["api-5"].as_u64().unwrap() > 0);
}

#[test]
fn bounded_ring_caps_the_busiest_backend() {
    let v = json(&[
        "--backends",
        "8",
        "--vnodes",
        "1",
        "--keys",
        "8000",
        "--placement",
        "bounded-ring",
    ]);
    assert!(v["max_over_mean"]["before"].as_f64().unwrap() <= 1.25);
    let plain = json(&["--backends", "8", "--vnodes", "1", "--keys", "8000"]);
    assert!(plain["max_over_mean"]["before"].as_f64().unwrap() > 1.25);
    assert!(v.get("remapped").is_none(), "no change, no remap");
}

#[test]
fn the_seeds_crc32_positions_are_less_even() {
    let mixed = json(&["--backends", "10", "--keys", "100000"]);
    let crc = json(&["--backends", "10", "--keys", "100000", "--vnode-hash", "crc32"]);
    let m = mixed["max_over_mean"]["before"].as_f64().unwrap();
    let c = crc["max_over_mean"]["before"].as_f64().unwrap();
    assert!(m <= 1.2 && c > m, "mixed {m}, crc32 {c}");
    assert_eq!(crc["vnode_hash"], "crc32");
}

#[test]
fn text_report_reads_like_the_article() {
    let out = ringside(&["ring", "--remove", "api-2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("after removing api-2"), "{text}");
    assert!(text.contains("max/mean"), "{text}");
    assert!(text.contains("remapped keys: ring 3"), "{text}");
    assert!(text.contains("ideal 33.3%"), "{text}");
}

#[test]
fn with_no_options_it_shows_a_change_worth_seeing() {
    let out = ringside(&["ring"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("no --remove or --add given: showing --remove api-2"),
        "{text}"
    );
    assert!(text.contains("remapped keys: ring"), "{text}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, needle) in [
        (vec!["ring", "--remove", "api-9"], "no backend named \"api-9\""),
        (vec!["ring", "--add", "api-1"], "already exists"),
        (vec!["ring", "--add", "bad name"], "bad backend name"),
        (vec!["ring", "--placement", "modulo"], "unknown placement"),
        (vec!["ring", "--backends", "0"], "backends"),
        (vec!["ring", "--vnode-hash", "md5"], "mixed or crc32"),
    ] {
        let out = ringside(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

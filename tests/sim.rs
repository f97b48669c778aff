//! `ringside sim`: golden conversations in the source task's JSON protocol.

use ringside::router::Placement;
use ringside::sim::{SimConfig, run};
use serde_json::{Value, json};

fn config() -> SimConfig {
    SimConfig {
        backends: 3,
        placement: Placement::RoundRobin,
        idle_timeout_secs: 1800,
        seed: 1,
    }
}

/// Runs a conversation and returns the answers' bodies.
fn converse_with(config: &SimConfig, lines: &[Value]) -> Vec<Value> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    converse_raw(config, input.as_bytes())
}

fn converse_raw(config: &SimConfig, input: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    run(input, &mut out, config).expect("the simulator ends cleanly");
    String::from_utf8(out)
        .expect("UTF-8 output")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("every answer is JSON");
            assert_eq!(v["src"], "l7_proxy");
            v["body"].clone()
        })
        .collect()
}

fn converse(lines: &[Value]) -> Vec<Value> {
    converse_with(&config(), lines)
}

fn request(msg_id: u64, cookies: Value) -> Value {
    json!({"src": "client", "dest": "l7_proxy", "body": {"type": "http_request", "msg_id": msg_id,
        "method": "GET", "path": "/api/profile", "cookies": cookies}})
}

fn message(kind: &str, msg_id: u64, extra: Value) -> Value {
    let mut body = json!({"type": kind, "msg_id": msg_id});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    json!({"src": "client", "dest": "l7_proxy", "body": body})
}

/// The session id in a `set_cookie` of the form `session_id=<id>; backend=<name>`.
fn session_of(answer: &Value) -> String {
    let cookie = answer["set_cookie"].as_str().expect("set_cookie");
    let id = cookie
        .strip_prefix("session_id=")
        .and_then(|r| r.split(';').next())
        .expect("session_id=<id>");
    id.to_owned()
}

#[test]
fn seed_case_1_first_request_creates_a_session() {
    let answers = converse(&[request(1, json!({}))]);
    let a = &answers[0];
    assert_eq!(a["type"], "http_response");
    assert_eq!(a["in_reply_to"], 1);
    assert_eq!(a["status"], 200);
    assert_eq!(a["backend"], "api-1");
    let id = session_of(a);
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a["set_cookie"], format!("session_id={id}; backend=api-1"));
    // The whole line, key order included.
    let mut out = Vec::new();
    run(format!("{}\n", request(1, json!({}))).as_bytes(), &mut out, &config()).unwrap();
    let line = String::from_utf8(out).unwrap();
    assert!(
        line.starts_with(r#"{"src":"l7_proxy","dest":"client","body":{"type":"http_response","in_reply_to":1,"status":200,"backend":"api-1","set_cookie":"session_id="#),
        "{line}"
    );
}

#[test]
fn seed_case_2_an_unknown_session_is_placed_and_kept_without_set_cookie() {
    let answers = converse(&[request(1, json!({"session_id": "abc123"}))]);
    assert_eq!(
        answers[0],
        json!({"type": "http_response", "in_reply_to": 1, "status": 200, "backend": "api-1"})
    );
}

#[test]
fn round_robin_places_new_sessions_and_the_table_keeps_them() {
    let answers = converse(&[request(1, json!({})), request(2, json!({})), request(3, json!({}))]);
    let backends: Vec<&str> = answers.iter().map(|a| a["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["api-1", "api-2", "api-3"]);
    let ids: Vec<String> = answers.iter().map(session_of).collect();
    let mut again = vec![request(1, json!({})), request(2, json!({})), request(3, json!({}))];
    for (i, id) in ids.iter().enumerate() {
        again.push(request(10 + i as u64, json!({"session_id": id})));
    }
    let answers = converse(&again);
    for (i, expected) in ["api-1", "api-2", "api-3"].iter().enumerate() {
        let a = &answers[3 + i];
        assert_eq!(a["backend"], *expected);
        assert!(a.get("set_cookie").is_none(), "{a}");
    }
}

#[test]
fn failover_moves_only_the_dead_backends_sessions_and_tells_them() {
    let mut lines: Vec<Value> = (1..=6).map(|i| request(i, json!({}))).collect();
    let first = converse(&lines);
    let ids: Vec<String> = first.iter().map(session_of).collect();
    let homes: Vec<String> = first
        .iter()
        .map(|a| a["backend"].as_str().unwrap().to_owned())
        .collect();
    lines.push(message("backend_down", 20, json!({"backend": "api-2"})));
    for (i, id) in ids.iter().enumerate() {
        lines.push(request(30 + i as u64, json!({"session_id": id, "backend": homes[i]})));
    }
    lines.push(message("stats", 40, json!({})));
    lines.push(message("backend_up", 41, json!({"backend": "api-2"})));
    for (i, id) in ids.iter().enumerate() {
        lines.push(request(50 + i as u64, json!({"session_id": id})));
    }
    let answers = converse(&lines);
    let down = &answers[6];
    assert_eq!(down["type"], "backend_down_ok");
    assert_eq!(down["in_reply_to"], 20);
    assert_eq!(down["state"], "down");
    assert_eq!(down["remap"]["moved"], 2, "api-2 had two of six sessions: {down}");
    assert_eq!(down["remap"]["sessions"], 6);
    let mut moved_to = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let a = &answers[7 + i];
        if home == "api-2" {
            assert_ne!(a["backend"], "api-2");
            assert_eq!(
                a["set_cookie"],
                format!("session_id={}; backend={}", ids[i], a["backend"].as_str().unwrap())
            );
            moved_to.push(a["backend"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(a["backend"], home.as_str());
            assert!(a.get("set_cookie").is_none(), "{a}");
        }
    }
    let stats = &answers[13];
    assert_eq!(stats["type"], "stats_ok");
    assert_eq!(stats["sessions_per_backend"]["api-2"], 0);
    assert_eq!(stats["reassigned"], 2);
    assert_eq!(stats["backends"]["api-2"], "down");
    let up = &answers[14];
    assert_eq!(up["type"], "backend_up_ok");
    assert_eq!(up["remap"]["moved"], 0, "sessions do not move back");
    let mut k = 0;
    for (i, home) in homes.iter().enumerate() {
        let a = &answers[15 + i];
        if home == "api-2" {
            assert_eq!(a["backend"], moved_to[k].as_str(), "sticky after the return");
            k += 1;
        } else {
            assert_eq!(a["backend"], home.as_str());
        }
        assert!(a.get("set_cookie").is_none());
    }
}

#[test]
fn a_drain_keeps_existing_sessions_and_takes_no_new_ones() {
    let mut lines = vec![request(1, json!({}))];
    let first = converse(&lines);
    let id = session_of(&first[0]);
    assert_eq!(first[0]["backend"], "api-1");
    lines.push(message("drain", 2, json!({"backend": "api-1"})));
    lines.push(request(3, json!({"session_id": id})));
    for i in 0..6 {
        lines.push(request(10 + i, json!({})));
    }
    lines.push(message("undrain", 20, json!({"backend": "api-1"})));
    for i in 0..3 {
        lines.push(request(30 + i, json!({})));
    }
    let answers = converse(&lines);
    assert_eq!(answers[1]["type"], "drain_ok");
    assert_eq!(answers[1]["state"], "draining");
    assert_eq!(answers[2]["backend"], "api-1", "the existing session stays");
    for a in &answers[3..9] {
        assert_ne!(a["backend"], "api-1", "no new session on a draining backend");
    }
    assert_eq!(answers[9]["type"], "undrain_ok");
    let after: Vec<&str> = answers[10..13].iter().map(|a| a["backend"].as_str().unwrap()).collect();
    assert!(after.contains(&"api-1"), "{after:?}");
}

#[test]
fn idle_sessions_expire() {
    let config = SimConfig {
        idle_timeout_secs: 60,
        ..config()
    };
    let first = converse_with(&config, &[request(1, json!({}))]);
    let id = session_of(&first[0]);
    let answers = converse_with(
        &config,
        &[
            request(1, json!({})),
            message("advance_time", 2, json!({"secs": 30})),
            request(3, json!({"session_id": id})),
            message("advance_time", 4, json!({"secs": 61})),
            message("stats", 5, json!({})),
            request(6, json!({"session_id": id})),
            message("stats", 7, json!({})),
        ],
    );
    assert_eq!(
        answers[1],
        json!({"type": "advance_time_ok", "in_reply_to": 2, "now_secs": 30, "expired": 0})
    );
    assert_eq!(answers[2]["backend"], "api-1");
    assert!(answers[2].get("set_cookie").is_none());
    assert_eq!(answers[3]["expired"], 1);
    assert_eq!(answers[3]["now_secs"], 91);
    assert_eq!(answers[4]["sessions"], 0);
    assert_eq!(answers[4]["expired"], 1);
    // The client still holds its id: placed afresh, no set_cookie.
    assert_eq!(answers[5]["status"], 200);
    assert!(answers[5].get("set_cookie").is_none());
    assert_eq!(answers[6]["sessions"], 1);
    assert_eq!(answers[6]["created"], 2);
}

#[test]
fn logout_ends_the_session() {
    let first = converse(&[request(1, json!({}))]);
    let id = session_of(&first[0]);
    let logout = json!({"src": "client", "body": {"type": "http_request", "msg_id": 2, "method": "POST",
        "path": "/api/logout", "cookies": {"session_id": id}}});
    let answers = converse(&[request(1, json!({})), logout, message("stats", 3, json!({}))]);
    assert_eq!(answers[1]["set_cookie"], "session_id=; Max-Age=0");
    assert_eq!(answers[2]["sessions"], 0);
}

#[test]
fn no_backend_available_is_503() {
    let answers = converse(&[
        message("backend_down", 1, json!({"backend": "api-1"})),
        message("backend_down", 2, json!({"backend": "api-2"})),
        message("backend_down", 3, json!({"backend": "api-3"})),
        request(4, json!({})),
    ]);
    assert_eq!(
        answers[3],
        json!({"type": "http_response", "in_reply_to": 4, "status": 503})
    );
}

#[test]
fn a_backend_can_be_added_and_removed() {
    let answers = converse(&[
        message("backend_add", 1, json!({"backend": "api-4"})),
        message("backend_add", 2, json!({"backend": "api-4"})),
        message("backend_remove", 3, json!({"backend": "api-4"})),
        message("stats", 4, json!({})),
    ]);
    assert_eq!(answers[0]["type"], "backend_add_ok");
    assert_eq!(answers[1]["type"], "error");
    assert_eq!(answers[1]["code"], 12);
    assert_eq!(answers[2]["type"], "backend_remove_ok");
    assert!(answers[3]["backends"].get("api-4").is_none());
}

#[test]
fn bad_input_is_answered_and_the_simulator_carries_on() {
    let mut input = Vec::new();
    for line in [
        "this is not json",
        "{}",
        "[1,2,3]",
        r#"{"body":"nope"}"#,
        r#"{"src":"c9","body":{"msg_id":7}}"#,
        r#"{"body":{"type":"teleport","msg_id":8}}"#,
        r#"{"body":{"type":"http_request"}}"#,
        r#"{"body":{"type":"http_request","msg_id":9,"cookies":"x"}}"#,
        r#"{"body":{"type":"backend_down","msg_id":10}}"#,
        r#"{"body":{"type":"backend_down","msg_id":11,"backend":"api-9"}}"#,
        r#"{"body":{"type":"advance_time","msg_id":12,"secs":-5}}"#,
        "",
        "   ",
    ] {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(b"\xff\xfe\xfd\n");
    input.extend_from_slice(format!("{}\n", request(99, json!({}))).as_bytes());
    let answers = converse_raw(&config(), &input);
    let codes: Vec<(Value, Value)> = answers[..answers.len() - 1]
        .iter()
        .map(|a| (a["code"].clone(), a["in_reply_to"].clone()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (json!(12), Value::Null),
            (json!(12), Value::Null),
            (json!(12), Value::Null),
            (json!(12), Value::Null),
            (json!(12), json!(7)),
            (json!(10), json!(8)),
            (json!(12), Value::Null),
            (json!(12), json!(9)),
            (json!(12), json!(10)),
            (json!(20), json!(11)),
            (json!(12), json!(12)),
            (json!(12), Value::Null),
        ]
    );
    assert!(
        answers
            .iter()
            .take(12)
            .all(|a| a["type"] == "error" && a["text"].as_str().is_some_and(|t| !t.is_empty()))
    );
    assert_eq!(answers.last().unwrap()["status"], 200);
}

#[test]
fn messages_spread_over_several_lines_are_read_as_the_task_writes_them() {
    // The task's sample, pretty-printed, then two on one line, then garbage.
    let sample = serde_json::to_string_pretty(&request(1, json!({}))).unwrap();
    assert!(sample.lines().count() > 5);
    let mut input = format!("{sample}\n");
    input.push_str(&format!(
        "{} {}\n",
        request(2, json!({})),
        message("stats", 3, json!({}))
    ));
    input.push_str("not json\n{\"body\":\n");
    let answers = converse_raw(&config(), input.as_bytes());
    let kinds: Vec<&str> = answers.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["http_response", "http_response", "stats_ok", "error", "error"]);
    assert_eq!(answers[0]["in_reply_to"], 1);
    assert!(answers[3]["text"].as_str().unwrap().contains("not valid JSON"));
    assert!(
        answers[4]["text"]
            .as_str()
            .unwrap()
            .contains("ended inside a JSON value")
    );
}

#[test]
fn a_huge_line_is_refused_without_buffering_it() {
    let mut input = vec![b'x'; ringside::sim::MAX_LINE + 10];
    input.push(b'\n');
    input.extend_from_slice(format!("{}\n", request(1, json!({}))).as_bytes());
    let answers = converse_raw(&config(), &input);
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["code"], 12);
    assert!(answers[0]["text"].as_str().unwrap().contains("longer than"));
    assert_eq!(answers[1]["status"], 200);
}

#[test]
fn random_bytes_and_mutated_messages_never_crash_it() {
    let mut rng = fastrand::Rng::with_seed(42);
    let valid = [
        request(1, json!({"session_id": "abc"})).to_string(),
        message("backend_down", 2, json!({"backend": "api-2"})).to_string(),
        message("advance_time", 3, json!({"secs": 10})).to_string(),
        message("stats", 4, json!({})).to_string(),
    ];
    let mut input = Vec::new();
    for i in 0..3000 {
        if i % 2 == 0 {
            let len = rng.usize(0..200);
            input.extend((0..len).map(|_| {
                let b = rng.u8(..);
                if b == b'\n' { b' ' } else { b }
            }));
        } else {
            let mut m = valid[rng.usize(..valid.len())].clone().into_bytes();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..m.len());
                m[at] = rng.u8(32..127);
            }
            input.extend_from_slice(&m);
        }
        input.push(b'\n');
    }
    let answers = converse_raw(&config(), &input);
    assert!(answers.len() > 1000, "{}", answers.len());
}

#[test]
fn the_binary_speaks_the_protocol() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .arg("sim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ringside sim");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", request(1, json!({}))).unwrap();
    writeln!(stdin, "{}", request(2, json!({"session_id": "abc123"}))).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"]["backend"], "api-1");
    assert_eq!(lines[1]["body"]["backend"], "api-2");
    assert!(lines[1]["body"].get("set_cookie").is_none());
}

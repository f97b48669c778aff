//! The simulator's line protocol: arbitrary bytes on stdin never crash it,
//! and every line it writes is one JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringside::router::Placement;
use ringside::sim::{SimConfig, run};

fuzz_target!(|data: &[u8]| {
    let config = SimConfig {
        backends: 3,
        placement: Placement::Ring,
        idle_timeout_secs: 60,
        seed: 1,
    };
    let mut out = Vec::new();
    run(data, &mut out, &config).expect("writing to memory cannot fail");
    let text = std::str::from_utf8(&out).expect("the simulator writes UTF-8");
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("every answer is JSON");
        assert!(value.is_object(), "{line}");
    }
});

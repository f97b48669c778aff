//! The configuration parser and validator: any text is parsed or refused
//! with an error naming the file; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringside::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = Config::parse(text, Path::new("fuzz.toml")).and_then(|c| c.validate("fuzz.toml"));
    if let Err(e) = checked {
        assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
    }
});

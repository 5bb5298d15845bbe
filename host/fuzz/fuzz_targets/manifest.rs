//! The manifest parser on arbitrary text: it must return a manifest or an
//! error, never panic, hang or exhaust memory, and what it accepts must
//! hold the documented bounds.

#![no_main]

use std::path::Path;

use evos::Manifest;
use evos::manifest::{MAX_MANIFEST_BYTES, MAX_MEMORY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `files` paths resolve against a directory that does not exist, so
    // nothing on this machine is touched.
    let base = Path::new("/nonexistent/evos-fuzz");
    let Ok(mut manifest) = Manifest::parse(text, "fuzz.toml", base) else {
        return;
    };
    assert!(text.len() <= MAX_MANIFEST_BYTES);
    assert!(manifest.limits.fuel.0 > 0);
    assert!(manifest.limits.memory.0 <= MAX_MEMORY);
    assert!(manifest.name().is_ascii() && !manifest.name().is_empty());
    // What is stored is re-parsed on restore: it must parse again.
    let again = Manifest::parse(&manifest.source, "fuzz.toml", base);
    assert!(again.is_ok(), "accepted text does not parse again: {again:?}");
    // Rewriting a config value keeps a manifest valid or refuses clearly.
    let _ = manifest.set_config("fuzz-key", "fuzz value");
});

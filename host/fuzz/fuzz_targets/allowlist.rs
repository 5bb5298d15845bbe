//! The http allowlist entry parser (`http = ["https://host:443/path/*"]`)
//! on arbitrary text: an entry or an error, never a panic. Seeds: the
//! entries in `seeds/allowlist/` and every `http` entry in policies/.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text.parse::<evos::capability::http::HttpRule>();
});

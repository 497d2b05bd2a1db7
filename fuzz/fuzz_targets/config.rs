//! The config loader: any text gives a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = popgate::Config::parse(&text) {
        assert!(!e.is_empty());
    }
});

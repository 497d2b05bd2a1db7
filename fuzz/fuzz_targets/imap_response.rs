//! The IMAP response parser: never a panic, and what it returns points into
//! the input it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popgate::imap::framer::literal_size;
use popgate::imap::parse::{response, Response, Untagged};

fn inside(part: &[u8], whole: &[u8]) -> bool {
    let range = whole.as_ptr_range();
    let p = part.as_ptr_range();
    part.is_empty() || (range.start <= p.start && p.end <= range.end)
}

fuzz_target!(|data: &[u8]| {
    let _ = literal_size(data);
    match response(data) {
        Ok(Response::Tagged { tag, text, .. }) => {
            assert!(!tag.is_empty() && inside(tag, data));
            assert!(inside(text.text, data));
            let _ = text.capabilities();
            let _ = text.text_lossy();
        }
        Ok(Response::Untagged(Untagged::Fetch(f))) => {
            if let Some(body) = f.body {
                assert!(inside(body, data));
            }
        }
        Ok(Response::Untagged(Untagged::Status(_, text))) => {
            assert!(inside(text.text, data));
            let _ = text.capabilities();
        }
        _ => {}
    }
});

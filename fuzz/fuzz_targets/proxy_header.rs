//! PROXY v1/v2 headers: never a panic, a header never claims more bytes
//! than it was given, every shorter prefix of a header asks for more, and
//! bytes after a header change nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popgate::net::proxy::{parse, Parsed};

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Header { len, source }) = parse(data) else {
        return;
    };
    assert!(len <= data.len());
    for k in 0..len {
        assert_eq!(
            parse(&data[..k]),
            Ok(Parsed::Incomplete),
            "prefix {k} of {len}"
        );
    }
    assert_eq!(parse(&data[..len]), Ok(Parsed::Header { len, source }));
});

//! The old POP3 server's answers and the migration header hash: never a
//! panic; a UIDL entry that parses is 1..70 printable characters; a
//! listing that is accepted lists each UIDL once; the hash is the same
//! for CRLF and LF line ends.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use popgate::migration::{headers, pop3_wire};

fuzz_target!(|data: &[u8]| {
    let mut uidls = Vec::new();
    let mut sizes = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = pop3_wire::status(line);
        let _ = pop3_wire::data_line(line);
        if let Ok((n, uidl)) = pop3_wire::uidl_entry(line) {
            assert!(n > 0 && (1..=70).contains(&uidl.len()), "{uidl:?}");
            assert!(uidl.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            uidls.push((n, uidl));
        }
        if let Ok(entry) = pop3_wire::list_entry(line) {
            sizes.push(entry);
        }
    }
    if let Ok(listed) = pop3_wire::listing(&uidls, &sizes) {
        let unique: HashSet<&str> = listed.iter().map(|l| l.uidl.as_str()).collect();
        assert_eq!(unique.len(), listed.len());
    }
    // CRLF and LF line ends hash alike.
    let mut lf = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if !(b == b'\r' && data.get(i + 1) == Some(&b'\n')) {
            lf.push(b);
        }
    }
    if data.len() <= headers::MAX_HEADER {
        assert_eq!(headers::hash(data), headers::hash(&lf));
    }
});

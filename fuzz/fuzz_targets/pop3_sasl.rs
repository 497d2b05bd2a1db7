//! The SASL exchanges of AUTH: any sequence of client lines ends in
//! credentials, a challenge or an error, never a panic; PLAIN gives back
//! exactly the three fields it was sent.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use popgate::pop3::sasl::{bearer_user, Exchange, Step};

const MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", ""];

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else {
        return;
    };
    let mechanism = MECHANISMS[usize::from(selector & 0x7) % MECHANISMS.len()];
    let mut lines = rest.split(|&b| b == b'\n');
    let initial = if selector & 0x8 != 0 {
        lines
            .next()
            .map(|l| String::from_utf8_lossy(l).into_owned())
    } else {
        None
    };
    let _ = bearer_user(mechanism, rest);
    let Ok((mut exchange, mut step)) = Exchange::start(mechanism, initial.as_deref()) else {
        return;
    };
    for line in lines {
        if matches!(step, Step::Done(_)) {
            break;
        }
        step = match exchange.step(line) {
            Ok(s) => s,
            Err(_) => return,
        };
    }

    // PLAIN round trip on fields taken from the input.
    let mut fields = rest.splitn(3, |&b| b == 0xff);
    let (Some(authzid), Some(user), Some(password)) = (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let mut message = authzid.to_vec();
    message.push(0);
    message.extend_from_slice(user);
    message.push(0);
    message.extend_from_slice(password);
    let encoded = B64.encode(&message);
    let result = Exchange::start("PLAIN", Some(&encoded));
    // With a NUL inside the first two fields the split differs; no claim.
    let valid = !authzid.contains(&0)
        && !user.is_empty()
        && !user.contains(&0)
        && std::str::from_utf8(authzid).is_ok()
        && std::str::from_utf8(user).is_ok();
    if !valid {
        return;
    }
    match result {
        Ok((_, Step::Done(c))) => {
            assert_eq!(c.authzid.as_bytes(), authzid);
            assert_eq!(c.user.as_bytes(), user);
            assert_eq!(c.password.expose(), password);
        }
        other => panic!("valid PLAIN fields refused: {other:?}"),
    }
});

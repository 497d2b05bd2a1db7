//! The POP3 command parser: never panics, and whatever it accepts reads
//! back the same when written out again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popgate::pop3::command::parse;
use popgate::pop3::Command;

fn render(cmd: &Command) -> Vec<u8> {
    let text = match cmd {
        Command::User(u) => format!("USER {u}"),
        Command::Pass(secret) => {
            let mut line = b"PASS ".to_vec();
            line.extend_from_slice(secret.expose());
            return line;
        }
        Command::Apop { user, digest } => format!("APOP {user} {digest}"),
        Command::Auth {
            mechanism: None,
            initial: None,
        } => "AUTH".into(),
        Command::Auth {
            mechanism: Some(m),
            initial: None,
        } => format!("AUTH {m}"),
        Command::Auth {
            mechanism: Some(m),
            initial: Some(i),
        } => format!("AUTH {m} {i}"),
        Command::Auth {
            mechanism: None,
            initial: Some(_),
        } => unreachable!("an initial response without a mechanism"),
        Command::List(None) => "LIST".into(),
        Command::List(Some(n)) => format!("LIST {n}"),
        Command::Uidl(None) => "UIDL".into(),
        Command::Uidl(Some(n)) => format!("UIDL {n}"),
        Command::Retr(n) => format!("RETR {n}"),
        Command::Dele(n) => format!("DELE {n}"),
        Command::Top(n, lines) => format!("TOP {n} {lines}"),
        other => other.name().to_string(),
    };
    text.into_bytes()
}

fuzz_target!(|line: &[u8]| {
    let Ok(cmd) = parse(line) else {
        return;
    };
    let again = render(&cmd);
    assert_eq!(
        parse(&again).as_ref(),
        Ok(&cmd),
        "{:?}",
        String::from_utf8_lossy(&again)
    );
    // Verbs are case-insensitive.
    let mut lower = again.clone();
    let verb = lower.iter().position(|&b| b == b' ').unwrap_or(lower.len());
    lower[..verb].make_ascii_lowercase();
    assert_eq!(parse(&lower).as_ref(), Ok(&cmd));
});

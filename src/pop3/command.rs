//! POP3 command parsing (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH).

use super::Secret;

/// A message number as the client wrote it (1-based, not yet range checked).
pub type MsgNum = u32;

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(Secret),
    Apop {
        user: String,
        digest: String,
    },
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Capa,
    Stls,
    Quit,
    Stat,
    List(Option<MsgNum>),
    Uidl(Option<MsgNum>),
    Retr(MsgNum),
    Top(MsgNum, u64),
    Dele(MsgNum),
    Noop,
    Rset,
}

impl Command {
    /// The command's name for logs and metrics; never its arguments.
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Quit => "QUIT",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Uidl(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Unknown command")]
    Unknown,
    #[error("Empty command")]
    Empty,
    #[error("Invalid characters in command")]
    BadBytes,
    #[error("{0}")]
    Syntax(&'static str),
}

pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::BadBytes);
    }
    let (verb, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    if verb.is_empty() {
        return Err(CommandError::Empty);
    }
    if verb.len() > 4 || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(CommandError::Unknown);
    }
    let mut name = [0u8; 4];
    let name = &mut name[..verb.len()];
    name.copy_from_slice(verb);
    name.make_ascii_uppercase();

    // PASS keeps everything after the first space: RFC 1939 allows spaces in
    // passwords, and the bytes need not be UTF-8.
    if name == b"PASS" {
        return match rest {
            Some(pw) if !pw.is_empty() => Ok(Command::Pass(Secret(pw.to_vec()))),
            _ => Err(CommandError::Syntax("Missing password")),
        };
    }

    let rest = rest
        .map(|r| std::str::from_utf8(r).map_err(|_| CommandError::BadBytes))
        .transpose()?;
    let args: Vec<&str> = rest.map(|r| r.split(' ').collect()).unwrap_or_default();

    let cmd = match &*name {
        b"USER" => match rest {
            Some(user) if !user.is_empty() && !user.contains(char::is_control) => {
                Command::User(user.to_string())
            }
            _ => return Err(CommandError::Syntax("Missing or invalid user name")),
        },
        b"AUTH" => match args.as_slice() {
            [] => Command::Auth {
                mechanism: None,
                initial: None,
            },
            [mech] => Command::Auth {
                mechanism: Some(mech.to_ascii_uppercase()),
                initial: None,
            },
            [mech, initial] => Command::Auth {
                mechanism: Some(mech.to_ascii_uppercase()),
                initial: Some(initial.to_string()),
            },
            _ => {
                return Err(CommandError::Syntax(
                    "Usage: AUTH mechanism [initial-response]",
                ))
            }
        },
        b"APOP" => match args.as_slice() {
            [user, digest] if !user.is_empty() && digest.len() == 32 => Command::Apop {
                user: user.to_string(),
                digest: digest.to_string(),
            },
            _ => return Err(CommandError::Syntax("Usage: APOP name digest")),
        },
        b"CAPA" => no_args(&args, Command::Capa)?,
        b"STLS" => no_args(&args, Command::Stls)?,
        b"QUIT" => no_args(&args, Command::Quit)?,
        b"STAT" => no_args(&args, Command::Stat)?,
        b"NOOP" => no_args(&args, Command::Noop)?,
        b"RSET" => no_args(&args, Command::Rset)?,
        b"LIST" => Command::List(optional_msg(&args)?),
        b"UIDL" => Command::Uidl(optional_msg(&args)?),
        b"RETR" => Command::Retr(one_msg(&args)?),
        b"DELE" => Command::Dele(one_msg(&args)?),
        b"TOP" => match args.as_slice() {
            [msg, lines] => Command::Top(msg_num(msg)?, line_count(lines)?),
            _ => return Err(CommandError::Syntax("Usage: TOP msg lines")),
        },
        _ => return Err(CommandError::Unknown),
    };
    Ok(cmd)
}

fn no_args(args: &[&str], cmd: Command) -> Result<Command, CommandError> {
    match args {
        [] => Ok(cmd),
        _ => Err(CommandError::Syntax("This command takes no arguments")),
    }
}

fn optional_msg(args: &[&str]) -> Result<Option<MsgNum>, CommandError> {
    match args {
        [] => Ok(None),
        [n] => msg_num(n).map(Some),
        _ => Err(CommandError::Syntax("Too many arguments")),
    }
}

fn one_msg(args: &[&str]) -> Result<MsgNum, CommandError> {
    match args {
        [n] => msg_num(n),
        _ => Err(CommandError::Syntax("Usage: command msg")),
    }
}

fn msg_num(s: &str) -> Result<MsgNum, CommandError> {
    const INVALID: CommandError = CommandError::Syntax("Invalid message number");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID);
    }
    match s.parse::<MsgNum>() {
        Ok(0) | Err(_) => Err(INVALID),
        Ok(n) => Ok(n),
    }
}

/// A TOP line count. Clients ask for "all of it" with huge numbers
/// (fetchmail sends 99999999), so anything beyond u64 means the same.
fn line_count(s: &str) -> Result<u64, CommandError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax("Invalid line count"));
    }
    Ok(s.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt 3"), Ok(Command::List(Some(3))));
        assert_eq!(parse(b"top 2 0"), Ok(Command::Top(2, 0)));
    }

    #[test]
    fn pass_keeps_spaces_and_any_bytes() {
        assert_eq!(
            parse(b"PASS  two  spaces "),
            Ok(Command::Pass(Secret(b" two  spaces ".to_vec())))
        );
        assert_eq!(
            parse(b"pass \xe2\x82\xac{\"\\"),
            Ok(Command::Pass(Secret(b"\xe2\x82\xac{\"\\".to_vec())))
        );
        assert!(parse(b"PASS").is_err());
        assert_eq!(
            parse(b"PASS "),
            Err(CommandError::Syntax("Missing password"))
        );
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for bad in [
            "RETR",
            "RETR 0",
            "RETR -1",
            "RETR x",
            "RETR 1 2",
            "RETR 99999999999",
            "LIST +1",
            "DELE ",
            "TOP 1",
            "TOP 1 -1",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(CommandError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_needs_a_name_without_control_characters() {
        assert_eq!(parse(b"USER alice"), Ok(Command::User("alice".into())));
        for bad in ["USER", "USER ", "USER a\tb", "USER a\x7fb"] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(CommandError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn apop_needs_a_name_and_an_md5_digest() {
        let digest = "c4c9334bac560ecc979e58001b3e22fb";
        assert_eq!(
            parse(format!("APOP alice {digest}").as_bytes()),
            Ok(Command::Apop {
                user: "alice".into(),
                digest: digest.into()
            })
        );
        for bad in ["APOP alice abc", "APOP alice", "APOP"] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(CommandError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn huge_top_counts_mean_everything() {
        assert_eq!(parse(b"TOP 1 99999999"), Ok(Command::Top(1, 99999999)));
        assert_eq!(
            parse(b"TOP 1 999999999999999999999999"),
            Ok(Command::Top(1, u64::MAX))
        );
    }

    #[test]
    fn garbage_is_unknown_or_bad() {
        assert_eq!(parse(b"HELO x"), Err(CommandError::Unknown));
        assert_eq!(parse(b"GET / HTTP/1.1"), Err(CommandError::Unknown));
        assert_eq!(parse(b""), Err(CommandError::Empty));
        assert_eq!(parse(b"ST\0AT"), Err(CommandError::BadBytes));
        assert_eq!(parse(b"LIST \xff"), Err(CommandError::BadBytes));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            parse(b"auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGEAYg==".into())
            })
        );
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }
    }
}

//! `popgate uidl show` and `popgate uidl forget`: one mailbox's UIDL memory,
//! read or dropped through the same store and key a login uses.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use popgate::config::{Config, DEFAULT_ROUTE};
use popgate::pop3::uidl::UidlTemplate;
use popgate::state::embedded::{Embedded, FILE_NAME};
use popgate::state::redis::Redis;
use popgate::state::{MailboxKey, Memory, StateError, StateStore};

use super::{Mailbox, UidlCommand};

/// println! panics when stdout is a closed pipe; a message nobody reads
/// is no failure.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const NOTHING: u8 = 1;
const BAD_CONFIG: u8 = 2;
const STORE_FAILED: u8 = 3;

/// Runs one `uidl` subcommand; messages go to stdout, errors to stderr.
pub fn run(command: UidlCommand) -> ExitCode {
    let (Ok(code) | Err(code)) = match command {
        UidlCommand::Show(m) => with_store(&m, show),
        UidlCommand::Forget(m) => with_store(&m, forget),
        UidlCommand::Import(args) => return super::import::run(args),
    };
    ExitCode::from(code)
}

/// What a subcommand works on.
struct Target {
    key: MailboxKey,
    template: UidlTemplate,
    /// None: no store file yet, so nothing remembered.
    store: Option<Box<dyn StateStore>>,
    /// Where the store is, for messages.
    place: String,
}

type Action = fn(Target) -> Result<u8, u8>;

fn with_store(m: &Mailbox, action: Action) -> Result<u8, u8> {
    let config = Config::load(&m.config).map_err(|e| fail(BAD_CONFIG, e))?;
    let Some(state) = &config.state else {
        return Err(fail(
            BAD_CONFIG,
            format!(
                "{}: no `state` section: popgate keeps no UIDL memory",
                m.config.display()
            ),
        ));
    };
    if m.route != DEFAULT_ROUTE && !config.upstreams.contains_key(&m.route) {
        let mut known = vec![DEFAULT_ROUTE.to_string()];
        known.extend(config.upstreams.keys().cloned());
        return Err(fail(
            BAD_CONFIG,
            format!(
                "--route {:?}: {} has no such route (it has: {})",
                m.route,
                m.config.display(),
                known.join(", ")
            ),
        ));
    }
    // The key a login builds (gateway/login.rs): the route's name, the
    // upstream user in lower case, the configured folder.
    let key = MailboxKey {
        route: m.route.clone(),
        user: m.user.to_lowercase(),
        folder: m
            .folder
            .clone()
            .unwrap_or_else(|| config.mailbox.first().to_string()),
    };
    let place = match (&state.path, &state.redis) {
        (_, Some(r)) => format!(
            "Redis {}, prefix {:?}",
            without_password(&r.url),
            r.key_prefix
        ),
        (Some(p), None) if p.join(FILE_NAME).exists() => p.join(FILE_NAME).display().to_string(),
        _ => "no store file yet".to_string(),
    };
    let store: Option<Box<dyn StateStore>> = match (&state.path, &state.redis) {
        (_, Some(redis)) => {
            let _in = runtime().enter();
            Some(Box::new(
                Redis::open(redis).map_err(|e| fail(BAD_CONFIG, e))?,
            ))
        }
        // Opening would create the file: looking must not.
        (Some(path), None) if path.join(FILE_NAME).exists() => {
            // Unchecked: a damaged record elsewhere must not keep an operator
            // from this one, nor a damaged one from being forgotten.
            let store = Embedded::open_unchecked(path).map_err(|e| fail(STORE_FAILED, e))?;
            Some(Box::new(store))
        }
        _ => None,
    };
    action(Target {
        key,
        template: config.uidl_format.clone(),
        store,
        place,
    })
}

fn show(t: Target) -> Result<u8, u8> {
    let Some(memory) = load(&t)? else {
        say!("popgate: nothing remembered for {}", describe(&t));
        return Ok(NOTHING);
    };
    let text = listing(&t.key, &memory, &t.template);
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that stopped early (`| head`) is no failure.
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(fail(1, format!("cannot write the listing: {e}"))),
    }
}

fn forget(t: Target) -> Result<u8, u8> {
    let nothing = |t: &Target| {
        say!(
            "popgate: nothing remembered for {}; nothing to forget",
            describe(t)
        );
        Ok(0)
    };
    let Some(store) = &t.store else {
        return nothing(&t);
    };
    // Read first, to say what forgetting costs; a damaged record is
    // forgotten all the same.
    let memory = block_on(store.load(&t.key));
    if !block_on(store.forget(&t.key)).map_err(|e| fail(STORE_FAILED, e))? {
        return nothing(&t);
    }
    let Ok(Some(stored)) = memory else {
        say!(
            "popgate: forgot {} (its record was unreadable). At its next login \
             every message gets its template UIDL and is fingerprinted afresh.",
            describe(&t)
        );
        return Ok(0);
    };
    let memory = stored.memory;
    let exceptions = memory.exceptions.len();
    say!(
        "popgate: forgot {} (messages: {}, exceptions: {exceptions}).\n\
         At its next login every message gets its template UIDL and is \
         fingerprinted afresh; keep-mode clients download again the messages \
         whose UIDL was an exception ({exceptions}).",
        describe(&t),
        memory.prints.len(),
    );
    Ok(0)
}

fn load(t: &Target) -> Result<Option<Memory>, u8> {
    match &t.store {
        None => Ok(None),
        Some(store) => block_on(store.load(&t.key))
            .map(|s| s.map(|s| s.memory))
            .map_err(|e| match e {
                StateError::Corrupt => fail(
                    STORE_FAILED,
                    format!(
                        "the record of {} is corrupt; `popgate uidl forget` drops it",
                        describe(t)
                    ),
                ),
                e => fail(STORE_FAILED, e),
            }),
    }
}

fn describe(t: &Target) -> String {
    let where_ = &t.place;
    format!(
        "route {}, user {}, folder {} ({where_})",
        t.key.route, t.key.user, t.key.folder
    )
}

/// The memory as text: a header, then one line per message with the UIDL a
/// POP3 client got at the last login (the same rule as the maildrop's: the
/// exception if there is one, else the template under the remembered
/// UIDVALIDITY).
fn listing(key: &MailboxKey, m: &Memory, template: &UidlTemplate) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route: {}\nuser: {}\nfolder: {}\nuidvalidity: {}\nmessages: {}\nexceptions: {}\n",
        key.route,
        key.user,
        key.folder,
        m.uid_validity,
        m.prints.len(),
        m.exceptions.len()
    );
    let mut rows = vec![[
        "UID".to_string(),
        "SIZE".into(),
        "DATE".into(),
        "UIDL".into(),
        "FROM".into(),
    ]];
    let printed: BTreeSet<u32> = m.prints.iter().map(|p| p.uid).collect();
    let orphans = m.exceptions.keys().filter(|u| !printed.contains(u));
    let mut uids: Vec<u32> = printed.iter().copied().chain(orphans.copied()).collect();
    uids.sort_unstable();
    for uid in uids {
        let print = m.prints.iter().find(|p| p.uid == uid);
        let (uidl, from) = match m.exceptions.get(&uid) {
            Some(u) => (u.clone(), "exception"),
            None => (template.uidl(uid, m.uid_validity), "template"),
        };
        rows.push([
            uid.to_string(),
            print.map_or("-".into(), |p| p.size.to_string()),
            print.map_or("-".into(), |p| date(p.date)),
            uidl,
            from.into(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let _ = writeln!(
            out,
            "{:>w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    }
    out
}

/// INTERNALDATE (seconds since 1970) as `YYYY-MM-DDTHH:MM:SSZ`; 0 is unknown.
fn date(secs: u32) -> String {
    if secs == 0 {
        return "-".into();
    }
    let days = i64::from(secs / 86_400);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A Redis URL fit to print: any `user:password@` dropped.
fn without_password(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// One runtime for the command: the Redis connection lives on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    runtime().block_on(f)
}

fn fail(code: u8, e: impl std::fmt::Display) -> u8 {
    eprintln!("popgate: {e}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use popgate::state::Print;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(date(0), "-");
        assert_eq!(date(1), "1970-01-01T00:00:01Z");
        assert_eq!(date(951_825_600), "2000-02-29T12:00:00Z");
        assert_eq!(date(1_795_600_815), "2026-11-25T10:00:15Z");
        assert_eq!(date(u32::MAX), "2106-02-07T06:28:15Z");
    }

    #[test]
    fn the_listing_gives_each_uid_the_maildrops_uidl() {
        let key = MailboxKey {
            route: "default".into(),
            user: "ann".into(),
            folder: "INBOX".into(),
        };
        let print = |uid| Print {
            uid,
            size: 100 + u64::from(uid),
            date: 1_700_000_000,
            hash: 7,
        };
        let m = Memory {
            uid_validity: 0x1234,
            prints: vec![print(1), print(2)],
            exceptions: [(2, "old-two".to_string()), (9, "gone".to_string())].into(),
        };
        let text = listing(&key, &m, &UidlTemplate::default());
        assert!(text.contains("uidvalidity: 4660\n"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("UID "))
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec![
                    "1",
                    "101",
                    "2023-11-14T22:13:20Z",
                    "0000000100001234",
                    "template"
                ],
                vec!["2", "102", "2023-11-14T22:13:20Z", "old-two", "exception"],
                vec!["9", "-", "-", "gone", "exception"],
            ]
        );
    }
}

//! `popgate uidl import`: the migration from the old POP3 server
//! (`migration.pop3`) ahead of time, for the users of a file, several at a
//! time; users whose mailbox has a record already are skipped, so a run
//! that was interrupted can simply be started again.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use popgate::config::migration::SourceLogin;
use popgate::config::Config;
use popgate::files::read_secret;
use popgate::gateway::import::{import, parse_users, Outcome};
use popgate::gateway::Context;
use popgate::metrics::Metrics;
use zeroize::Zeroizing;

#[derive(Debug, Args)]
pub struct Import {
    /// The configuration file (with `state` and `migration`)
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// One user per line: the login name (`login: master`), or the login
    /// name, a TAB and the password (`login: user`)
    #[arg(long, value_name = "FILE")]
    pub users: PathBuf,
    /// Users migrated at the same time
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
}

const SOME_FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;
const STORE_FAILED: u8 = 3;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("popgate: {message}");
    ExitCode::from(code)
}

pub fn run(args: Import) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(BAD_INPUT, e),
    };
    let Some(login) = config.migration.as_ref().map(|m| m.pop3.login) else {
        let why = format!(
            "{}: no `migration` section: there is no old server to import from",
            args.config.display()
        );
        return fail(BAD_INPUT, why);
    };
    // With `login: user` the file holds passwords: read as a secret file
    // (refused when others may read it, wiped after parsing).
    let read = match login {
        SourceLogin::User => read_secret(&args.users).map_err(|e| e.to_string()),
        SourceLogin::Master => std::fs::read(&args.users)
            .map(Zeroizing::new)
            .map_err(|e| format!("{}: {e}", args.users.display())),
    };
    let bytes = match read {
        Ok(b) => b,
        Err(e) => return fail(BAD_INPUT, e),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return fail(BAD_INPUT, format!("{}: not UTF-8", args.users.display()));
    };
    let users = match parse_users(text, login) {
        Ok(u) => u,
        Err(e) => return fail(BAD_INPUT, format!("{}: {e}", args.users.display())),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(STORE_FAILED, format!("cannot start the runtime: {e}")),
    };
    // Inside the runtime: a Redis store's connection lives on it.
    let _in = runtime.enter();
    let ctx = match Context::new(config, Arc::new(Metrics::new())) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(STORE_FAILED, e),
    };
    let total = users.len();
    let done = Arc::new(AtomicUsize::new(0));
    let terminal = std::io::stderr().is_terminal();
    let counter = done.clone();
    let summary = runtime.block_on(import(ctx, users, args.concurrency, move |_| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if terminal {
            eprint!("\rimported {n}/{total}");
        }
    }));
    if terminal {
        eprintln!();
    }
    let mut out = std::io::stdout().lock();
    let (mut migrated, mut skipped, mut failed) = (0, 0, 0);
    for s in &summary {
        let _ = match &s.outcome {
            Outcome::Migrated {
                old_messages,
                matched,
                unmatched,
            } => {
                migrated += 1;
                writeln!(
                    out,
                    "{}\tmigrated\told={old_messages} matched={matched} unmatched={unmatched}",
                    s.user
                )
            }
            Outcome::Skipped => {
                skipped += 1;
                writeln!(out, "{}\tskipped\talready remembered", s.user)
            }
            Outcome::Failed(why) => {
                failed += 1;
                writeln!(out, "{}\tfailed\t{why}", s.user)
            }
        };
    }
    let _ = writeln!(
        out,
        "popgate: {migrated} migrated, {skipped} skipped, {failed} failed of {total}"
    );
    if failed > 0 {
        ExitCode::from(SOME_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

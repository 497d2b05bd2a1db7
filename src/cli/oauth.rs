//! `popgate oauth enroll`: a user's one-time enrolment for a route whose
//! upstream takes OAuth2 tokens (`upstream.oauth2`, flow refresh_token).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use popgate::config::{Config, DEFAULT_ROUTE};
use popgate::secret::Secret;
use popgate::state::embedded::Embedded;
use popgate::state::redis::Redis;
use popgate::state::tokens::TokenStore;

const BAD_CONFIG: u8 = 2;
const FAILED: u8 = 3;
const REFUSED: u8 = 1;

#[derive(Debug, Args)]
pub struct Enroll {
    /// The configuration file (its route's `oauth2` and its `state`)
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The upstream user, as popgate logs in to the IMAP server (after
    /// routing); case does not matter
    #[arg(short, long, value_name = "USER")]
    pub user: String,
    /// The route: `default` (the `upstream` section) or a name under
    /// `upstreams`
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ROUTE)]
    pub route: String,
    /// Read the POP3 password from the first line of standard input
    /// instead of asking twice on the terminal
    #[arg(long)]
    pub password_stdin: bool,
}

pub fn run(e: Enroll) -> ExitCode {
    match enroll(e) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn fail(code: u8, e: impl std::fmt::Display) -> u8 {
    eprintln!("popgate: {e}");
    code
}

fn enroll(e: Enroll) -> Result<(), u8> {
    let config = Config::load(&e.config).map_err(|err| fail(BAD_CONFIG, err))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| fail(FAILED, err))?;
    let _in = runtime.enter();
    let client =
        popgate::oauth::enroll::client(&config, &e.route).map_err(|err| fail(BAD_CONFIG, err))?;
    let Some(state) = &config.state else {
        return Err(fail(
            BAD_CONFIG,
            "no `state` section: nowhere to keep tokens",
        ));
    };
    let store: Arc<dyn TokenStore> = match (&state.path, &state.redis) {
        (_, Some(redis)) => Arc::new(Redis::open(redis).map_err(|err| fail(BAD_CONFIG, err))?),
        (Some(path), None) => Arc::new(Embedded::open(path).map_err(|err| fail(FAILED, err))?),
        (None, None) => return Err(fail(BAD_CONFIG, "state: neither path nor redis")),
    };
    let password = read_password(e.password_stdin)?;
    let mut out = std::io::stdout();
    runtime
        .block_on(popgate::oauth::enroll::enroll(
            &client, store, &e.route, &e.user, password, &mut out,
        ))
        .map_err(|err| match err {
            popgate::oauth::enroll::EnrollError::Config(_) => fail(BAD_CONFIG, err),
            popgate::oauth::enroll::EnrollError::Server(_) => fail(REFUSED, err),
            popgate::oauth::enroll::EnrollError::Store(_) => fail(FAILED, err),
        })
}

/// The POP3 password the user will log in with: the first line of
/// standard input, or typed twice on the terminal without echo.
fn read_password(from_stdin: bool) -> Result<Secret, u8> {
    let stdin = std::io::stdin();
    if from_stdin || !stdin.is_terminal() {
        let mut line = String::with_capacity(1024);
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|err| fail(BAD_CONFIG, format!("reading the password: {err}")))?;
        let pw = Secret(line.trim_end_matches(['\r', '\n']).as_bytes().to_vec());
        if pw.0.is_empty() {
            return Err(fail(BAD_CONFIG, "an empty POP3 password"));
        }
        return Ok(pw);
    }
    let first = prompt("POP3 password for this user: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(fail(BAD_CONFIG, "the passwords differ"));
    }
    if first.0.is_empty() {
        return Err(fail(BAD_CONFIG, "an empty POP3 password"));
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> Result<Secret, u8> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{text}");
    let _ = err.flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a termios copied from tcgetattr, on the same fd.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::with_capacity(1024);
    let read = std::io::stdin().lock().read_line(&mut line);
    if have {
        // SAFETY: restores what tcgetattr gave.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    let _ = writeln!(err);
    read.map_err(|e| fail(BAD_CONFIG, format!("reading the password: {e}")))?;
    Ok(Secret(
        line.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
    ))
}

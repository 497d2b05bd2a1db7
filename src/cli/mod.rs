//! The command line: running the gateway (`--config FILE [--check]`) and
//! the operator subcommands (`uidl ...`).

pub mod import;
pub mod oauth;
pub mod uidl;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const USAGE: &str = "\
popgate --config FILE            run the gateway
       popgate --config FILE --check    validate FILE and exit (0 if valid; 2 if not,
                                        the error naming the key and the line)
       popgate uidl show --config FILE --user USER [--route NAME] [--folder NAME]
       popgate uidl forget --config FILE --user USER [--route NAME] [--folder NAME]
       popgate uidl import --config FILE --users FILE [--concurrency N]
       popgate oauth enroll --config FILE --user USER [--route NAME] [--password-stdin]
       popgate --help | --version";

const AFTER_HELP: &str = "\
On SIGTERM or SIGINT popgate stops accepting, lets running sessions finish
within shutdown.drain_timeout, then closes the rest without applying their
deletions. See examples/popgate.yaml for every setting, and `popgate uidl
--help` for the commands on the UIDL memory.";

/// popgate: a POP3 gateway in front of IMAP-only mail servers
#[derive(Debug, Parser)]
#[command(
    name = "popgate",
    version,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// The configuration file
    #[arg(short, long, value_name = "FILE", required = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration (and every file it names) and exit
    #[arg(long)]
    pub check: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

const UIDL_AFTER_HELP: &str = "\
They may run while popgate runs: each reads or writes the store in one
short transaction.
Exit status: 0 done; 1 nothing remembered (show); 2 a bad command line or
config; 3 the store cannot be used (damaged, unreadable, or busy).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or forget a mailbox's UIDL memory (the `state` section)
    #[command(subcommand, after_help = UIDL_AFTER_HELP)]
    Uidl(UidlCommand),
    /// Enrol users of a route whose upstream takes OAuth2 tokens
    #[command(subcommand)]
    Oauth(OauthCommand),
}

const ENROLL_AFTER_HELP: &str = "\
Starts the device authorization grant (RFC 8628) of the route's
`oauth2` section: prints the address to open and the code to enter, waits
until the user has signed in there, and stores the refresh token encrypted
with the POP3 password given here (asked twice on a terminal, or the first
line of standard input). The user then logs in over POP3 with the login
name and that password. Running it again replaces the user's enrolment.
Exit status: 0 enrolled; 1 the authorization server refused or the code
expired; 2 a bad command line or config; 3 the store cannot be used.";

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Enrol one user: the device grant, then the sealed refresh token
    #[command(after_help = ENROLL_AFTER_HELP)]
    Enroll(oauth::Enroll),
}

#[derive(Debug, Subcommand)]
pub enum UidlCommand {
    /// Print a mailbox's UIDVALIDITY and, per message, the UIDL it gets
    ///
    /// Per remembered message: UID, size, INTERNALDATE, the UIDL POP3
    /// clients were given at the last login, and where it comes from
    /// (template, or an exception kept across a UIDVALIDITY change).
    #[command(after_help = UIDL_AFTER_HELP)]
    Show(Mailbox),
    /// Drop a mailbox's memory
    ///
    /// At its next login every message gets its template UIDL and is
    /// fingerprinted afresh; keep-mode clients download again the messages
    /// whose UIDL was an exception.
    #[command(after_help = UIDL_AFTER_HELP)]
    Forget(Mailbox),
    /// Take over the UIDLs of the old POP3 server (`migration.pop3`) for
    /// the users of a file, ahead of their first login
    ///
    /// Each user's mailbox that the memory does not know yet is read on
    /// the old server and on the IMAP server and stored, as the first
    /// login would; users already remembered are skipped, so an
    /// interrupted import can be run again. Prints one line per user
    /// (migrated with its counts, skipped, or failed with the reason).
    #[command(after_help = IMPORT_AFTER_HELP)]
    Import(import::Import),
}

const IMPORT_AFTER_HELP: &str = "\
Users file: one user per line; blank lines and lines starting with # are
skipped. With `login: master` a line is the login name (the IMAP server is
read as auth.master_user); with `login: user` it is the login name, a TAB
and the password, used on both servers.
Exit status: 0 every user migrated or skipped; 1 some users failed (nothing
stored for them; run again); 2 a bad command line, config or users file;
3 the store or the config's files cannot be used.";

/// Names one mailbox as the store keys it.
#[derive(Debug, Args)]
pub struct Mailbox {
    /// The configuration file (its `state`, `uidl_format`, `mailbox` and
    /// routes)
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The upstream user, as popgate logs in to the IMAP server: after a
    /// domain route's strip_domain or an SDPS suffix is taken off; with a
    /// master login, the user whose mailbox it is. Case does not matter.
    #[arg(short, long, value_name = "USER")]
    pub user: String,
    /// The route: `default` (the `upstream` section) or a name under
    /// `upstreams`
    #[arg(long, value_name = "NAME", default_value = popgate::config::DEFAULT_ROUTE)]
    pub route: String,
    /// The folder [default: the config's `mailbox`, INBOX unless set]
    #[arg(long, value_name = "NAME")]
    pub folder: Option<String>,
}

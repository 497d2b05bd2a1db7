//! The `popgate` command: parse arguments, load the config, start logging,
//! serve until SIGTERM or SIGINT.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use popgate::config::{Config, LogFormat};
use popgate::LevelSetter;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: popgate::secret::WipingAllocator = popgate::secret::WipingAllocator;

fn main() -> ExitCode {
    forbid_core_dumps();
    // A bad command line: clap's usage error and status 2.
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Uidl(command)) => return cli::uidl::run(command),
        Some(Command::Oauth(cli::OauthCommand::Enroll(e))) => return cli::oauth::run(e),
        None => {}
    }
    // clap requires --config when there is no subcommand.
    let (Some(path), check) = (cli.config, cli.check) else {
        eprintln!("popgate: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("popgate: {e}");
            return ExitCode::from(2);
        }
    };
    let warnings = config.warnings();
    if check {
        for w in &warnings {
            eprintln!("popgate: warning: {w}");
        }
        // Also loads the certificates, CA files and secret files it names.
        return match popgate::prepare(config) {
            Ok(_) => {
                println!("popgate: {}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("popgate: {}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let log_level = init_logging(&config);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    raise_open_files_limit(config.session.max_connections);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("popgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = popgate::bind(&config).await?;
        let reload = popgate::Reload {
            path: path.clone(),
            log_level,
        };
        popgate::serve(config, listeners, shutdown_signal(), Some(reload)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("popgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Passwords pass through this process's memory: no core file may carry
/// them away, and other processes of the same user may not attach to it or
/// read its memory (a non-dumpable process's /proc entries belong to root).
fn forbid_core_dumps() {
    // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        eprintln!(
            "popgate: cannot turn core dumps off: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Every connection takes a descriptor, a logged-in session two: raise the
/// soft limit to the hard one (the soft limit of 1024 that many systems
/// start services with would stop a busy instance long before
/// `session.max_connections`), and say what it got.
fn raise_open_files_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read the one struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            lim.rlim_cur = before;
        }
    }
    let got = lim.rlim_cur;
    // Two per session (client and upstream) and some to spare.
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64);
    if got < needed {
        tracing::warn!(
            open_files = got,
            needed,
            "the open-files limit is below what session.max_connections needs; raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        );
    } else {
        tracing::info!(open_files = got, raised_from = before, "open-files limit");
    }
}

/// Starts logging; returns how a reloaded config sets `log.level`, unless
/// `RUST_LOG` decides the level.
fn init_logging(config: &Config) -> Option<LevelSetter> {
    use tracing_subscriber::prelude::*;
    let from_env = EnvFilter::try_from_default_env().ok();
    let fixed = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&config.log.level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    (!fixed).then(|| -> LevelSetter {
        Box::new(move |level: &str| {
            handle
                .reload(EnvFilter::new(level))
                .map_err(|e| e.to_string())
        })
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{which} received, shutting down");
}

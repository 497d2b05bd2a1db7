//! The `popgate` command: parse arguments, load the config, start logging,
//! serve until SIGTERM or SIGINT.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use popgate::config::{Config, LogFormat};
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
    init_logging(&config);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("popgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = popgate::bind(&config).await?;
        popgate::run(config, listeners, shutdown_signal()).await
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

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

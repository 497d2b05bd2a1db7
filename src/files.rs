//! Files popgate reads besides its config: certificates, CA files,
//! credentials. One error type for them, the reader for files that hold
//! secrets, and the watcher that re-reads them on a timer, since Kubernetes
//! swaps Secret files through symlinks and inotify misses such swaps on
//! some volumes.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};
use zeroize::Zeroizing;

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "{path} holds secrets but other users may read it (mode {mode:04o}): \
         run chmod 600 {path}"
    )]
    Exposed { path: String, mode: u32 },
}

/// Secret files beyond this size are refused rather than read.
const MAX_SECRET_FILE: usize = 16 << 20;

/// Reads a file that holds secrets (credentials, a password), as OpenSSH
/// reads a private key: refused when anyone but popgate's own user (or a
/// group popgate reads it through, as with a Kubernetes `fsGroup`) may
/// read it. The content lands in one buffer, sized from the file and wiped
/// when dropped; if the file grew meanwhile, the smaller buffer is wiped
/// before it is let go.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let shown = || path.display().to_string();
    let read_error = |source| FileError::Read {
        path: shown(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if exposed(&meta) {
        return Err(FileError::Exposed {
            path: shown(),
            mode: meta.mode() & 0o7777,
        });
    }
    let mut buf = Zeroizing::new(vec![0u8; (meta.len() as usize).min(MAX_SECRET_FILE) + 1]);
    let mut n = 0;
    loop {
        if n == buf.len() {
            if n > MAX_SECRET_FILE {
                return Err(FileError::Invalid {
                    path: shown(),
                    message: format!("larger than {MAX_SECRET_FILE} bytes"),
                });
            }
            let mut bigger = Zeroizing::new(vec![0u8; n * 2]);
            bigger[..n].copy_from_slice(&buf[..n]);
            buf = bigger;
        }
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Whether users other than popgate's may read or write the file: any
/// permission for others, or for the group unless the file belongs to
/// another user and the group is how popgate itself gets in.
fn exposed(meta: &Metadata) -> bool {
    let mode = meta.mode();
    if mode & 0o007 != 0 {
        return true;
    }
    if mode & 0o070 == 0 {
        return false;
    }
    // SAFETY: these calls only read the process's credentials.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.uid() == euid {
        return true;
    }
    meta.gid() != egid && !supplementary_groups().contains(&meta.gid())
}

fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: a first call with size 0 returns the count; the second fills
    // a buffer of that many entries and returns how many it wrote.
    unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n <= 0 {
            return Vec::new();
        }
        let mut groups = vec![0; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        groups
    }
}

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files: `None` if they did not change, else whether the
    /// new content is now in service (`Ok` with a summary for the log).
    fn reload(&self) -> Option<Result<String, String>>;
}

/// Calls `reload` every `interval` for as long as the task lives; a failed
/// reload keeps what was loaded before. `kind` labels the log and
/// `popgate_reloads_total`.
pub async fn watch<R: Reload>(
    item: Arc<R>,
    kind: &'static str,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let it = item.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || it.reload()).await else {
            continue;
        };
        match outcome {
            None => {}
            Some(Ok(summary)) => {
                info!(kind, "{kind} reloaded: {summary}");
                metrics.reloads.with_label_values(&[kind, "ok"]).inc();
            }
            Some(Err(e)) => {
                error!(kind, error = %e, "{kind} reload failed; keeping the previous one");
                metrics.reloads.with_label_values(&[kind, "error"]).inc();
            }
        }
    }
}

/// The master user's password: the first line of its file, read as a
/// secret file.
pub fn master_password(path: &Path) -> Result<crate::secret::Secret, String> {
    let raw = read_secret(path).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&raw).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(format!("{}: the file is empty", path.display()));
    }
    Ok(crate::secret::Secret(password.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(name: &str, mode: u32) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("popgate-{}-{name}", std::process::id()));
        std::fs::write(&path, b"user:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn secret_files_others_can_read_are_refused() {
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            let path = file_with_mode(&format!("{mode:o}"), mode);
            let result = read_secret(&path);
            std::fs::remove_file(&path).unwrap();
            match result {
                Ok(buf) => {
                    assert!(ok, "mode {mode:o} was accepted");
                    assert_eq!(&buf[..], b"user:secret\n");
                }
                Err(e) => {
                    assert!(!ok, "mode {mode:o}: {e}");
                    let text = e.to_string();
                    assert!(
                        text.contains(&path.display().to_string()) && text.contains("chmod 600"),
                        "{text}"
                    );
                }
            }
        }
    }
}

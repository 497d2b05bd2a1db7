//! Every configuration file shipped with popgate parses, and the command
//! line's `--check` reports bad files by key and line.

use std::path::Path;
use std::process::Command;

fn shipped_configs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["examples", "deploy"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".yaml") && name.contains("popgate") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn every_shipped_config_parses() {
    let files = shipped_configs();
    assert!(!files.is_empty(), "no example configs found");
    for f in files {
        if let Err(e) = popgate::Config::load(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn example_documents_the_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = popgate::Config::load(&root.join("examples/popgate.yaml")).unwrap();
    let minimal = popgate::Config::parse(
        "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"127.0.0.1:143\"\n\
         metrics:\n  address: \"127.0.0.1:9110\"\nstate:\n  path: /var/lib/popgate\n",
    )
    .unwrap();
    assert_eq!(format!("{:?}", example), format!("{:?}", minimal));
}

/// A directory of its own under the temporary directory, removed when
/// dropped: after the test, whether it passed or panicked.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("popgate-check-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(yaml: &str) -> (bool, String) {
    let dir = TempDir::new();
    let file = dir.0.join("popgate.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .arg("--config")
        .arg(&file)
        .arg("--check")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_accepts_good_and_names_key_and_line_of_bad() {
    let good = "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"imap:143\"\n";
    let (ok, text) = check(good);
    assert!(ok, "{text}");

    let (ok, text) = check(&format!("{good}uidl_format: \"%u%f\"\n"));
    assert!(!ok);
    assert!(
        text.contains("uidl_format") && text.contains("line 5"),
        "{text}"
    );

    let (ok, text) = check(&good.replace(
        "address: \"imap:143\"",
        "address: \"imap:143\"\n  tls: sometimes",
    ));
    assert!(!ok);
    assert!(
        text.contains("upstream.tls") && text.contains("line 5"),
        "{text}"
    );
}

fn popgate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_run_check_and_the_uidl_commands() {
    let (code, text, _) = popgate(&["--help"]);
    assert_eq!(code, Some(0));
    for usage in [
        "popgate --config FILE ",
        "popgate --config FILE --check ",
        "popgate uidl show --config FILE --user USER",
        "popgate uidl forget --config FILE --user USER",
        "SIGTERM",
    ] {
        assert!(text.contains(usage), "{usage:?} missing from:\n{text}");
    }
    let (code, text, _) = popgate(&["uidl", "show", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("--user <USER>") && text.contains("--route <NAME>"),
        "{text}"
    );
    let (code, text, _) = popgate(&["-V"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        text.trim(),
        format!("popgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_command_line_is_a_usage_error_with_status_2() {
    let cases: [(&[&str], &str); 6] = [
        (&[], "--config <FILE>"),
        (&["--config"], "a value is required for '--config <FILE>'"),
        (&["-c", "x.yaml", "--chek"], "unexpected argument '--chek'"),
        (&["uidl", "show", "--config", "x.yaml"], "--user <USER>"),
        (&["uidl", "shove"], "unrecognized subcommand 'shove'"),
        (
            &["--config", "x.yaml", "uidl", "show"],
            "cannot be used with",
        ),
    ];
    for (args, says) in cases {
        let (code, out, err) = popgate(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(err.contains("try '--help'"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
}

//! Every check of the config names the key and the line, through
//! `popgate --check` and through the typed error: one test per kind of
//! check, each case with the line the key stands on.

use std::io::Write;
use std::process::{Command, Stdio};

use popgate::config::{Config, ConfigErrorKind};

const BASE: &str =
    "listeners:\n  - address: \"127.0.0.1:1110\"\nupstream:\n  address: \"127.0.0.1:143\"\n";

/// Runs `popgate --check` on `yaml`, given on its standard input (no file
/// to leave behind): (exit success, stdout + stderr).
fn check(yaml: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(["--config", "/dev/stdin", "--check"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `extra` appended to the base config fails with `key` at `line`, with a
/// typed error of the kind `kind` accepts.
fn fails(extra: &str, key: &str, line: usize, kind: fn(&ConfigErrorKind) -> bool) {
    let yaml = format!("{BASE}{extra}");
    let e = Config::from_yaml(&yaml).unwrap_err();
    assert!(kind(&e.kind), "{key}: unexpected kind {:?}", e.kind);
    assert_eq!(e.key.as_ref().map(|k| k.to_string()).as_deref(), Some(key));
    assert_eq!(e.location.map(|l| l.0), Some(line), "{e}");
    let (ok, text) = check(&yaml);
    assert!(!ok, "{key}: --check accepted it");
    assert!(
        text.contains(&format!("{key}: ")) && text.contains(&format!(" at line {line} column ")),
        "{key} at line {line}: {text}"
    );
}

#[test]
fn lower_bounds_name_key_and_line() {
    let small = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::TooSmall(_));
    let cases = [
        ("session:\n  idle_timeout: 0s\n", "session.idle_timeout", 6),
        (
            "session:\n  mark_seen: true\n  max_connections: 0\n",
            "session.max_connections",
            7,
        ),
        (
            "limits:\n  auth_failures_per_connection: 0\n",
            "limits.auth_failures_per_connection",
            6,
        ),
        (
            "limits:\n  auth_penalty_memory: 0\n",
            "limits.auth_penalty_memory",
            6,
        ),
        (
            "auth:\n  reload_interval: 10ms\n",
            "auth.reload_interval",
            6,
        ),
        (
            "tls:\n  certificate: c.pem\n  key: k.pem\n  reload_interval: 1ms\n",
            "tls.reload_interval",
            8,
        ),
        (
            "metrics:\n  address: \"127.0.0.1:0\"\n  max_connections: 0\n",
            "metrics.max_connections",
            7,
        ),
        (
            "metrics:\n  address: \"127.0.0.1:0\"\n  max_connections_per_ip: 0\n",
            "metrics.max_connections_per_ip",
            7,
        ),
    ];
    for (extra, key, line) in cases {
        fails(extra, key, line, small);
    }
    let health = BASE.replace("143\"\n", "143\"\n  health_check_interval: 1ms\n");
    let e = Config::from_yaml(&health).unwrap_err();
    assert_eq!(
        e.to_string(),
        "upstream.health_check_interval: must be at least 100ms at line 5 column 26"
    );
}

#[test]
fn ranges_name_key_and_line() {
    let range = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::OutOfRange(..));
    fails(
        "session:\n  max_line_length: 100\n",
        "session.max_line_length",
        6,
        range,
    );
}

#[test]
fn empty_values_name_key_and_line() {
    fails("mailbox: \"\"\n", "mailbox", 5, |k| {
        *k == ConfigErrorKind::Empty
    });
}

#[test]
fn settings_that_need_another_name_key_and_line() {
    let requires = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Requires(_));
    let listener = "listeners:\n  - address: \"127.0.0.1:1110\"\n  - address: \"127.0.0.1:1995\"\n";
    let cases = [
        (
            "    proxy_protocol: true\n",
            "listeners[1].proxy_trusted",
            3,
        ),
        ("    tls: implicit\n", "listeners[1].tls", 4),
    ];
    for (item, key, line) in cases {
        let yaml = format!("{listener}{item}upstream:\n  address: \"127.0.0.1:143\"\n");
        let e = Config::from_yaml(&yaml).unwrap_err();
        assert!(requires(&e.kind), "{e}");
        assert_eq!(e.key.unwrap().to_string(), key);
        assert_eq!(e.location.map(|l| l.0), Some(line));
    }
    fails(
        "upstreams:\n  east:\n    address: \"e:143\"\n    ca_file: ca.pem\n",
        "upstreams.east.tls",
        7,
        requires,
    );
    fails(
        "auth:\n  master_user: m\n  credentials_file: /c\n",
        "auth.credentials_file",
        7,
        requires,
    );
}

#[test]
fn names_that_must_exist_name_key_and_line() {
    fails(
        "routing:\n  domains:\n    example.org:\n      upstream: west\n",
        "routing.domains.example.org.upstream",
        8,
        |k| *k == ConfigErrorKind::UnknownUpstream("west".into()),
    );
}

#[test]
fn conflicts_name_key_and_line() {
    let conflict = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Conflict(_));
    fails(
        "metrics:\n  address: \"127.0.0.1:1110\"\n",
        "metrics.address",
        6,
        conflict,
    );
    fails(
        "upstreams:\n  default:\n    address: \"d:143\"\n",
        "upstreams.default",
        7,
        conflict,
    );
}

#[test]
fn values_the_parser_rejects_name_key_and_line() {
    let e = Config::from_yaml(&format!("{BASE}session:\n  idle_timeout: 10y\n")).unwrap_err();
    assert!(matches!(e.kind, ConfigErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.location.map(|l| l.0), Some(6));
    let (ok, text) = check(&format!("{BASE}session:\n  idle_timeout: 10y\n"));
    assert!(
        !ok && text.contains("session.idle_timeout") && text.contains("line 6"),
        "{text}"
    );
}

#[test]
fn check_warns_of_a_plaintext_upstream_off_this_machine() {
    let remote = BASE.replace("127.0.0.1:143", "imap.example.org:143");
    let (ok, text) = check(&remote);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: upstream.tls: none sends every password to imap.example.org:143"),
        "{text}"
    );
    for local in [
        BASE.to_string(),
        BASE.replace("127.0.0.1:143", "localhost:143"),
    ] {
        let (ok, text) = check(&local);
        assert!(ok && !text.contains("warning"), "{text}");
    }
    let tls = remote.replace("143\"\n", "993\"\n  tls: implicit\n");
    let (ok, text) = check(&tls);
    assert!(ok && !text.contains("warning"), "{text}");
}

#[test]
fn migration_checks_name_key_and_line() {
    let state = "state:\n  path: /nonexistent/popgate-state\n";
    let old = "migration:\n  pop3:\n    address: \"127.0.0.1:110\"\n";
    let requires = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Requires(_));
    let syntax = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Syntax(_));
    fails(old, "migration", 6, requires);
    fails(
        &format!("{state}{old}    login: master\n"),
        "migration.pop3.login",
        10,
        requires,
    );
    fails(
        &format!("{state}{old}    ca_file: /etc/ssl/ca.pem\n"),
        // No tls key: the section it belongs in.
        "migration.pop3.tls",
        9,
        requires,
    );
    fails(
        &format!("{state}{old}    master_separator: \"\"\n"),
        "migration.pop3.master_separator",
        10,
        |k| matches!(k, ConfigErrorKind::Empty),
    );
    fails(
        &format!("{state}{old}    timeout: 1ms\n"),
        "migration.pop3.timeout",
        10,
        |k| matches!(k, ConfigErrorKind::TooSmall(_)),
    );
    for (bad, line) in [
        ("    tls: sometimes\n", 10),
        ("    on_failure: maybe\n", 10),
        ("    login: guest\n", 10),
        ("    adress: x\n", 10),
    ] {
        let yaml = format!("{BASE}{state}{old}{bad}");
        let e = Config::from_yaml(&yaml).unwrap_err();
        assert!(syntax(&e.kind), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(line), "{e}");
        let (ok, text) = check(&yaml);
        assert!(
            !ok && text.contains("migration.pop3") && text.contains(&format!("line {line}")),
            "{text}"
        );
    }
}

#[test]
fn check_loads_the_migration_master_password_and_warns_of_a_plaintext_old_server() {
    let dir = std::env::temp_dir().join(format!("popgate-migration-check-{}", std::process::id()));
    let yaml = format!(
        "{BASE}state:\n  path: {}\nmigration:\n  pop3:\n    address: \"pop.example.org:110\"\n    \
         login: master\n    master_user: m\n    master_password_file: /nonexistent/master\n",
        dir.display()
    );
    let (ok, text) = check(&yaml);
    assert!(
        !ok && text.contains("migration.pop3.master_password_file"),
        "{text}"
    );
    let (ok, text) = check(&yaml.replace(
        "    login: master\n    master_user: m\n    master_password_file: /nonexistent/master\n",
        "",
    ));
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: migration.pop3.tls: none sends passwords to pop.example.org:110"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oauth2_checks_name_key_and_line() {
    let requires = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Requires(_));
    let empty = |k: &ConfigErrorKind| matches!(k, ConfigErrorKind::Empty);
    let oauth2 = |client_id: &str, flow: &str| {
        format!(
            "  oauth2:\n    token_url: \"https://login.example.net/token\"\n\
             \x20   client_id: \"{client_id}\"\n    flow: {flow}\n"
        )
    };
    // The refresh tokens need a store; the application token needs
    // popgate to check passwords itself.
    fails(
        &oauth2("popgate", "refresh_token"),
        "upstream.oauth2.flow",
        8,
        requires,
    );
    fails(
        &oauth2("popgate", "client_credentials"),
        "upstream.oauth2.flow",
        8,
        requires,
    );
    fails(
        &oauth2("", "refresh_token"),
        "upstream.oauth2.client_id",
        7,
        empty,
    );
    // A client secret never goes over plain HTTP off this machine.
    let yaml = format!(
        "{BASE}  oauth2:\n    token_url: \"http://login.example.net/token\"\n\
         \x20   client_id: popgate\n    flow: refresh_token\nstate:\n  path: /tmp/x\n"
    );
    let e = Config::from_yaml(&yaml).unwrap_err().to_string();
    assert!(e.contains("use https://") && e.contains("line 6"), "{e}");
}

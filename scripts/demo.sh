#!/usr/bin/env bash
# Try popgate in one command: installs the dependencies, builds popgate,
# starts a throwaway Dovecot (IMAP only as far as popgate is concerned)
# with a demo mailbox, and runs popgate in front of it on 127.0.0.1.
#
#   scripts/demo.sh                       # POP3 on 127.0.0.1:1110
#   POPGATE_DEMO_PORT=2110 scripts/demo.sh
#
# Needs root (for apt-get and the Dovecot test instance) and a Rust
# toolchain (cargo).  Ctrl-C stops everything and removes the temporary files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${POPGATE_DEMO_PORT:-1110}"
PYTHON="${PYTHON:-python3}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/popgate"
USER_NAME=demo
USER_PASS=demo

say() { printf '%s\n' "$*" >&2; }
die() { say "demo: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (e.g. sudo $0): the throwaway Dovecot needs it"

case "$PORT" in
    ''|*[!0-9]*) die "POPGATE_DEMO_PORT must be a port number, not '$PORT'" ;;
esac

# Is the POP3 port free?  (A successful connect means someone listens.)
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "127.0.0.1:$PORT is already in use; choose another with POPGATE_DEMO_PORT=..."
fi

say "==> Installing dependencies"
scripts/install-deps.sh

say "==> Building popgate (cargo build --release)"
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs"
cargo build --release
[ -x "$BIN" ] || die "no binary at $BIN after the build"

WORK="$(mktemp -d /tmp/popgate-demo.XXXXXX)"
DV_PID=""
PG_PID=""
TAIL_PID=""

# The two functions below run from traps (shellcheck cannot see that).
# shellcheck disable=SC2317,SC2329
stop_pid() {
    # stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317,SC2329
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$PG_PID"
    [ -z "$TAIL_PID" ] || sleep 0.3   # let tail show popgate's last lines
    stop_pid "$TAIL_PID"
    stop_pid "$DV_PID"
    rm -rf "$WORK"
    say ""
    say "demo stopped; temporary files removed."
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "==> Starting a throwaway Dovecot with user '$USER_NAME'"
"$PYTHON" scripts/demo_dovecot.py --port-file "$WORK/imap-port" \
    --user "$USER_NAME" --password "$USER_PASS" >"$WORK/dovecot-helper.log" 2>&1 &
DV_PID=$!
for _ in $(seq 300); do
    [ -s "$WORK/imap-port" ] && break
    kill -0 "$DV_PID" 2>/dev/null || { cat "$WORK/dovecot-helper.log" >&2; die "Dovecot did not start"; }
    sleep 0.1
done
[ -s "$WORK/imap-port" ] || { cat "$WORK/dovecot-helper.log" >&2; die "Dovecot did not start within 30 s"; }
IMAP_PORT="$(cat "$WORK/imap-port")"

cat >"$WORK/popgate.yaml" <<EOF
listeners:
  - address: "127.0.0.1:$PORT"
upstream:
  address: "127.0.0.1:$IMAP_PORT"
  tls: none
mailbox: INBOX
state:
  path: "$WORK/state"
EOF

say "==> Starting popgate: $BIN --config $WORK/popgate.yaml"
"$BIN" --config "$WORK/popgate.yaml" >"$WORK/popgate.log" 2>&1 &
PG_PID=$!
for _ in $(seq 300); do
    grep -q 'listening on' "$WORK/popgate.log" 2>/dev/null && break
    kill -0 "$PG_PID" 2>/dev/null || { cat "$WORK/popgate.log" >&2; die "popgate exited"; }
    sleep 0.1
done
grep -q 'listening on' "$WORK/popgate.log" \
    || { cat "$WORK/popgate.log" >&2; die "popgate did not report 'listening on' within 30 s"; }

URL="pop3://$USER_NAME:$USER_PASS@127.0.0.1:$PORT"
cat >&2 <<EOF

popgate is running.
  POP3 (popgate):   127.0.0.1:$PORT   (plain text, no TLS)
  IMAP (Dovecot):   127.0.0.1:$IMAP_PORT, mailbox INBOX with 5 demo messages
  Login:            user "$USER_NAME", password "$USER_PASS"

Try it with curl:
  curl $URL/                  # list messages (LIST)
  curl $URL/1                 # read message 1 (RETR 1)
  curl -X UIDL $URL/          # unique ids (UIDL)
  curl -X 'TOP 1 0' $URL/     # headers of message 1 (TOP 1 0)

Or point a mail client (Thunderbird, Outlook, a phone) at it:
  Account type:        POP3
  Incoming server:     127.0.0.1   port $PORT
  Username / password: $USER_NAME / $USER_PASS
  Connection security: none (no SSL/TLS, no STARTTLS); authentication: normal password
  Messages the client deletes are removed from the demo mailbox when it
  sends QUIT (choose "leave messages on server" to keep them).

popgate's log follows.  Press Ctrl-C to stop popgate and Dovecot.
------------------------------------------------------------------------
EOF

tail -s 0.2 -n +1 -f "$WORK/popgate.log" >&2 &
TAIL_PID=$!

# Returns when popgate exits or a signal arrives (the traps run then).
set +e
wait "$PG_PID"
rc=$?
set -e
PG_PID=""
say "popgate exited with status $rc"
exit "$rc"

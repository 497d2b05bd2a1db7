#!/usr/bin/env bash
# The README's two commands on a fresh machine: builds a minimal Debian
# bookworm root (debootstrap --variant=minbase), gives it this machine's
# Rust toolchain and nothing else, clones the repository into it and runs
#
#   scripts/test.sh     exactly as written; fails on any error or skipped test
#   scripts/demo.sh     in the background; its mail read with curl pop3://,
#                       then stopped with SIGINT (Ctrl-C) and checked clean
#
# and checks that the run left nothing in /tmp or /dev/shm and installed
# nothing into the system Python's site-packages.
#
#   scripts/fresh-machine-check.sh [COMMIT]      # default: HEAD
#
# Needs root (debootstrap, chroot, mounts) and the Debian mirror.  The
# pristine root is cached as a tarball in $FRESH_CACHE (default
# /var/cache/popgate-fresh), keyed by the recipe that builds it; every run
# unpacks a new copy and removes it afterwards, unmounting everything even
# on failure.  FRESH_KEEP=1 keeps the run's root (unmounted) for debugging;
# FRESH_REUSE=DIR runs again in such a kept run directory (the clone is
# moved to COMMIT, its build kept), which is quicker while fixing a failure.
#
# The root gets this machine's network settings, as a new machine on the
# same network would have them: /etc/resolv.conf, the /etc/hosts every
# installed Debian has (debootstrap writes none), the local CA certificates
# of /usr/local/share/ca-certificates (a TLS-intercepting proxy's, say; the
# ca-certificates package adds them to the system's bundle) and the
# variables that point TLS clients at that bundle (PIP_CERT, SSL_CERT_FILE
# ...), when they are set.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE=bookworm
MIRROR="${FRESH_MIRROR:-http://deb.debian.org/debian}"
CACHE="${FRESH_CACHE:-/var/cache/popgate-fresh}"
WORKDIR="${FRESH_WORKDIR:-/var/tmp}"
COMMIT="$(git -C "$REPO" rev-parse --verify "${1:-HEAD}^{commit}")"

say() { printf 'fresh-machine-check: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and mounts need it)"

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap"
    # shellcheck source=scripts/apt.sh
    source "$REPO/scripts/apt.sh"
    apt_install debootstrap
fi

# The Rust toolchain as rustup installed it: its two homes.
CARGO_BIN="$(command -v cargo)" || die "no cargo on PATH"
CARGO_HOME_DIR="${CARGO_HOME:-$(cd "$(dirname "$(readlink -f "$CARGO_BIN")")/.." && pwd)}"
RUSTUP_HOME_DIR="$(rustup show home 2>/dev/null || echo "${RUSTUP_HOME:-$HOME/.rustup}")"
[ -x "$CARGO_HOME_DIR/bin/cargo" ] || die "cargo home $CARGO_HOME_DIR has no bin/cargo"
[ -d "$RUSTUP_HOME_DIR/toolchains" ] || die "rustup home $RUSTUP_HOME_DIR has no toolchains"

# --- the pristine root, cached ----------------------------------------------
build_root() {
    debootstrap --variant=minbase "$SUITE" "$1" "$MIRROR"
}
KEY="$(printf '%s\n' "$SUITE" "$MIRROR" "$(declare -f build_root)" | sha256sum | cut -c1-16)"
TARBALL="$CACHE/$SUITE-minbase-$KEY.tar"
if [ ! -s "$TARBALL" ]; then
    mkdir -p "$CACHE"
    build="$(mktemp -d "$CACHE/build.XXXXXX")"
    say "building the $SUITE minbase root (cached as $TARBALL)"
    if ! build_root "$build/root" >"$build/debootstrap.log" 2>&1; then
        tail -n 30 "$build/debootstrap.log" >&2
        rm -rf --one-file-system "$build"
        die "debootstrap failed"
    fi
    tar -C "$build/root" -cf "$build/root.tar" .
    find "$CACHE" -maxdepth 1 -name "$SUITE-minbase-*.tar" -delete
    mv "$build/root.tar" "$TARBALL"
    rm -rf --one-file-system "$build"
fi

# --- one run's root ---------------------------------------------------------
if [ -n "${FRESH_REUSE:-}" ]; then
    RUN="$(cd "$FRESH_REUSE" && pwd)"
    [ -d "$RUN/root/root/popgate" ] || die "$RUN holds no kept run"
    FRESH_KEEP=1
else
    RUN="$(mktemp -d "$WORKDIR/popgate-fresh.XXXXXX")"
fi
R="$RUN/root"
LOG="$RUN/log"
mkdir -p "$R" "$LOG"

# The TLS trust settings of this machine, passed into the root.
TLS_ENV=()
for var in PIP_CERT SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE; do
    if [ -n "${!var:-}" ]; then TLS_ENV+=("$var=${!var}"); fi
done

# Every process whose root is the run's root (the chroot's, all started here).
chroot_pids() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

stop_chroot_processes() {
    local pids
    mapfile -t pids < <(chroot_pids)
    [ "${#pids[@]}" -eq 0 ] && return 0
    say "stopping ${#pids[@]} process(es) left in the root"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        mapfile -t pids < <(chroot_pids)
        [ "${#pids[@]}" -eq 0 ] && return 0
        sleep 0.2
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 1
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_chroot_processes
    if mountpoint -q "$R"; then
        umount -R "$R" || umount -R -l "$R" || true
    fi
    if grep -q " $RUN/" /proc/mounts; then
        say "mounts remain under $RUN; not removing it"
        rc=1
    elif [ -n "${FRESH_KEEP:-}" ]; then
        say "kept the run's root: $R (logs in $LOG)"
    else
        rm -rf --one-file-system "$RUN"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${FRESH_REUSE:-}" ]; then
    say "unpacking a fresh root into $R"
    tar -C "$R" -xf "$TARBALL"
fi

# $R is made a mount point of its own so that one `umount -R` takes
# everything below it.
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
# The control groups as the machine has them mounted, as on any installed
# system: the container test's runc needs them.
if mountpoint -q /sys/fs/cgroup; then
    mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
fi
# A private /dev: the usual nodes, a new pts instance and an empty /dev/shm,
# so the host's /dev is never written to and the run's leftovers are visible.
mount -t tmpfs -o mode=755,nosuid dev "$R/dev"
for node in null zero full random urandom tty; do
    touch "$R/dev/$node"
    mount --bind "/dev/$node" "$R/dev/$node"
done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
if [ ! -e "$R/etc/hosts" ]; then
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
fi
mkdir -p "$R/usr/local/share/ca-certificates"
find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' \
    -exec cp -L {} "$R/usr/local/share/ca-certificates/" \;

# The toolchain, read-only, at the paths rustup gave it; the crates.io
# registry is shared (download time), the target directory is the clone's
# own, so a missing C linker shows.
mkdir -p "$R/root/.cargo" "$R/root/.rustup"
mount --bind "$CARGO_HOME_DIR" "$R/root/.cargo"
mount -o remount,bind,ro "$R/root/.cargo"
mount --bind "$RUSTUP_HOME_DIR" "$R/root/.rustup"
mount -o remount,bind,ro "$R/root/.rustup"
if [ -d "$CARGO_HOME_DIR/registry" ]; then
    mount --bind "$CARGO_HOME_DIR/registry" "$R/root/.cargo/registry"
fi

ORIGIN="$(git -C "$REPO" rev-parse --path-format=absolute --git-common-dir)"
if [ -n "${FRESH_REUSE:-}" ]; then
    say "moving the kept clone to $COMMIT"
    git -C "$R/root/popgate" fetch --quiet "$ORIGIN" "$COMMIT"
else
    say "cloning $COMMIT into /root/popgate"
    git clone --quiet --no-checkout "$ORIGIN" "$R/root/popgate"
fi
git -C "$R/root/popgate" checkout --quiet --detach "$COMMIT"

# A login shell's environment on a machine where rustup put cargo on PATH.
in_root() {
    chroot "$R" /usr/bin/env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash \
        TERM=dumb LANG=C.UTF-8 CI=true ${TLS_ENV[@]+"${TLS_ENV[@]}"} \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd /root/popgate && $1"
}

listing() { (cd "$R$1" && find . -mindepth 1 -maxdepth 1 | sort); }
listing /tmp >"$LOG/tmp.before"
listing /dev/shm >"$LOG/shm.before"

start=$SECONDS
say "running scripts/test.sh in the fresh root"
# In the background with `wait`, so that a signal to this script stops the
# run at once (the traps run, the root's processes are stopped).
set +e
(in_root 'scripts/test.sh' </dev/null 2>&1 | tee "$LOG/test.log") &
wait $!
rc=$?
set -e
say "scripts/test.sh took $((SECONDS - start)) s, exit status $rc"
[ "$rc" -eq 0 ] || die "scripts/test.sh exited with status $rc"
summary="$(grep -E '^=*[ ]*[0-9]+ (passed|failed|error)' "$LOG/test.log" | tail -n 1 || true)"
[ -n "$summary" ] || die "no pytest summary line in the output of scripts/test.sh"
case "$summary" in
    *skipped*|*xfail*|*deselected*|*failed*|*error*) die "pytest: $summary" ;;
esac

# --- the demo ---------------------------------------------------------------
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
say "starting scripts/demo.sh on port $PORT"
# Its own session, with SIGINT at its default (a background job of a script
# would ignore it), so that SIGINT to the group is what Ctrl-C does.
setsid env --default-signal=INT chroot "$R" /usr/bin/env -i HOME=/root USER=root \
    LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8 POPGATE_DEMO_PORT="$PORT" \
    ${TLS_ENV[@]+"${TLS_ENV[@]}"} \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c 'cd /root/popgate && exec scripts/demo.sh' </dev/null >"$LOG/demo.log" 2>&1 &
DEMO=$!
listing=""
for _ in $(seq 1200); do
    listing="$(in_root "curl -sS --max-time 10 pop3://demo:demo@127.0.0.1:$PORT/" 2>/dev/null)" && break
    listing=""
    kill -0 "$DEMO" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$listing" ]; then
    tail -n 40 "$LOG/demo.log" >&2
    die "the demo did not serve pop3://demo:demo@127.0.0.1:$PORT/"
fi
printf '%s\n' "$listing" | sed 's/^/  curl LIST: /' >&2
count="$(printf '%s\n' "$listing" | grep -cE '^[0-9]+ [0-9]+' || true)"
[ "$count" -ge 1 ] || die "the demo's mailbox listing is empty"
first="$(in_root "curl -sS --max-time 10 pop3://demo:demo@127.0.0.1:$PORT/1")"
printf '%s\n' "$first" | grep -q '^Subject: ' || die "message 1 from the demo has no Subject header"
say "the demo served $count messages; stopping it with SIGINT"
kill -INT -- "-$DEMO"
for _ in $(seq 300); do
    kill -0 "$DEMO" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$DEMO" 2>/dev/null && die "the demo did not stop within 30 s of SIGINT"
set +e
wait "$DEMO"
demo_rc=$?
set -e
grep -q 'temporary files removed' "$LOG/demo.log" || die "the demo did not report its clean-up"
left="$(chroot_pids | wc -l)"
[ "$left" -eq 0 ] || { ps -o pid,args -p "$(chroot_pids | paste -sd,)" >&2 || true
    die "$left process(es) still running in the root after the demo stopped"; }
say "the demo stopped (status $demo_rc) and cleaned up"

# --- what the run left behind -----------------------------------------------
listing /tmp >"$LOG/tmp.after"
listing /dev/shm >"$LOG/shm.after"
for d in tmp shm; do
    if ! diff -u "$LOG/$d.before" "$LOG/$d.after" >"$LOG/$d.diff"; then
        cat "$LOG/$d.diff" >&2
        die "the run left files behind in /${d/shm/dev\/shm}"
    fi
done
site="$(in_root 'find /usr/local/lib/python3*/dist-packages -mindepth 1 -maxdepth 1 2>/dev/null || true')"
[ -z "$site" ] || die "the run installed into the system Python: $site"
pip_system="$(in_root 'python3 -m pip --version 2>/dev/null || true')"
[ -z "$pip_system" ] || die "pip is installed for the system Python: $pip_system"

say "passed in $((SECONDS - start)) s: scripts/test.sh ($summary) and scripts/demo.sh on a fresh $SUITE"
echo "$summary"

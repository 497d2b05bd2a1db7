#!/usr/bin/env bash
# Install what the build, the end-to-end tests and the demo need on a
# minimal Debian/Ubuntu with a Rust toolchain:
#
#   gcc, libc6-dev    the C compiler and C library files Rust needs to link
#                     (cargo calls `cc`) and to build ring
#   g++               the C++ compiler that builds libFuzzer for the fuzz
#                     targets (scripts/fuzz.sh)
#   dovecot-imapd, dovecot-pop3d
#                     the IMAP server behind popgate, and its POP3 to compare
#   fetchmail, getmail6, mpop, curl
#                     the real POP3 clients the tests drive
#   redis-server      the Redis the shared state store is tested against
#                     (throwaway instances, tests/e2e/redisserver.py)
#   redis-tools       redis-cli, with which the tests read and stop that Redis
#   haproxy           the load balancer in front of several popgate instances
#                     sharing one Redis (PROXY protocol, health checks)
#   podman, buildah, runc
#                     build deploy/Dockerfile's runtime stage from the release
#                     binary and run it (tests/e2e/test_container.py); runc
#                     because crun fails on some kernels' cgroups, and no
#                     registry is needed: the test makes its own base image
#   openssl           test certificates
#   systemd           systemd-analyze, which checks the shipped systemd unit
#                     (it works without systemd running)
#   procps, ca-certificates, python3, python3-venv
#                     ps/kill, TLS roots for pip, the interpreter that runs
#                     the tests and the demo's Dovecot helper
#
# and the project's Python environment (.venv, scripts/venv.sh: pytest and
# the other Python tools; nothing goes into the system Python), and the
# OAuth2 authorization server of the tests (scripts/install-authserver.sh:
# Node.js and npm when missing, oidc-provider pinned by package-lock.json).
#
# CI needs this script only.  The benchmark (bench/, not part of CI) also
# uses nginx's mail proxy: scripts/install-bench-deps.sh installs it
# (bench/run.sh calls it).
#
# Idempotent and quick when everything is present: apt-get runs only when a
# package is missing (scripts/apt.sh).  Works without a terminal (CI=true, no stdin).
# Runs as root, or through passwordless sudo.
#
# The tests start their own throwaway Dovecot, Redis and HAProxy instances;
# a system-wide Dovecot, redis-server or HAProxy that the package
# installation starts is stopped again (and disabled under systemd).  One
# that was already installed before this script is left alone.
set -euo pipefail

PACKAGES=(gcc g++ libc6-dev dovecot-imapd dovecot-pop3d fetchmail getmail6 mpop curl
    redis-server redis-tools haproxy podman buildah runc
    openssl systemd procps ca-certificates python3 python3-venv)

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
# haproxy and the daemons live in sbin, which a user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
exec </dev/null

log() { printf 'install-deps: %s\n' "$*" >&2; }

missing_packages() {
    local installed pkg
    installed=" $(dpkg-query -W -f='${Package}:${db:Status-Status} ' "${PACKAGES[@]}" 2>/dev/null || true) "
    for pkg in "${PACKAGES[@]}"; do
        case "$installed" in
            *" $pkg:installed "*) ;;
            *) printf '%s\n' "$pkg" ;;
        esac
    done
}

installed_before() {
    if dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; then
        echo yes
    else
        echo no
    fi
}
dovecot_installed_before="$(installed_before dovecot-core)"
redis_installed_before="$(installed_before redis-server)"
haproxy_installed_before="$(installed_before haproxy)"

mapfile -t MISSING < <(missing_packages)

if [ "${#MISSING[@]}" -gt 0 ]; then
    log "installing ${MISSING[*]}"
    apt_install "${MISSING[@]}"
fi

# Stop a system service that this installation brought up (some init
# systems ignore policy-rc.d), and disable it under systemd.  Never fails on
# systems without systemd.  Arguments: the daemon's command, its SysV init
# script name, the pid file of the system instance, the systemd units.
stop_system_service() {
    local daemon="$1" initscript="$2" pidfile="$3" pid
    shift 3
    command -v "$daemon" >/dev/null 2>&1 || return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl stop "$@" >/dev/null 2>&1 || true
        as_root systemctl disable "$@" >/dev/null 2>&1 || true
        return 0
    fi
    if [ -x "/etc/init.d/$initscript" ]; then
        as_root "/etc/init.d/$initscript" stop >/dev/null 2>&1 || true
    fi
    # Without an init system the daemon may still be up: stop exactly the
    # processes named in the system instance's pid file (HAProxy's may
    # name several).
    if [ -r "$pidfile" ]; then
        for pid in $(cat "$pidfile" 2>/dev/null || true); do
            case "$pid" in ''|*[!0-9]*) continue ;; esac
            if kill -0 "$pid" 2>/dev/null; then
                as_root kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    fi
}

if [ "$dovecot_installed_before" = no ]; then
    stop_system_service dovecot dovecot /run/dovecot/master.pid \
        dovecot.service dovecot.socket
fi
if [ "$redis_installed_before" = no ]; then
    stop_system_service redis-server redis-server /run/redis/redis-server.pid \
        redis-server.service
fi
if [ "$haproxy_installed_before" = no ]; then
    stop_system_service haproxy haproxy /run/haproxy.pid haproxy.service
fi

# pytest and the other Python tools, in the project's virtual environment.
VENV_PYTHON="$(bash "$(dirname "${BASH_SOURCE[0]}")/venv.sh")"

# oidc-provider for the OAuth2 tests (tests/e2e/authserver/).
bash "$(dirname "${BASH_SOURCE[0]}")/install-authserver.sh"

for tool in cc c++ dovecot doveconf fetchmail getmail mpop curl redis-server redis-cli \
        haproxy systemd-analyze node; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool not found after install"; exit 1; }
done
log "ok: dovecot $(dovecot --version | cut -d' ' -f1), $(redis-server --version | cut -d' ' -f1-3), $(haproxy -v | head -1 | cut -d' ' -f1-3), $("$VENV_PYTHON" -m pytest --version 2>&1 | head -1) in $(dirname "$(dirname "$VENV_PYTHON")")"

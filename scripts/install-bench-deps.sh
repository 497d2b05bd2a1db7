#!/usr/bin/env bash
# Installs what the benchmark (bench/run.py) needs beyond scripts/install-deps.sh:
# Debian's `nginx` and `libnginx-mod-mail`, nginx's mail proxy, the second
# reference beside Dovecot's own POP3 in workloads d, e, h and j. CI does not
# need this script (the benchmark is not part of CI); CI needs only
# scripts/install-deps.sh.
#
# Idempotent and quick when everything is there; needs no terminal (no
# standard input). The package's own system service is never left running:
# the benchmark starts its own nginx on free loopback ports, and a stray
# service would hold port 80 for nothing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
PACKAGES=(nginx libnginx-mod-mail)
MODULE=/usr/lib/nginx/modules/ngx_mail_module.so

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "install-bench-deps.sh: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

installed() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] ||
            return 1
    done
    command -v nginx >/dev/null 2>&1 && [ -f "$MODULE" ]
}

# Stops the packaged service if it runs, and keeps it from starting at
# boot; never fails, whatever the service manager.
stop_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl stop nginx.service >/dev/null 2>&1 || true
        as_root systemctl disable nginx.service >/dev/null 2>&1 || true
    elif [ -r /run/nginx.pid ]; then
        # Without systemd: exactly the process of the system instance's pid file.
        pid="$(cat /run/nginx.pid 2>/dev/null || true)"
        case "$pid" in
            ''|*[!0-9]*) ;;
            *) kill -0 "$pid" 2>/dev/null && as_root kill -QUIT "$pid" 2>/dev/null || true ;;
        esac
    fi
    return 0
}

if installed; then
    exit 0
fi

# Keep maintainer scripts from starting the service during the install
# (invoke-rc.d honours policy-rc.d). An existing policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    made_policy=1
fi
cleanup() {
    if [ -n "$made_policy" ]; then
        as_root rm -f "$policy" || true
    fi
}
trap cleanup EXIT

apt_install() {
    as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}" </dev/null
}

# The package lists are refreshed only when the packages cannot be found in
# them (a fresh machine has none).
if ! apt-cache show "${PACKAGES[@]}" >/dev/null 2>&1 || ! apt_install; then
    as_root apt-get update -q </dev/null
    apt_install
fi

stop_service

if ! installed; then
    echo "install-bench-deps.sh: nginx or its mail module still missing after apt-get install" >&2
    exit 1
fi
echo "install-bench-deps.sh: $(nginx -v 2>&1 | head -n 1), mail module $MODULE"

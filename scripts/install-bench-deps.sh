#!/usr/bin/env bash
# Installs what the benchmark (bench/run.py) needs beyond scripts/install-deps.sh:
# Debian's `nginx` and `libnginx-mod-mail`, nginx's mail proxy, the second
# reference beside Dovecot's own POP3 in workloads d, e, h and j, and
# `linux-perf` for bench/session_cpu.py and profiling. CI does not
# need this script (the benchmark is not part of CI); CI needs only
# scripts/install-deps.sh.
#
# Idempotent and quick when everything is there; needs no terminal (no
# standard input). The package's own system service is never left running:
# the benchmark starts its own nginx on free loopback ports, and a stray
# service would hold port 80 for nothing.
set -euo pipefail

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
PACKAGES=(nginx libnginx-mod-mail linux-perf)
MODULE=/usr/lib/nginx/modules/ngx_mail_module.so

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

apt_install "${PACKAGES[@]}"
stop_service

if ! installed; then
    echo "install-bench-deps.sh: nginx, its mail module or perf still missing after apt-get install" >&2
    exit 1
fi
echo "install-bench-deps.sh: $(nginx -v 2>&1 | head -n 1), mail module $MODULE"

#!/usr/bin/env bash
# Installs Debian's `prometheus` package, which brings `promtool` (used to
# check the metrics exposition and to check and unit-test the alerting rules)
# and the `prometheus` server (used by the end-to-end test that evaluates the
# dashboard's and the rules' queries against a real popgate).
#
# Idempotent and quick when everything is there; needs no terminal (CI=true,
# no standard input). The package's own system service is never left
# running: the tests start their own server on a free loopback port, and a
# stray service would hold port 9090 and scrape for nothing.
set -euo pipefail

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

installed() {
    [ "$(dpkg-query -W -f='${Status}' prometheus 2>/dev/null || true)" = "install ok installed" ] &&
        command -v promtool >/dev/null 2>&1 &&
        command -v prometheus >/dev/null 2>&1
}

# Stops the packaged service if it runs, and keeps it from starting at boot.
# Whatever the service manager (systemd, sysvinit, none), this never fails.
stop_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-active --quiet prometheus.service 2>/dev/null; then
            as_root systemctl stop prometheus.service >/dev/null 2>&1 || true
            echo "install-prometheus.sh: stopped the prometheus system service"
        fi
        if systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
            as_root systemctl disable prometheus.service >/dev/null 2>&1 || true
        fi
    elif [ -x /etc/init.d/prometheus ]; then
        # Without systemd the init script knows the service's own pid file,
        # so only that process is stopped.
        if /etc/init.d/prometheus status >/dev/null 2>&1; then
            as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
            echo "install-prometheus.sh: stopped the prometheus init.d service"
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
        fi
    fi
    return 0
}

if installed; then
    stop_service
    exit 0
fi

apt_install prometheus
stop_service

if ! installed; then
    echo "install-prometheus.sh: prometheus/promtool still missing after apt-get install" >&2
    exit 1
fi
echo "install-prometheus.sh: $(promtool --version 2>&1 | head -n 1)"

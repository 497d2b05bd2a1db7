# shellcheck shell=bash
# Sourced by the install scripts: Debian packages installed the same way
# everywhere. Needs no terminal; runs as root, or through passwordless sudo.
#
#   as_root CMD...          CMD as root
#   apt_install PKG...      installs the packages, starting no service
#
# apt_install refreshes the package lists only when the packages cannot be
# found in them or installed from them (a fresh machine has no lists, an old
# one stale ones), so it is quick when the lists are current. Maintainer
# scripts are kept from starting the packages' services by a policy-rc.d
# that answers 101, "action forbidden" (invoke-rc.d and deb-systemd-invoke
# honour it); one that exists already, as container images often have, is
# left alone. Changed configuration files are kept.

export DEBIAN_FRONTEND=noninteractive

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "$(basename "$0"): need root (or sudo) to run: $*" >&2
        return 1
    fi
}

apt_install() {
    local policy=/usr/sbin/policy-rc.d rc=0 caller_trap
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$(basename "$0"): no apt-get; install $* by hand" >&2
        return 1
    fi
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" || return 1
        caller_trap="$(trap -p EXIT)"
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    else
        policy=""
    fi
    if ! apt-cache show "$@" >/dev/null 2>&1 || ! _apt_get_install "$@"; then
        as_root apt-get update -q </dev/null && _apt_get_install "$@" || rc=$?
    fi
    if [ -n "$policy" ]; then
        as_root rm -f "$policy" || true
        trap - EXIT
        eval "$caller_trap"
    fi
    return "$rc"
}

_apt_get_install() {
    as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@" </dev/null
}

#!/usr/bin/env bash
# Install the OAuth2 authorization server the end-to-end tests start
# (oidc-provider from npm, tests/e2e/authserver/): Node.js and npm from
# Debian when missing, then the packages pinned in package-lock.json with
# `npm ci`. Idempotent: npm runs only when package-lock.json changed since
# the last install (its digest is kept in node_modules).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf 'install-authserver: %s\n' "$*" >&2; }

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/e2e/authserver" && pwd)"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    SUDO=()
fi
as_root() { ${SUDO[@]+"${SUDO[@]}"} "$@"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends nodejs npm
fi

stamp="$DIR/node_modules/.popgate-lock-sha256"
want="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ -r "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$DIR/node_modules/oidc-provider" ]; then
    exit 0
fi
log "npm ci in $DIR"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
printf '%s\n' "$want" > "$stamp"
log "ok: oidc-provider $(node -p "require('$DIR/node_modules/oidc-provider/package.json').version"), node $(node --version)"

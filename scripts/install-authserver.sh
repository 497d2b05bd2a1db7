#!/usr/bin/env bash
# Install the OAuth2 authorization server the end-to-end tests start
# (oidc-provider from npm, tests/e2e/authserver/): Node.js and npm from
# Debian when missing, then the packages pinned in package-lock.json with
# `npm ci`. Idempotent: npm runs only when package-lock.json changed since
# the last install (its digest is kept in node_modules).
set -euo pipefail

# shellcheck source=scripts/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
exec </dev/null

log() { printf 'install-authserver: %s\n' "$*" >&2; }

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/e2e/authserver" && pwd)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm"
    apt_install nodejs npm
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

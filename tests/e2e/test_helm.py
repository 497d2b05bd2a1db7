"""The deployment artifacts, validated offline: the Helm chart in
helm/popgate (lint, render, strict Kubernetes schemas, values schema, the
popgate config it renders, dashboards and rules from their one source, the
README's values table), the Dockerfile and the systemd unit in deploy/.

Tools: helm, kubernetes-validate and hadolint come from
`bash scripts/install-helm.sh`; the popgate binary from
`cargo build --release` (or $POPGATE_BIN).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "popgate"
CI_VALUES = {p.name: p for p in sorted((CHART / "ci").glob("*-values.yaml"))}
DEPLOY = REPO / "deploy"

# The Kubernetes versions the chart claims (Chart.yaml kubeVersion >=1.29);
# every minor in between is validated too.
KUBE_VERSIONS = [f"1.{m}.0" for m in range(29, 35)]
# Kinds from CRDs, which kubernetes-validate has no schema for.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
}

# The single sources the chart links to (helm/popgate/files/*).
DASHBOARDS_SRC = REPO / "grafana"
RULES_SRC = REPO / "deploy" / "prometheus" / "popgate-rules.yaml"
LINKS = {
    "files/dashboards": "../../../grafana",
    "files/popgate-rules.yaml": "../../../deploy/prometheus/popgate-rules.yaml",
}

INSTALL_HINT = "run `bash scripts/install-helm.sh` (installs helm, kubernetes-validate, hadolint)"
# helm notes every symbolic link it follows on stderr; nothing else may appear.
SYMLINK_NOTE = re.compile(r"^walk\.go:\d+: found symbolic link in path: .*$")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} is not installed: {INSTALL_HINT}", pytrace=False)
    return path


def popgate_bin() -> str:
    path = os.environ.get("POPGATE_BIN") or str(REPO / "target" / "release" / "popgate")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no popgate binary at {path}: run `cargo build --release`", pytrace=False)
    return path


def sources_missing() -> list[str]:
    missing = []
    if not sorted(DASHBOARDS_SRC.glob("*.json")):
        missing.append(f"{DASHBOARDS_SRC.relative_to(REPO)}/*.json")
    if not RULES_SRC.is_file():
        missing.append(str(RULES_SRC.relative_to(REPO)))
    return missing


def materialize(src: Path, dst: Path) -> None:
    """Copies a chart, replacing each symbolic link with what it points to
    (dropping links whose target does not exist)."""
    shutil.copytree(src, dst, symlinks=True)
    for link in [p for p in dst.rglob("*") if p.is_symlink()]:
        target = (src / link.relative_to(dst)).resolve()
        link.unlink()
        if target.is_dir():
            shutil.copytree(target, link)
        elif target.is_file():
            shutil.copy2(target, link)


@pytest.fixture(scope="session")
def helm() -> str:
    return need("helm")


@pytest.fixture(scope="session")
def chart(tmp_path_factory) -> Path:
    """The chart directory to run helm on: the chart itself, or, while the
    dashboards or rules it links to do not exist yet, a copy with stand-ins
    for them (the single-source test skips then, saying so)."""
    if not sources_missing():
        return CHART
    copy = tmp_path_factory.mktemp("chart") / "popgate"
    materialize(CHART, copy)
    dash = copy / "files" / "dashboards"
    dash.mkdir(parents=True, exist_ok=True)
    if not list(dash.glob("*.json")):
        (dash / "stand-in.json").write_text('{"title": "stand-in"}\n')
    rules = copy / "files" / "popgate-rules.yaml"
    if not rules.exists():
        rules.write_text("groups:\n  - name: stand-in\n    rules: []\n")
    return copy


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def helm_stderr(proc: subprocess.CompletedProcess) -> str:
    return "\n".join(
        line for line in proc.stderr.splitlines() if line.strip() and not SYMLINK_NOTE.match(line)
    )


def render(helm: str, chart: Path, values: Path | None = None, *args: str) -> list[dict]:
    cmd = [helm, "template", "popgate", str(chart), "--namespace", "mail"]
    if values is not None:
        cmd += ["-f", str(values)]
    proc = run(cmd + list(args))
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    assert helm_stderr(proc) == "", f"helm template printed:\n{helm_stderr(proc)}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(docs: list[dict], kind: str, name_suffix: str = "") -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)
    ]


def popgate_config(docs: list[dict]) -> str:
    (cm,) = [d for d in find(docs, "ConfigMap") if "popgate.yaml" in d.get("data", {})]
    return cm["data"]["popgate.yaml"]


def deployment(docs: list[dict]) -> dict:
    (dep,) = find(docs, "Deployment")
    return dep


def test_ci_values_files_exist():
    assert set(CI_VALUES) == {
        "default-values.yaml", "all-on-values.yaml", "redis-values.yaml"
    }, CI_VALUES


# --- helm lint and template ------------------------------------------------


@pytest.mark.parametrize("values", sorted(CI_VALUES))
@pytest.mark.parametrize("kube", [KUBE_VERSIONS[0], KUBE_VERSIONS[-1]])
def test_helm_lint_strict(helm, chart, values, kube):
    proc = run(
        [helm, "lint", "--strict", str(chart), "-f", str(CI_VALUES[values]), "--kube-version", kube]
    )
    assert proc.returncode == 0, f"helm lint --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_default_render(helm, chart):
    docs = render(helm, chart, CI_VALUES["default-values.yaml"])
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget",
         "Service", "Service", "ServiceAccount"]
    ), kinds
    # The sidecar listens on the pod's address for the kubelet's probes; by
    # default only the monitoring namespace may reach it.
    metrics_rule = find(docs, "NetworkPolicy")[0]["spec"]["ingress"][1]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics_rule["from"], "the metrics port is open to every pod"
    dep = deployment(docs)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # Hardening.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    # Probes on the sidecar.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # Pods roll when the config changes.
    assert re.fullmatch(
        r"[0-9a-f]{64}", dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert all("labelSelector" in t for t in pod["topologySpreadConstraints"])
    # Only POP3 on the POP3 Service; metrics on a ClusterIP Service of its own.
    pop3 = find(docs, "Service", "popgate")[0]
    assert [p["port"] for p in pop3["spec"]["ports"]] == [110]
    metrics = find(docs, "Service", "-metrics")[0]
    assert metrics["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]
    # The UIDL memory: on a claim that outlives the pod, one pod, replaced
    # (never two at once on the store).
    assert yaml.safe_load(popgate_config(docs))["state"] == {
        "path": "/var/lib/popgate", "on_unavailable": "refuse"
    }
    (claim,) = find(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"name": "state", "mountPath": "/var/lib/popgate"} in c["volumeMounts"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "state"]
    assert vol["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


# The schema's complaint about several pods on the embedded store: the
# setting at fault and the way out, state.redis.url.
EMBEDDED_STORE_ERRORS = {
    "replicaCount=2": ["at '/replicaCount': maximum: got 2, want 1"],
    "autoscaling.enabled=true": ["at '/autoscaling/enabled': value must be false"],
}


def test_state_needs_a_single_pod(helm, chart):
    for setting, errors in EMBEDDED_STORE_ERRORS.items():
        proc = run([helm, "template", "popgate", str(chart), "--set", setting])
        assert proc.returncode != 0, setting
        assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
        for error in errors + ["at '/state/redis/url': minLength: got 0, want 1"]:
            assert error in proc.stderr, proc.stderr
        # The template refuses it too, should the schema be skipped.
        proc = run(
            [helm, "template", "popgate", str(chart), "--set", setting, "--skip-schema-validation"]
        )
        assert proc.returncode != 0, setting
        assert "state.enabled without state.redis.url" in proc.stderr, proc.stderr
    docs = render(helm, chart, None, "--set", "replicaCount=3", "--set", "state.enabled=false")
    assert not find(docs, "PersistentVolumeClaim")
    assert "state" not in yaml.safe_load(popgate_config(docs))
    assert deployment(docs)["spec"]["replicas"] == 3


def test_config_change_rolls_the_pods(helm, chart):
    def checksum(*args: str) -> str:
        docs = render(helm, chart, None, *args)
        return deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum()
    assert checksum() == base, "the checksum must be stable"
    assert checksum("--set", "config.session.idleTimeout=20m") != base
    assert checksum("--set", "drain.timeoutSeconds=40") != base


def test_all_on_render(helm, chart):
    docs = render(helm, chart, CI_VALUES["all-on-values.yaml"])
    kinds = {d["kind"] for d in docs}
    for kind in [
        "Deployment", "ConfigMap", "Service", "ServiceAccount", "ServiceMonitor",
        "PrometheusRule", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "NetworkPolicy", "Certificate",
    ]:  # fmt: skip
        assert kind in kinds, f"{kind} not rendered with all-on-values.yaml"
    dashboards = [
        d for d in find(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert dashboards, "no ConfigMap labelled grafana_dashboard: \"1\""
    dep = deployment(docs)
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert {"name": "tls", "mountPath": "/etc/popgate/tls", "readOnly": True} in c["volumeMounts"]
    (tls_vol,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    (cert,) = find(docs, "Certificate")
    assert tls_vol["secret"]["secretName"] == cert["spec"]["secretName"]
    svc = find(docs, "Service", "popgate")[0]["spec"]
    assert svc["type"] == "LoadBalancer" and svc["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in svc["ports"]] == [110, 995]
    np = find(docs, "NetworkPolicy")[0]["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    metrics_rule = np["ingress"][1]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    sm = find(docs, "ServiceMonitor")[0]["spec"]
    metrics_svc = find(docs, "Service", "-metrics")[0]
    for k, v in sm["selector"]["matchLabels"].items():
        assert metrics_svc["metadata"]["labels"][k] == v, "ServiceMonitor misses the metrics Service"
    pop3_labels = find(docs, "Service", "popgate")[0]["metadata"]["labels"]
    assert not all(
        pop3_labels.get(k) == v for k, v in sm["selector"]["matchLabels"].items()
    ), "ServiceMonitor would also select the POP3 Service"


def test_redis_render(helm, chart):
    """Three pods sharing their state in Redis: the state section names the
    server and the mounted password file, the Secret's key is mounted alone
    and read-only, no claim, rolling updates, Redis allowed out."""
    values = yaml.safe_load(CI_VALUES["redis-values.yaml"].read_text())
    redis = values["state"]["redis"]
    docs = render(helm, chart, CI_VALUES["redis-values.yaml"])
    assert not find(docs, "PersistentVolumeClaim")
    cfg = yaml.safe_load(popgate_config(docs))
    assert cfg["state"] == {
        "redis": {
            "url": redis["url"],
            "password_file": "/etc/popgate/redis/password",
            "key_prefix": "popgate:",
            "timeout": "2s",
            "lease": "30s",
        },
        "on_unavailable": "refuse",
    }
    assert cfg["session"]["exclusive"] is True
    dep = deployment(docs)
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert not [m for m in c["volumeMounts"] if m["name"] == "state"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "redis-password"]
    assert mount == {"name": "redis-password", "mountPath": "/etc/popgate/redis", "readOnly": True}
    (vol,) = [v for v in pod["volumes"] if v["name"] == "redis-password"]
    assert vol["secret"]["secretName"] == redis["existingSecret"] == "popgate-valkey"
    assert vol["secret"]["items"] == [{"key": "password", "path": "password", "mode": 0o400}]
    assert vol["secret"]["defaultMode"] == 0o400
    assert cfg["state"]["redis"]["password_file"] == f"{mount['mountPath']}/password"
    # The NetworkPolicy lets the pods out to Redis, and only there.
    egress = find(docs, "NetworkPolicy")[0]["spec"]["egress"]
    (to_redis,) = [r for r in egress if {"port": 6379, "protocol": "TCP"} in r["ports"]]
    assert to_redis["to"] == values["networkPolicy"]["redis"]["to"]
    # Without a Secret: no password file, no volume; the port from the URL.
    docs = render(
        helm, chart, CI_VALUES["redis-values.yaml"],
        "--set", "state.redis.existingSecret=", "--set", "state.redis.url=rediss://[fd00::7]:6380/2",
        "--set", "state.onUnavailable=serve", "--set", "state.redis.keyPrefix=pop3:",
    )  # fmt: skip
    state = yaml.safe_load(popgate_config(docs))["state"]
    assert state["on_unavailable"] == "serve"
    assert state["redis"]["url"] == "rediss://[fd00::7]:6380/2"
    assert state["redis"]["key_prefix"] == "pop3:"
    assert "password_file" not in state["redis"]
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if v["name"] == "redis-password"]
    egress = find(docs, "NetworkPolicy")[0]["spec"]["egress"]
    assert [r for r in egress if {"port": 6380, "protocol": "TCP"} in r["ports"]]
    # The embedded store, by default, has no Redis port to reach.
    docs = render(helm, chart, CI_VALUES["default-values.yaml"])
    egress = find(docs, "NetworkPolicy")[0]["spec"]["egress"]
    assert not [r for r in egress if {"port": 6379, "protocol": "TCP"} in r["ports"]]


def embedded_store_values(tmp_path: Path, **changes) -> Path:
    """The Redis CI values file turned back to the embedded store (no URL,
    no Secret), with changes."""
    values = yaml.safe_load(CI_VALUES["redis-values.yaml"].read_text())
    values["state"]["redis"]["url"] = ""
    values["state"]["redis"]["existingSecret"] = ""
    for key, value in changes.items():
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "embedded-values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "changes, error",
    [
        ({}, "at '/replicaCount': maximum: got 3, want 1"),
        (
            {"replicaCount": 1, "autoscaling.enabled": True},
            "at '/autoscaling/enabled': value must be false",
        ),
    ],
    ids=["three-replicas", "autoscaling"],
)
def test_schema_rejects_several_pods_on_the_embedded_store(helm, chart, tmp_path, changes, error):
    values = embedded_store_values(tmp_path, **changes)
    lint = run([helm, "lint", "--strict", str(chart), "-f", str(values)])
    template = run([helm, "template", "popgate", str(chart), "-f", str(values)])
    for proc in (lint, template):
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "values don't meet the specifications of the schema" in out, out
        # The setting at fault, and the way out.
        assert error in out, out
        assert "at '/state/redis/url': minLength: got 0, want 1" in out, out
    # One pod without autoscaling is the embedded store's normal case.
    values = embedded_store_values(tmp_path, replicaCount=1)
    proc = run([helm, "lint", "--strict", str(chart), "-f", str(values)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = render(helm, chart, values)
    assert yaml.safe_load(popgate_config(docs))["state"] == {
        "path": "/var/lib/popgate", "on_unavailable": "refuse"
    }
    assert find(docs, "PersistentVolumeClaim")


def test_schema_rejects_bad_redis_settings(helm, chart):
    for settings, needle in [
        (["state.enabled=false", "state.redis.url=redis://valkey:6379"],
         "at '/state/enabled': value must be true"),
        (["state.redis.url=http://valkey:6379"], "at '/state/redis/url': 'http://valkey:6379' does not match"),
        # A password in the URL would stand in the ConfigMap.
        (["state.redis.url=redis://:hunter2@valkey:6379/0"], "at '/state/redis/url'"),
        (["state.redis.url=redis://popgate:hunter2@valkey:6379/0"], "at '/state/redis/url'"),
        (["state.redis.url=redis://valkey:6379", "state.onUnavailable=wait"], "onUnavailable"),
        (["state.redis.url=redis://valkey:6379", "state.redis.lease=thirty"], "lease"),
    ]:  # fmt: skip
        args = [a for s in settings for a in ("--set", s)]
        proc = run([helm, "template", "popgate", str(chart), *args])
        assert proc.returncode != 0, settings
        assert needle in proc.stderr, proc.stderr
    # A Secret without a URL would be mounted for nothing: the template says so.
    proc = run([helm, "template", "popgate", str(chart), "--set", "state.redis.existingSecret=x"])
    assert proc.returncode != 0
    assert "state.redis.existingSecret needs state.enabled and state.redis.url" in proc.stderr


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_grace_period_covers_drain(helm, chart, values):
    """terminationGracePeriodSeconds > preStop sleep + popgate's drain."""
    for kube in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        docs = render(helm, chart, CI_VALUES[values], "--kube-version", kube)
        pod = deployment(docs)["spec"]["template"]["spec"]
        cfg = yaml.safe_load(popgate_config(docs))
        drain = int(cfg["shutdown"]["drain_timeout"].rstrip("s"))
        (c,) = pod["containers"]
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if kube.startswith("1.29"):
            assert sleep == 0, "the preStop sleep action is off by default on 1.29"
        else:
            assert sleep > 0
        assert pod["terminationGracePeriodSeconds"] > sleep + drain


def test_grace_period_too_short_is_refused(helm, chart):
    proc = run(
        [helm, "template", "popgate", str(chart), "--set", "drain.terminationGracePeriodSeconds=20"]
    )
    assert proc.returncode != 0
    assert "terminationGracePeriodSeconds" in proc.stderr


# --- Kubernetes schemas ----------------------------------------------------


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_kubernetes_validate_strict(helm, chart, values, kube, tmp_path):
    kv = need("kubernetes-validate")
    docs = render(helm, chart, CI_VALUES[values], "--kube-version", kube)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    proc = run([kv, "--strict", "-k", kube, str(manifest)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"kubernetes-validate --strict -k {kube} failed:\n{out}"
    unknown = re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", out)
    assert {(api, kind) for kind, api in unknown} <= CRD_KINDS, f"no schema for:\n{out}"
    bad = [line for line in out.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    assert not bad, "\n".join(bad)
    crds = sum((d["apiVersion"], d["kind"]) in CRD_KINDS for d in docs)
    passed = len(re.findall(r"^INFO .* passed for resource", out, re.M))
    assert passed == len(docs) - crds, out


# Settings the CI values files do not cover, each rendered and validated.
COMBINATIONS = {
    "nodeport": ["service.type=NodePort", "service.nodePorts.pop3=30110"],
    "existing-secret-tls": ["tls.enabled=true", "tls.secretName=pop-tls"],
    "no-serviceaccount": ["serviceAccount.create=false", "podDisruptionBudget.enabled=false"],
    "digest-ipv6": [
        "image.digest=sha256:" + "ab" * 32,
        "config.bindAddress=[::]",
        "service.ipFamilies={IPv6}",
    ],
    "memory-hpa-percent-pdb": [
        "autoscaling.enabled=true",
        "state.enabled=false",
        "autoscaling.targetCPUUtilizationPercentage=null",
        "autoscaling.targetMemoryUtilizationPercentage=75",
        "podDisruptionBudget.minAvailable=50%",
    ],
    "networkpolicy-defaults": ["networkPolicy.enabled=true", "drain.preStopSleepSeconds=0"],
    "redis-autoscaling": [
        "autoscaling.enabled=true",
        "state.redis.url=rediss://valkey.cache.svc:6380/1",
        "state.redis.existingSecret=valkey-auth",
        "state.redis.secretKey=valkey-password",
    ],
}


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_value_combinations_validate(helm, chart, combo, tmp_path):
    kv = need("kubernetes-validate")
    args = [a for s in COMBINATIONS[combo] for a in ("--set", s)]
    kube = KUBE_VERSIONS[-1]
    docs = render(helm, chart, None, "--kube-version", kube, *args)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    proc = run([kv, "--strict", "-k", kube, str(manifest)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Couldn't find schema" not in out, out
    if combo != "digest-ipv6":
        return
    cfg_file = tmp_path / "popgate.yaml"
    # The store goes to a directory of the test's, not the machine's.
    cfg_file.write_text(popgate_config(docs).replace("/var/lib/popgate", str(tmp_path / "state")))
    proc = run([popgate_bin(), "--config", str(cfg_file), "--check"])
    assert proc.returncode == 0, proc.stderr
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "popgate@sha256:" + "ab" * 32


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_notes_render(helm, chart, values, tmp_path):
    """NOTES.txt renders (helm template leaves it out, so render it as a
    value of a stand-in template in a copy of the chart)."""
    copy = tmp_path / "popgate"
    materialize(chart, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "_notes.tpl").write_text(
        '{{- define "notes.preview" -}}\n' + notes + "{{- end -}}\n"
    )
    (copy / "templates" / "notes.yaml").write_text(
        'notes: {{ include "notes.preview" . | quote }}\n'
    )
    proc = run(
        [helm, "template", "popgate", str(copy), "-f", str(CI_VALUES[values]),
         "--show-only", "templates/notes.yaml"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = yaml.safe_load(proc.stdout)["notes"]
    assert "popgate" in text and "/readyz" in text, text


# --- values.schema.json ------------------------------------------------------


@pytest.mark.parametrize(
    "setting, key",
    [
        ("replicaCont=3", "replicaCont"),
        ("service.tpye=LoadBalancer", "tpye"),
        ("config.upstream.adress=imap:143", "adress"),
        ("serviceMonitor.enable=true", "enable"),
        ("tls.certManager.issuerRef.nmae=x", "nmae"),
    ],
)
def test_schema_rejects_misspelt_key(helm, chart, setting, key):
    proc = run([helm, "template", "popgate", str(chart), "--set", setting])
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert f"additional properties '{key}' not allowed" in proc.stderr, proc.stderr


def test_lint_fails_on_misspelt_key_in_values_file(helm, chart, tmp_path):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("service:\n  externalTraficPolicy: Local\n")
    proc = run([helm, "lint", "--strict", str(chart), "-f", str(bad)])
    assert proc.returncode != 0
    assert "externalTraficPolicy" in proc.stdout + proc.stderr


def test_schema_rejects_bad_values(helm, chart):
    for setting in [
        "config.upstream.address=imap.example.org",  # no port
        "config.session.idleTimeout=10 minutes",
        "service.type=Loadbalancer",
        "config.log.format=yaml",
    ]:
        proc = run([helm, "template", "popgate", str(chart), "--set", setting])
        assert proc.returncode != 0, f"--set {setting} was accepted"


# --- the popgate config the chart renders -------------------------------------


def stand_in_tls_files(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key (for --check, which
    loads the files the config names)."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("openssl is needed to make a test certificate (apt-get install openssl)")
    crt, key = directory / "tls.crt", directory / "tls.key"
    proc = run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "2",
         "-subj", "/CN=pop.example.org", "-addext", "subjectAltName=DNS:pop.example.org"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return crt, key


def file_paths(cfg: dict) -> list[str]:
    """The files popgate.yaml names (certificate, key, CA, Redis password)."""
    paths = []
    if "tls" in cfg:
        paths += [cfg["tls"]["certificate"], cfg["tls"]["key"]]
    if cfg["upstream"].get("ca_file"):
        paths.append(cfg["upstream"]["ca_file"])
    if cfg.get("state", {}).get("redis", {}).get("password_file"):
        paths.append(cfg["state"]["redis"]["password_file"])
    return paths


def stand_in_password_file(directory: Path) -> Path:
    """A password file as popgate wants one: readable by its owner only."""
    path = directory / "redis-password"
    path.write_text("stand-in\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("values", sorted(CI_VALUES))
def test_rendered_config_passes_popgate_check(helm, chart, values, tmp_path):
    binary = popgate_bin()
    docs = render(helm, chart, CI_VALUES[values])
    text = popgate_config(docs)
    cfg = yaml.safe_load(text)
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    # Every file the config names is in a volume mounted into the container.
    mounts = [m["mountPath"].rstrip("/") + "/" for m in c["volumeMounts"]]
    state_dir = [cfg["state"]["path"] + "/"] if "path" in cfg.get("state", {}) else []
    for path in file_paths(cfg) + state_dir:
        assert any(path.startswith(m) for m in mounts), f"{path} is in no volume mount"
    # --check reads those files: point it at stand-ins.
    local = text
    password = cfg.get("state", {}).get("redis", {}).get("password_file")
    if password:
        local = local.replace(password, str(stand_in_password_file(tmp_path)))
    if set(file_paths(cfg)) - {password}:
        crt, key = stand_in_tls_files(tmp_path)
        for path in set(file_paths(cfg)) - {password}:
            local = local.replace(path, str(key if path.endswith(".key") else crt))
    if "path" in cfg.get("state", {}):
        local = local.replace(cfg["state"]["path"], str(tmp_path / "state"))
    cfg_file = tmp_path / "popgate.yaml"
    cfg_file.write_text(local)
    proc = run([binary, "--config", str(cfg_file), "--check"])
    assert proc.returncode == 0, f"popgate --check refused the chart's config:\n{proc.stderr}\n{local}"
    # The config's ports are the container's.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert int(cfg["metrics"]["address"].rsplit(":", 1)[1]) == ports["metrics"]
    assert sorted(lst["name"] for lst in cfg["listeners"]) == sorted(set(ports) - {"metrics"})
    for listener in cfg["listeners"]:
        assert int(listener["address"].rsplit(":", 1)[1]) == ports[listener["name"]]
    # The container reads the file the ConfigMap provides.
    assert c["args"] == ["--config", "/etc/popgate/config/popgate.yaml"]


def test_tls_and_proxy_protocol_only_when_switched_on(helm, chart):
    off = yaml.safe_load(popgate_config(render(helm, chart, CI_VALUES["default-values.yaml"])))
    assert "tls" not in off
    assert [lst["tls"] for lst in off["listeners"]] == ["none"]
    assert not any({"proxy_protocol", "proxy_trusted"} & set(lst) for lst in off["listeners"])

    docs = render(helm, chart, CI_VALUES["all-on-values.yaml"])
    on = yaml.safe_load(popgate_config(docs))
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    assert on["tls"]["certificate"] == f"{mount['mountPath']}/tls.crt"
    assert on["tls"]["key"] == f"{mount['mountPath']}/tls.key"
    assert {lst["name"]: lst["tls"] for lst in on["listeners"]} == {
        "pop3": "starttls",
        "pop3s": "implicit",
    }
    values = yaml.safe_load(CI_VALUES["all-on-values.yaml"].read_text())
    for lst in on["listeners"]:
        assert lst["proxy_protocol"] is True
        assert lst["proxy_trusted"] == values["proxyProtocol"]["trustedCidrs"]
    # Without STLS, port 110 stays plain and POP3S still serves TLS.
    docs = render(helm, chart, CI_VALUES["all-on-values.yaml"], "--set", "tls.starttls=false")
    modes = {lst["name"]: lst["tls"] for lst in yaml.safe_load(popgate_config(docs))["listeners"]}
    assert modes == {"pop3": "none", "pop3s": "implicit"}


# --- dashboards and rules: one source of truth --------------------------------


def test_chart_links_to_the_sources():
    for rel, target in LINKS.items():
        link = CHART / rel
        assert link.is_symlink(), f"{link} must be a symbolic link to {target}"
        assert os.readlink(link) == target, f"{link} -> {os.readlink(link)}, want {target}"


def test_dashboards_and_rules_are_the_sources(helm, chart, tmp_path):
    missing = sources_missing()
    if missing:
        pytest.skip(f"not written yet: {', '.join(missing)}; the chart links to them")
    assert chart == CHART
    docs = render(helm, chart, CI_VALUES["all-on-values.yaml"])
    # Dashboards: one ConfigMap per grafana/*.json, byte for byte.
    rendered = {}
    for d in find(docs, "ConfigMap"):
        if d["metadata"]["labels"].get("grafana_dashboard") == "1":
            rendered.update(d["data"])
    sources = {p.name: p.read_text() for p in sorted(DASHBOARDS_SRC.glob("*.json"))}
    assert sorted(rendered) == sorted(sources)
    for name, text in sources.items():
        assert rendered[name] == text, f"dashboard {name} differs from grafana/{name}"
        json.loads(rendered[name])
    # Rules: the PrometheusRule holds the rule file's groups.
    (rule,) = find(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_SRC.read_text())["groups"]
    # A packaged chart carries the content of the links, byte for byte.
    proc = run([helm, "package", str(chart), "--destination", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    (tgz,) = tmp_path.glob("popgate-*.tgz")
    with tarfile.open(tgz) as tar:
        packaged = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert packaged["popgate/files/popgate-rules.yaml"] == RULES_SRC.read_bytes()
    for p in DASHBOARDS_SRC.glob("*.json"):
        assert packaged[f"popgate/files/dashboards/{p.name}"] == p.read_bytes()


# --- documentation -------------------------------------------------------------


def flatten(node, prefix="") -> dict[str, object]:
    """Leaf paths of values.yaml: scalars, lists and empty maps."""
    out = {}
    for k, v in node.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def lookup(values: dict, path: str):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def readme_table() -> dict[str, str]:
    rows = {}
    text = (CHART / "README.md").read_text()
    for m in re.finditer(r"^\| `([A-Za-z0-9_.]+)` \| ([^|]*) \| (.*) \|$", text, re.M):
        rows[m.group(1)] = m.group(3).strip()
    return rows


def test_readme_values_table_matches_values_yaml():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = readme_table()
    assert rows, "no values table in helm/popgate/README.md"
    for leaf in flatten(values):
        parts = leaf.split(".")
        covered = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        assert any(c in rows for c in covered), f"values.yaml key {leaf} is not in the README table"
    for key, default in rows.items():
        try:
            value = lookup(values, key)
        except (KeyError, TypeError):
            pytest.fail(f"README documents {key}, which values.yaml does not have")
        m = re.fullmatch(r"`(.*)`", default)
        assert m, f"README default of {key} is not in backquotes: {default}"
        assert json.loads(m.group(1)) == value, f"README default of {key} is {default}"


def test_values_yaml_documents_each_key():
    """Every key the README lists has a `# --` comment above it in
    values.yaml."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    documented = {}
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        path = ".".join(k for _, k in stack)
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        documented.setdefault(path, j >= 0 and lines[j].strip().startswith("# --"))
    for key in readme_table():
        assert documented.get(key), f"values.yaml: {key} has no `# --` comment"


def test_readme_covers_the_install_stories():
    text = (CHART / "README.md").read_text()
    for needle in [
        "helm install", "helm upgrade", "LoadBalancer", "externalTrafficPolicy",
        "proxyProtocol", "tls.secretName", "cert-manager", "ServiceMonitor",
        "PrometheusRule", "grafana_dashboard",
    ]:  # fmt: skip
        assert needle in text, f"chart README does not mention {needle}"


# --- deploy/: Dockerfile, systemd unit, example config --------------------------


def test_dockerfile_lints_clean():
    hadolint = need("hadolint")
    dockerfile = DEPLOY / "Dockerfile"
    proc = run([hadolint, "--no-color", str(dockerfile)])
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) >= 2, "the Dockerfile should be multi-stage"
    # The base images are build arguments; the defaults are the real ones.
    runtime = re.search(r"^ARG RUNTIME_IMAGE=(\S+)", text, re.M)
    assert stages[-1] == "${RUNTIME_IMAGE}" and runtime, stages[-1]
    assert "distroless" in runtime.group(1) and runtime.group(1).endswith(":nonroot"), runtime.group(1)
    final = text[text.rindex("\nFROM ") :]
    assert "\nRUN " not in final, "the runtime stage has no shell to RUN with"
    assert re.search(r"^USER 65532", final, re.M)
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        if src.startswith("target/"):
            continue  # the prebuilt binary, present after cargo build --release
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "popgate.service").read_text()
    for directive in [
        "NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE", "KillSignal=SIGTERM",
    ]:  # fmt: skip
        assert re.search(rf"^{re.escape(directive)}$", unit, re.M), directive
    stop = int(re.search(r"^TimeoutStopSec=(\d+)s$", unit, re.M).group(1))
    cfg = yaml.safe_load((DEPLOY / "popgate.yaml").read_text())
    assert int(cfg["shutdown"]["drain_timeout"].rstrip("s")) < stop
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    local = unit.replace("/usr/local/bin/popgate", popgate_bin()).replace(
        "/etc/popgate/popgate.yaml", str(DEPLOY / "popgate.yaml")
    )
    (tmp_path / "popgate.service").write_text(local)
    proc = run([analyze, "verify", str(tmp_path / "popgate.service")])
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_deploy_config_passes_check():
    proc = run([popgate_bin(), "--config", str(DEPLOY / "popgate.yaml"), "--check"])
    assert proc.returncode == 0, proc.stderr


def test_oauth2_goes_into_the_upstream_section(helm, chart, tmp_path):
    """config.upstream.oauth2 is passed through in popgate's key names; the
    schema refuses keys popgate does not know."""
    values = tmp_path / "oauth2.yaml"
    values.write_text(
        "config:\n  upstream:\n    address: \"outlook.office365.com:993\"\n    tls: implicit\n"
        "    oauth2:\n"
        "      token_url: \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\n"
        "      device_authorization_url: \"https://login.microsoftonline.com/t/oauth2/v2.0/devicecode\"\n"
        "      client_id: popgate\n"
        "      scope: \"https://outlook.office.com/IMAP.AccessAsUser.All offline_access\"\n"
        "      flow: refresh_token\n")
    docs = render(helm, chart, values)
    cfg = yaml.safe_load(popgate_config(docs))
    assert cfg["upstream"]["oauth2"]["flow"] == "refresh_token"
    assert cfg["upstream"]["oauth2"]["client_id"] == "popgate"
    assert "oauth2" not in yaml.safe_load(popgate_config(render(helm, chart)))["upstream"]
    # The schema knows the keys: a misspelt one is refused.
    proc = run([helm, "template", "popgate", str(chart), "--set", "config.upstream.oauth2.flwo=x"])
    assert proc.returncode != 0 and "flwo" in proc.stderr, proc.stderr

"""The deployment's observability artifacts against the real thing.

* The /metrics exposition of a popgate that served real sessions passes
  `promtool check metrics` without a single warning.
* deploy/prometheus/popgate-rules.yaml passes `promtool check rules`, and
  its unit tests (popgate-rules.test.yaml) pass and cover every alert, each
  with cases where it fires and where it stays quiet.
* A real Prometheus server scrapes that popgate (1 s interval) and loads the
  rules while real POP3 sessions go through it to a real Dovecot: good and
  bad logins, RETR, TOP, DELE, QUIT, a client that drops, an idle timeout,
  too many bad commands, connections over the limit, an upstream outage and
  a QUIT whose EXPUNGE the upstream refuses. Then every PromQL expression of
  every dashboard under grafana/ and every rule expression is run through
  Prometheus' HTTP API and must return series (see `_operands` for exactly
  what is required of expressions with comparisons), every metric name they
  name must exist in Prometheus, and the alerts that the traffic provoked
  must have become active.

promtool and prometheus come from Debian's `prometheus` package: run
scripts/install-prometheus.sh. A missing tool fails the tests; nothing is
skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from corpus import simple_message
from dovecot import free_port
from imaprelay import ImapRelay, Rule
from polling import wait_for
from pop3raw import Pop3Raw
from popgate import REPO, Popgate

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the tests that need it
    yaml = None

RULES = REPO / "deploy" / "prometheus" / "popgate-rules.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "popgate-rules.test.yaml"
GRAFANA = REPO / "grafana"
DOCS = GRAFANA / "README.md"
INSTALL_HINT = "run scripts/install-prometheus.sh"

# Every metric family popgate exports, with its type.
FAMILIES = {
    "popgate_sessions_open": "gauge",
    "popgate_sessions_total": "counter",
    "popgate_logins_total": "counter",
    "popgate_commands_total": "counter",
    "popgate_command_duration_seconds": "histogram",
    "popgate_sent_message_bytes_total": "counter",
    "popgate_messages_sent_total": "counter",
    "popgate_messages_deleted_total": "counter",
    "popgate_quit_failures_total": "counter",
    "popgate_session_panics_total": "counter",
    "popgate_snapshot_messages": "histogram",
    "popgate_upstream_connections_total": "counter",
    "popgate_upstream_failures_total": "counter",
    "popgate_upstream_login_duration_seconds": "histogram",
    "popgate_upstream_command_duration_seconds": "histogram",
    "popgate_upstream_connections_open": "gauge",
    "popgate_upstream_connections_pooled": "gauge",
    "popgate_upstream_up": "gauge",
    "popgate_limit_rejections_total": "counter",
    "popgate_connection_limit": "gauge",
    "popgate_draining": "gauge",
    "popgate_state_store_up": "gauge",
    "popgate_state_store_errors_total": "counter",
    "popgate_build_info": "gauge",
}

MAX_CONNECTIONS = 3
IDLE_TIMEOUT_S = 4


# ---------------------------------------------------------------- helpers


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return path


def need_yaml():
    if yaml is None:
        pytest.fail(f"PyYAML is not importable: {INSTALL_HINT} (it installs PyYAML too)")
    return yaml



class Prometheus:
    """A throwaway Prometheus server on a free loopback port."""

    def __init__(self, target_port: int, rule_files: list[Path]) -> None:
        self.binary = tool("prometheus")
        self.dir = tempfile.mkdtemp(prefix="popgate-prom-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(
                "global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "  evaluation_interval: 1s\n"
                "rule_files:\n"
                + "".join(f"  - {json.dumps(str(p))}\n" for p in rule_files)
                + "scrape_configs:\n"
                "  - job_name: popgate\n"
                "    static_configs:\n"
                f'      - targets: ["127.0.0.1:{target_port}"]\n'
            )
        self.log_path = os.path.join(self.dir, "prometheus.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def log_text(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path: str, **params) -> dict:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return json.loads(body)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}: {body[:500]!r}"}

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def series(self, expr: str) -> list:
        """The result of an instant query; fails on a query error."""
        answer = self.query(expr)
        assert answer.get("status") == "success", f"{expr}\n-> {answer}"
        return answer["data"]["result"]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def active_alerts(prom: Prometheus, name: str) -> list[dict]:
    return [a for a in prom.get("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]


# ------------------------------------------------------- PromQL operands

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_:]*")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_MODIFIERS = re.compile(
    r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?"
    r"(?:(?:group_left|group_right)\b\s*(?:\([^)]*\))?\s*)?"
)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_CONSTANT = re.compile(r"vector\(\s*" + _NUMBER.pattern + r"\s*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def _split_top(expr: str, words: set[str], symbols: tuple[str, ...] = ()) -> list[str]:
    """Splits at the binary operators in `words`/`symbols` that stand outside
    any parentheses, brackets, braces and strings."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch in "\"'`":
            m = _STRING.match(expr, i)
            i = m.end() if m else len(expr)
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = _WORD.match(expr, i)
            if m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:.")):
                if m.group(0) in words:
                    parts.append(expr[start:i])
                    start = i = m.end()
                else:
                    i = m.end()
                continue
            op = next((s for s in symbols if expr.startswith(s, i)), None)
            if op:
                parts.append(expr[start:i])
                start = i = i + len(op)
                continue
        i += 1
    parts.append(expr[start:])
    return [parts[0]] + [_MODIFIERS.sub("", p, count=1) for p in parts[1:]]


def _strip_parens(expr: str) -> str:
    expr = expr.strip()
    while expr.startswith("(") and expr.endswith(")"):
        depth = 0
        for i, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(expr) - 1:
                return expr  # "(a) + (b)": the parentheses are not outer
        expr = expr[1:-1].strip()
    return expr


def _operands(expr: str) -> list[str]:
    """The parts of an expression that must each return series.

    An alert expression is a condition: `X > 5` is empty while things are
    fine, so requiring series of the whole would prove nothing. Instead the
    expression is cut at every `or`, `and`, `unless` and comparison that
    stands outside parentheses (recursively, also inside parentheses that
    wrap a whole operand), and every operand is returned. `absent(X)` and
    `absent_over_time(X)` contribute X. Number literals and `vector(N)`
    cannot be misspelt and are left out. An expression without such
    operators (every dashboard query) is its own single operand, so the
    whole query must return series.
    """
    e = _strip_parens(expr)
    for words, symbols in (({"or"}, ()), ({"and", "unless"}, ()), (set(), _COMPARISONS)):
        parts = _split_top(e, words, symbols)
        if len(parts) > 1:
            return [o for p in parts for o in _operands(p)]
    m = re.fullmatch(r"absent(?:_over_time)?\s*\((.*)\)", e, re.S)
    if m:
        return _operands(m.group(1))
    if _NUMBER.fullmatch(e) or _CONSTANT.fullmatch(e):
        return []
    return [e]


def metric_names(expr: str) -> set[str]:
    """popgate's metric names (and recorded names) that an expression uses."""
    without_strings = _STRING.sub('""', expr)
    return set(re.findall(r"[A-Za-z0-9_:]*popgate[A-Za-z0-9_:]*", without_strings))


def test_operands_cut_conditions_and_keep_queries():
    assert _operands("popgate_upstream_up == 0") == ["popgate_upstream_up"]
    assert _operands('sum by (x) (rate(a{k!="v"}[5m])) / sum(rate(b[5m]))') == [
        'sum by (x) (rate(a{k!="v"}[5m])) / sum(rate(b[5m]))'
    ]
    assert _operands("(a > 0.2) and (b / c) > 0.5") == ["a", "b / c"]
    assert _operands("(a > 1) unless on (job, instance) (b == 0)") == ["a", "b"]
    assert _operands("(sum(x * on (i) (1 - y)) or vector(0)) == 0") == ["sum(x * on (i) (1 - y))"]
    assert _operands("a > bool on (i) group_left (v) b") == ["a", "b"]
    assert _operands("absent(up{job=~\"a|b\"} == 1)") == ['up{job=~"a|b"}']
    assert _operands("(a) + (b)") == ["(a) + (b)"]
    assert metric_names('x{job="popgate"} + job_instance:popgate_y:ratio + popgate_z_total') == {
        "job_instance:popgate_y:ratio",
        "popgate_z_total",
    }


# ------------------------------------------------------ artifacts on disk


def dashboards() -> list[Path]:
    found = sorted(GRAFANA.glob("**/*.json"))
    assert found, f"no dashboard JSON under {GRAFANA}"
    return found


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target."""
    out = []
    for path in dashboards():
        d = json.loads(path.read_text())
        for p in walk_panels(d.get("panels", [])):
            for t in p.get("targets", []):
                out.append((path.name, p.get("title", "?"), t.get("expr", "")))
    return out


def grafana_to_promql(expr: str) -> str:
    """Substitutes the Grafana variables the dashboards use."""
    out = expr
    for pattern, value in (
        (r"\$\{instance(?::\w+)?\}|\$instance\b|\[\[instance\]\]", ".*"),
        (r"\$\{?__rate_interval\}?", "1m"),
        (r"\$\{?__interval\}?", "1m"),
        (r"\$\{?__range\}?", "5m"),
    ):
        out = re.sub(pattern, value, out)
    assert "$" not in out, f"unknown Grafana variable left in: {expr}"
    return out


def rule_files() -> list[Path]:
    return sorted((REPO / "deploy" / "prometheus").glob("*-rules.yaml"))


def rules() -> list[dict]:
    out = []
    for path in rule_files():
        for group in need_yaml().safe_load(path.read_text())["groups"]:
            for r in group["rules"]:
                out.append({**r, "file": path.name, "group": group["name"]})
    return out


def test_promtool_check_rules():
    for path in rule_files():
        r = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_rule_unit_tests():
    r = subprocess.run(
        [tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_rule_unit_tests_cover_every_alert_both_ways():
    doc = need_yaml().safe_load(RULE_TESTS.read_text())
    fires, quiet = set(), set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    recorded = {t["expr"] for case in doc["tests"] for t in case.get("promql_expr_test", [])}
    for r in rules():
        if "alert" in r:
            assert r["alert"] in fires, f"no test case where {r['alert']} fires"
            assert r["alert"] in quiet, f"no test case where {r['alert']} stays quiet"
        else:
            assert r["record"] in recorded, f"no promql_expr_test for {r['record']}"


def test_every_alert_is_documented_for_on_call():
    alerts = [r for r in rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "PopgateUpstreamDown",
        "PopgateUpstreamErrors",
        "PopgateLoginFailureSpike",
        "PopgateCommandLatencyHigh",
        "PopgateQuitFailures",
        "PopgateSessionPanics",
        "PopgateLimitsHit",
        "PopgateNoInstanceReady",
    }
    for a in alerts:
        assert a.get("labels", {}).get("severity") in ("critical", "warning", "info"), a["alert"]
        ann = a.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert ann.get(key, "").strip(), f"{a['alert']}: annotation {key} missing"
        assert len(re.findall(r"^\s*\d+\.", ann["runbook"], re.M)) >= 3, f"{a['alert']}: runbook needs steps"


def test_dashboard_is_importable_as_is():
    for path in dashboards():
        d = json.loads(path.read_text())
        assert "__inputs" not in d and "__requires" not in d, path.name
        assert d.get("uid") and len(d["uid"]) <= 40, path.name
        assert 36 <= d.get("schemaVersion", 0) <= 41, path.name
        assert d.get("id") is None, f"{path.name}: an id would clash on import"
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        inst = variables["instance"]
        assert inst["type"] == "query" and inst["multi"] and inst["includeAll"] and inst["allValue"] == ".*"
        assert "label_values(popgate_build_info, instance)" in json.dumps(inst["query"])
        assert inst["datasource"]["uid"] == "${datasource}"
        ids, panels = set(), list(walk_panels(d["panels"]))
        for p in panels:
            assert p["id"] not in ids, f"{path.name}: duplicate panel id {p['id']}"
            ids.add(p["id"])
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24 and g["h"] > 0, f"{path.name}: {p['title']} is off the grid"
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], f"{p['title']} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"], p["title"]
                # Every selector of a popgate metric filters on the instance variable.
                for m in re.finditer(r"\b(popgate_\w+)(\{[^}]*\})?", t["expr"]):
                    assert m.group(2) and 'instance=~"$instance"' in m.group(2), (
                        f"{p['title']}: {m.group(1)} is not filtered by instance in {t['expr']}"
                    )
        # Panels do not overlap.
        cells = set()
        for p in panels:
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{path.name}: {p['title']} overlaps another panel"
                    cells.add((x, y))


def test_dashboard_and_docs_cover_every_metric():
    used = set()
    for _, _, expr in dashboard_queries():
        used |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in metric_names(expr)}
    docs = DOCS.read_text()
    for family, kind in FAMILIES.items():
        assert family in used, f"no dashboard panel shows {family}"
        row = re.search(rf"^\|\s*`{family}`\s*\|\s*{kind}\s*\|", docs, re.M)
        assert row, f"{DOCS.name} has no table row for {family} ({kind})"


# ------------------------------------------------------ the live stack


def open_sessions(pg: Popgate) -> float:
    text = pg.http("/metrics")[1]
    return sum(float(v) for v in re.findall(r"^popgate_sessions_open\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def stack(dovecot, tmp_path_factory):
    """popgate (with metrics and its embedded state store) behind a
    fault-injecting proxy to Dovecot, a Prometheus scraping it, and a run of
    real sessions through it."""
    tool("promtool")
    tool("prometheus")
    need_yaml()
    st = types.SimpleNamespace()
    tag = f"obs{os.getpid()}"
    alice, bob = (f"{tag}a", "pw alice"), (f"{tag}b", "pw bob")
    dovecot.add_users(dict([alice, bob]))
    for i in range(1, 5):
        dovecot.deliver(alice[0], simple_message(i, body_lines=20))
    dovecot.deliver(bob[0], simple_message(1))

    proxy = ImapRelay(dovecot.imap_port)
    upstream_port = proxy.port
    pg = prom = None
    try:
        pg = Popgate(
            proxy.port,
            metrics=True,
            upstream_extra="  health_check_interval: 200ms\n",
            extra=f"session:\n  max_connections: {MAX_CONNECTIONS}\n  idle_timeout: {IDLE_TIMEOUT_S}s\n"
            f'state:\n  path: "{tmp_path_factory.mktemp("state")}"\n'
            # A route with a token broker, so that its series (and the rule
            # on them) are checked against a real scrape; nobody logs in there.
            f'upstreams:\n  tokens:\n    address: "127.0.0.1:{proxy.port}"\n'
            "    oauth2:\n      token_url: \"http://127.0.0.1:1/token\"\n"
            "      client_id: popgate\n      flow: refresh_token\n",
        )
        assert pg.metrics_port, pg.log_text()
        wait_for(lambda: pg.http("/readyz")[0] == 200, 10, "popgate /readyz 200")
        idle = Pop3Raw(pg.port, timeout=10)  # says nothing: idle timeout
        prom = Prometheus(pg.metrics_port, rule_files())
        st.started = time.monotonic()
        wait_for(prom.ready, 20, "prometheus /-/ready")
        wait_for(lambda: prom.series("popgate_build_info"), 30, "the first scrape of popgate in prometheus", 0.25)
        st.first_sample_s = time.monotonic() - st.started

        # --- sessions that go well, and some that do not
        with Pop3Raw(pg.port, timeout=10) as c:
            assert c.login(*alice).startswith(b"+OK")
            for cmd in ("STAT", "LIST", "UIDL", "RETR 1", "TOP 2 0", "TOP 3 2", "NOOP", "DELE 1"):
                assert c.answer(cmd).startswith(b"+OK"), cmd
            assert c.answer("RETR 99").startswith(b"-ERR")
            assert c.answer("QUIT").startswith(b"+OK")
        with Pop3Raw(pg.port, timeout=10) as c:  # AUTH PLAIN, then drops
            creds = base64.b64encode(f"\0{bob[0]}\0{bob[1]}".encode()).decode()
            assert c.answer(f"AUTH PLAIN {creds}").startswith(b"+OK")
            assert c.answer("RETR 1").startswith(b"+OK")
        for _ in range(3):
            with Pop3Raw(pg.port, timeout=10) as c:
                assert c.login(alice[0], "not the password").startswith(b"-ERR [AUTH]")
                assert c.answer("QUIT").startswith(b"+OK")
        with Pop3Raw(pg.port, timeout=10) as c:
            c.send(b"XYZZY\r\n" * 25)
            assert c.closed(10), "not closed after too many bad commands"
        assert idle.closed(IDLE_TIMEOUT_S + 6), "idle session not closed"
        assert b"Autologout" in idle.buf
        idle.close()

        # --- connection limit: all slots taken, two clients refused
        wait_for(lambda: open_sessions(pg) == 0, 10, "sessions to close")
        holders = [Pop3Raw(pg.port, timeout=10) for _ in range(MAX_CONNECTIONS)]
        for h in holders:
            assert h.greeting.startswith(b"+OK"), h.greeting
        for _ in range(2):
            with Pop3Raw(pg.port, timeout=10) as c:
                assert c.greeting.startswith(b"-ERR [SYS/TEMP]"), c.greeting
            wait_for(lambda: active_alerts(prom, "PopgateLimitsHit"), 10,
                     "PopgateLimitsHit to become active in prometheus", 0.25)
            time.sleep(1.2)  # the next rejection lands in a later scrape
            for h in holders:  # keeps them clear of the idle timeout
                assert h.answer("NOOP").startswith(b"+OK")
        for h in holders:
            h.close()

        # --- the upstream goes away, a login fails, it comes back refusing EXPUNGE
        proxy.close()
        wait_for(lambda: pg.http("/readyz")[0] == 503, 10, "/readyz 503 while the upstream is gone")
        with Pop3Raw(pg.port, timeout=10) as c:
            assert c.login(*alice).startswith(b"-ERR [SYS/TEMP]")
        for name in ("PopgateUpstreamDown", "PopgateNoInstanceReady"):
            wait_for(lambda: active_alerts(prom, name), 10, f"{name} to become pending in prometheus", 0.25)
        proxy = ImapRelay(dovecot.imap_port, Rule(r"^UID EXPUNGE", "refuse", every=True),
                          port=upstream_port)
        wait_for(lambda: pg.http("/readyz")[0] == 200, 10, "/readyz 200 after the upstream is back")
        with Pop3Raw(pg.port, timeout=10) as c:
            assert c.login(*alice).startswith(b"+OK")
            assert c.answer("DELE 1").startswith(b"+OK")
            assert c.answer("QUIT").startswith(b"-ERR [SYS/TEMP]")

        # --- let prometheus see the final state: a few more scrapes
        wait_for(lambda: prom.series("popgate_quit_failures_total > 0"), 10, "the QUIT failure in prometheus", 0.25)
        wait_for(lambda: prom.series("popgate_upstream_up == 1") and prom.series("sum(popgate_sessions_open) == 0"),
                 10, "the final state in prometheus", 0.25)
        time.sleep(2)
        st.scrape = pg.http("/metrics")[1]
        st.pg, st.prom, st.users = pg, prom, (alice[0], bob[0])
        st.names = set(prom.get("/api/v1/label/__name__/values")["data"])
        yield st
    finally:
        if prom is not None:
            prom.stop()
        if pg is not None:
            pg.stop()
        proxy.close()


def test_metrics_exposition_passes_promtool(stack):
    r = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=stack.scrape, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (
        f"promtool check metrics (exit {r.returncode}):\n{r.stdout}{r.stderr}"
    )


def test_traffic_reached_every_metric(stack):
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", stack.scrape, re.M))
    for family, kind in FAMILIES.items():
        assert types.get(family) == kind, f"{family}: {types.get(family)} in the scrape, want {kind}"
        assert re.search(rf"^{family}(_bucket|_sum|_count)?(\{{| )", stack.scrape, re.M), f"no sample of {family}"
    for label in (
        'outcome="quit"',
        'outcome="quit_failed"',
        'outcome="idle_timeout"',
        'outcome="client_disconnected"',
        'outcome="too_many_bad_commands"',
        'result="auth_failed"',
        'result="upstream_unavailable"',
        'mechanism="PLAIN"',
        'kind="connections"',
    ):
        assert label in stack.scrape, f"the traffic produced no series with {label}"
    documented = set(re.findall(r"^\|\s*`(popgate_\w+)`", DOCS.read_text(), re.M))
    for family in types:
        assert family in documented, f"{family} is exported but not documented in {DOCS.name}"
    labels = " ".join(re.findall(r"\{[^}]*\}", stack.scrape))
    for secret in (*stack.users, "127.0.0.1", "pw "):
        assert secret not in labels, f"{secret!r} appears in a label"


def _check_expression(prom: Prometheus, names: set[str], where: str, expr: str) -> list[str]:
    problems = []
    answer = prom.query(expr)
    if answer.get("status") != "success":
        return [f"{where}: does not evaluate: {answer.get('error')}\n    {expr}"]
    for name in sorted(metric_names(expr) - names):
        problems.append(f"{where}: metric {name} does not exist in prometheus\n    {expr}")
    for operand in _operands(expr):
        answer = prom.query(operand)
        if answer.get("status") != "success":
            problems.append(f"{where}: operand does not evaluate: {answer.get('error')}\n    {operand}")
        elif not answer["data"]["result"]:
            problems.append(f"{where}: no series for\n    {operand}")
    return problems


def test_every_dashboard_query_returns_series(stack):
    problems, count = [], 0
    for file, title, expr in dashboard_queries():
        assert expr.strip(), f"{file}: {title} has an empty query"
        count += 1
        problems += _check_expression(stack.prom, stack.names, f"{file} / {title}", grafana_to_promql(expr))
    # The instance variable's query.
    for path in dashboards():
        for v in json.loads(path.read_text())["templating"]["list"]:
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
            if v["type"] == "query" and m:
                found = stack.prom.get("/api/v1/series", **{"match[]": m.group(1)})["data"]
                if not any(m.group(2) in s for s in found):
                    problems.append(f"{path.name}: variable {v['name']}: {q} finds nothing")
    assert count >= 20
    assert not problems, "\n".join(problems)


def test_every_rule_expression_returns_series(stack):
    problems = []
    for r in rules():
        name = r.get("alert") or r.get("record")
        problems += _check_expression(stack.prom, stack.names, f"{r['file']} / {name}", r["expr"])
        if "record" in r and r["record"] not in stack.names:
            problems.append(f"{r['file']}: recorded series {r['record']} never appeared")
    assert not problems, "\n".join(problems)


def test_prometheus_evaluates_the_rules_and_the_traffic_raised_alerts(stack):
    loaded = {}
    for group in stack.prom.get("/api/v1/rules")["data"]["groups"]:
        for r in group["rules"]:
            loaded[r["name"]] = r
    for r in rules():
        name = r.get("alert") or r.get("record")
        assert name in loaded, f"prometheus did not load {name}"
        assert loaded[name]["health"] == "ok", f"{name}: {loaded[name].get('lastError')}"
    # Alerts that went pending while the traffic ran (ALERTS keeps pending
    # and firing states), and the QUIT failure alert, which fires at once.
    for name in ("PopgateUpstreamDown", "PopgateNoInstanceReady", "PopgateLimitsHit"):
        assert stack.prom.series(f'max_over_time(ALERTS{{alertname="{name}"}}[10m])'), f"{name} never went active"
    # Both branches of PopgateLimitsHit: full slots, and rejections (still
    # counted: they are less than 10 minutes old).
    assert stack.prom.series('max_over_time(ALERTS{alertname="PopgateLimitsHit", kind=""}[10m])')
    limits = active_alerts(stack.prom, "PopgateLimitsHit")
    assert [a["labels"].get("kind") for a in limits] == ["connections"], limits
    firing = active_alerts(stack.prom, "PopgateQuitFailures")
    assert firing and firing[0]["state"] == "firing", firing
    assert firing[0]["labels"]["job"] == "popgate"
    # The upstream is back: the outage alerts are no longer active.
    wait_for(lambda: not active_alerts(stack.prom, "PopgateUpstreamDown")
             and not active_alerts(stack.prom, "PopgateNoInstanceReady"), 10,
             "the outage alerts to resolve")
    print(f"first sample in prometheus {stack.first_sample_s:.1f}s after start")

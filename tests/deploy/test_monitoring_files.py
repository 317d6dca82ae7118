"""docker/'s monitoring files: the Grafana dashboard, the Prometheus alert rules and
configuration, the compose profile `monitoring`, the Kubernetes manifests, and
docs/operations.md, checked against each other and against the metric contract
(monitoring.py). Parsers: json, PyYAML, and promtool (Debian's prometheus package) for
PromQL, the rules and the configuration. None of this needs a running daemon;
test_monitoring_live.py scrapes one."""

import os
import re
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from monitoring import (ALERTS, COMPOSE, CONTRACT, DASHBOARD, DOCKER, KUBERNETES, OPERATIONS,
                        PROMETHEUS, ROOT, TARGET_LABELS, alert_rules, all_exprs, dashboard,
                        dashboard_exprs, dashboard_panels, family_of, families_used,
                        parse_expr)

HERE = os.path.dirname(os.path.abspath(__file__))


def promtool(*args):
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: run scripts/setup (Debian's prometheus package)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


# ---- the PromQL reader itself --------------------------------------------------------


def test_parse_expr_finds_metrics_and_labels():
    names, labels = parse_expr(
        'histogram_quantile(0.99, sum by (le, instance) (rate(codeq_x_seconds_bucket'
        '{job=~"codeq.*", a!="b"}[5m]))) / on (instance) group_left up > 0.5 '
        'and sum without (tool) (codeq_y_total offset 5m)')
    assert names == {"codeq_x_seconds_bucket", "up", "codeq_y_total"}
    assert labels == {"le", "instance", "job", "a", "tool"}


def test_family_of():
    assert family_of("codeq_request_duration_seconds_bucket") == (
        "codeq_request_duration_seconds", "_bucket")
    assert family_of("codeq_executions_total") == ("codeq_executions_total", "")
    assert family_of("codeq_executions_total_bucket") == (None, None)  # not a histogram
    assert family_of("codeq_made_up") == (None, None)


# ---- every expression: names, labels, types ------------------------------------------


@pytest.mark.parametrize("where,expr", all_exprs(), ids=lambda x: x if len(x) < 60 else None)
def test_expression_uses_only_contract_metrics(where, expr):
    names, labels = parse_expr(expr)
    assert names, f"{where}: no metric in {expr!r}"
    allowed = set(TARGET_LABELS)
    for series in names:
        fam, suffix = family_of(series)
        assert fam, f"{where}: {series} is not a metric of the contract (monitoring.py)"
        kind, fam_labels, _ = CONTRACT[fam]
        if kind == "histogram":
            assert suffix, f"{where}: the histogram {fam} is used without _bucket/_sum/_count"
        if suffix == "_bucket":
            assert "histogram_quantile" in expr and re.search(r"\bby \([^)]*\ble\b", expr), \
                f"{where}: {series} outside histogram_quantile(..., sum by (le, ...))"
            allowed.add("le")
        allowed |= fam_labels
    assert labels <= allowed, f"{where}: labels {labels - allowed} belong to none of {names}"
    # rate() and increase() over counters (and histogram buckets/sums/counts) only.
    for fn in re.finditer(r"\b(rate|increase|irate)\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", expr):
        fam, suffix = family_of(fn.group(2))
        assert CONTRACT[fam][0] == "counter" or suffix, \
            f"{where}: {fn.group(1)}() over the {CONTRACT[fam][0]} {fam}"
    for fn in re.finditer(r"\bderiv\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", expr):
        assert CONTRACT[family_of(fn.group(1))[0]][0] == "gauge", f"{where}: deriv() of a counter"


def test_every_dashboard_expression_is_valid_promql(tmp_path):
    """promtool parses each expression as a recording rule (Grafana's variables
    replaced by what Prometheus receives)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"codeq:dashboard:{i}", "expr": expr}
        for i, (_, expr) in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promql_check_catches_an_error(tmp_path):
    """The check above fails on a broken expression (so its passing means something)."""
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "x", "expr": "sum by (le (rate(codeq_executions_total[5m]))"}]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


# ---- the dashboard -------------------------------------------------------------------


def test_dashboard_shape():
    d = dashboard()
    assert d["schemaVersion"] >= 39  # Grafana 11 and later
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in dashboard_panels(d)
                                            if p not in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in dashboard_panels(d):
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p.get("description"), f"{p['title']}: no description"
        assert p["targets"], f"{p['title']}: no query"
        refids = [t["refId"] for t in p["targets"]]
        assert len(refids) == len(set(refids)), p["title"]


def test_dashboard_names_no_datasource_uid():
    """Every data source is the variable: the JSON imports into any Grafana."""
    def walk(node, path):
        if isinstance(node, dict):
            if "datasource" in node and isinstance(node["datasource"], dict):
                ds = node["datasource"]
                if ds.get("type") != "grafana":  # the built-in annotations source
                    assert ds == {"type": "prometheus", "uid": "${datasource}"}, path
            for k, v in node.items():
                walk(v, path + "/" + str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")
    walk(dashboard(), "")
    for p in dashboard_panels():
        assert p.get("datasource"), p["title"]
        for t in p["targets"]:
            assert t.get("datasource"), p["title"]


# What issue 15 asks the dashboard to show, as the families each needs.
DASHBOARD_MUST_SHOW = {
    "execution rate by outcome": {"codeq_executions_total"},
    "run, end-to-end and queue-wait quantiles": {
        "codeq_execution_run_seconds", "codeq_request_duration_seconds",
        "codeq_request_queue_wait_seconds"},
    "sessions live vs capacity": {"codeq_sessions_live", "codeq_capacity_sessions"},
    "warm pool ready vs target": {"codeq_warm_pool_ready", "codeq_warm_pool_target"},
    "sandbox CPU and peak memory": {"codeq_sandbox_cpu_seconds_total",
                                    "codeq_sandbox_peak_memory_bytes"},
    "OOM kills and pids-limit hits": {"codeq_sandbox_oom_kills_total",
                                      "codeq_sandbox_pids_limit_hits_total"},
    "output dropped": {"codeq_output_dropped_bytes_total"},
    "Kafka lag and produce errors": {"codeq_kafka_consumer_lag",
                                     "codeq_kafka_produce_errors_total"},
    "Redis latency, errors, reconnects": {"codeq_redis_command_seconds",
                                          "codeq_redis_errors_total",
                                          "codeq_redis_reconnects_total"},
    "dead letters and refusals": {"codeq_dead_letters_total", "codeq_requests_refused_total"},
    "workers ready/draining": {"codeq_workers"},
    "trace spans dropped": {"codeq_trace_spans_dropped_total"},
}


@pytest.mark.parametrize("what", sorted(DASHBOARD_MUST_SHOW))
def test_dashboard_shows(what):
    used = set()
    for _, expr in dashboard_exprs():
        used |= {family_of(s)[0] for s in parse_expr(expr)[0]}
    missing = DASHBOARD_MUST_SHOW[what] - used
    assert not missing, f"the dashboard lacks {what}: {missing}"


def test_dashboard_quantiles():
    """Each latency histogram has its p50, p95 and p99."""
    exprs = [e for _, e in dashboard_exprs()]
    for fam in ("codeq_execution_run_seconds", "codeq_request_duration_seconds",
                "codeq_request_queue_wait_seconds"):
        for q in ("0.5", "0.95", "0.99"):
            assert any(e.startswith(f"histogram_quantile({q},") and fam + "_bucket" in e
                       for e in exprs), f"no p{q} of {fam}"


# ---- the alert rules -----------------------------------------------------------------

ALERTS_REQUIRED = {
    "CodeqInternalErrors", "CodeqRequestLagHigh", "CodeqRequestLagGrowing",
    "CodeqNoReadyWorkers", "CodeqWarmPoolMisses", "CodeqWarmPoolEmpty",
    "CodeqSandboxOOMKills", "CodeqDeadLetters", "CodeqDaemonDown", "CodeqRedisErrors",
    "CodeqTraceSpansDropped",
}


def test_alert_rules_shape():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "an alert name repeats"
    assert ALERTS_REQUIRED <= set(names), ALERTS_REQUIRED - set(names)
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", r["for"]), f"{r['alert']}: for {r.get('for')!r}"
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert r["annotations"]["description"].strip(), r["alert"]


def test_alerts_link_their_section_of_operations_md():
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", OPERATIONS.read_text(), re.M)}
    for r in alert_rules():
        link = f"docs/operations.md#{r['alert'].lower()}"
        assert link in r["annotations"]["description"], f"{r['alert']}: no link {link}"
        assert r["alert"].lower() in anchors, f"docs/operations.md has no section {r['alert']}"


def test_promtool_checks_rules_and_config():
    r = promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("check", "config", str(PROMETHEUS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_fire_on_their_conditions():
    """tests/deploy/alerts_test.yml: histories that must fire each alert, and some that
    must not (promtool test rules)."""
    r = promtool("test", "rules", os.path.join(HERE, "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_unit_tests_can_fail(tmp_path):
    """The same tests against rules with one threshold broken must fail."""
    broken = ALERTS.read_text().replace('max(codeq_workers{state="ready"}) < 1',
                                        'max(codeq_workers{state="ready"}) < 0')
    assert broken != ALERTS.read_text()
    rules_dir = tmp_path / "docker" / "prometheus"
    rules_dir.mkdir(parents=True)
    (rules_dir / "alerts.yml").write_text(broken)
    tests_dir = tmp_path / "tests" / "deploy"
    tests_dir.mkdir(parents=True)
    shutil.copy(os.path.join(HERE, "alerts_test.yml"), tests_dir)
    r = promtool("test", "rules", str(tests_dir / "alerts_test.yml"))
    assert r.returncode != 0 and "CodeqNoReadyWorkers" in r.stdout + r.stderr


# ---- docs/operations.md --------------------------------------------------------------


def test_every_metric_is_documented():
    text = OPERATIONS.read_text()
    for name in sorted(set(CONTRACT) - {"up"}):
        assert f"`{name}`" in text, f"docs/operations.md does not describe {name}"
    for name in families_used():
        assert f"`{name}`" in text, f"docs/operations.md does not describe {name}"


def test_docs_describe_the_settings_and_endpoints():
    text = OPERATIONS.read_text()
    for word in ("metrics_listen", "otlp_endpoint", "log_executions", "/healthz", "/readyz",
                 "traceparent", "codeq.dispatch", "codeq.request", "codeq.kernel.run",
                 "trace_id", "log-events.md", "codeq fleet status",
                 "codeq-dashboard.json", "alerts.yml", "--profile monitoring"):
        assert word in text, f"docs/operations.md never mentions {word}"
    assert "operations.md" in (ROOT / "README.md").read_text()
    assert "operations.md" in (ROOT / "docs" / "architecture.md").read_text()


# ---- compose and Prometheus' configuration -------------------------------------------


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def metrics_port(listen):
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", listen)
    assert m, f"metrics_listen {listen!r} is not HOST:PORT"
    return int(m.group(1))


def daemon_services(c):
    return {name: s for name, s in c["services"].items()
            if s.get("image") in ("codeq-dispatcher", "codeq-worker")}


def scrape_targets():
    cfg = yaml.safe_load(PROMETHEUS.read_text())
    out = {}
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                out[t] = job["job_name"]
    return cfg, out


def test_monitoring_profile():
    c = compose()
    for name in ("prometheus", "grafana"):
        s = c["services"][name]
        assert s["profiles"] == ["monitoring"], name
        image, _, tag = s["image"].partition(":")
        assert image in ("prom/prometheus", "grafana/grafana"), s["image"]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a version, not {tag!r}"
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} published beyond loopback"
    # The fleet itself stays out of the profile: `up` without it starts what it started.
    for name, s in daemon_services(c).items():
        assert "profiles" not in s, name


def test_compose_mounts_exist():
    c = compose()
    for name in ("prometheus", "grafana"):
        for v in c["services"][name]["volumes"]:
            src = v.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name} mounts {src}, which is missing"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in c["services"]["prometheus"]["volumes"]}
    assert (DOCKER / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS
    assert (DOCKER / mounts["/etc/prometheus/alerts.yml"]).resolve() == ALERTS
    graf = {v.split(":")[1]: v.split(":")[0] for v in c["services"]["grafana"]["volumes"]}
    dash_in = [dst for dst, src in graf.items() if (DOCKER / src).resolve() == DASHBOARD]
    assert dash_in, "Grafana does not mount the dashboard"
    provider = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/codeq.yaml").read_text())["providers"][0]
    assert dash_in[0].startswith(provider["options"]["path"] + "/")
    ds = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_every_daemon_on_its_metrics_port():
    c = compose()
    cfg, targets = scrape_targets()
    assert cfg["rule_files"] == ["alerts.yml"]
    daemons = daemon_services(c)
    assert {"dispatcher", "worker-1", "worker-2"} <= set(daemons)
    for name, s in daemons.items():
        port = metrics_port(s["environment"]["CODEQ_METRICS_LISTEN"])
        target = f"{name}:{port}"
        assert target in targets, f"prometheus.yml does not scrape {target}"
        assert targets[target] == "codeq-" + s["image"].split("-")[1]
    for target in targets:
        host = target.split(":")[0]
        assert host in c["services"] or host == "localhost", f"{target}: no such service"


# The compose healthcheck, run here against a stand-in of /readyz: the command must tell a
# 200 from a 503. The images have bash, head and grep (Debian's essential packages).


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        code = _Readyz.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ready\n" if code == 200 else b"redis unreachable\n")

    def log_message(self, *args):
        pass


def test_compose_healthcheck_asks_readyz():
    c = compose()
    server = HTTPServer(("127.0.0.1", 0), _Readyz)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name, s in daemon_services(c).items():
            listen_port = metrics_port(s["environment"]["CODEQ_METRICS_LISTEN"])
            test = s["healthcheck"]["test"]
            assert test[0] == "CMD", name
            argv = [a.replace(f"/{listen_port};", f"/{port};")
                    .replace(f"/{listen_port} ", f"/{port} ") for a in test[1:]]
            assert argv != test[1:], f"{name}: the healthcheck does not use port {listen_port}"
            for status, want in ((200, 0), (503, 1)):
                _Readyz.status = status
                r = subprocess.run(argv, capture_output=True, timeout=30)
                assert (r.returncode == 0) == (want == 0), (name, status, r)
    finally:
        server.shutdown()


# ---- Kubernetes ----------------------------------------------------------------------


def k8s_docs():
    out = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def test_kubernetes_manifests():
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs if "metadata" in d}
    assert {("Deployment", "codeq-dispatcher"), ("Deployment", "codeq-worker"),
            ("ConfigMap", "codeq-config")} <= kinds
    kust = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(
        p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    conf = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fleet.conf"]
    settings = dict(re.findall(r"^\s*([a-z_]+)\s*=\s*(\S+)", conf, re.M))
    port = metrics_port(settings["metrics_listen"])
    grace = int(compose()["x-worker"]["stop_grace_period"].rstrip("s"))
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        tpl = d["spec"]["template"]
        assert d["spec"]["selector"]["matchLabels"].items() <= tpl["metadata"]["labels"].items()
        ann = tpl["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
        (c,) = tpl["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == port
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["args"] == ["--config", "/etc/codeq/fleet.conf"]
        assert any(m["mountPath"] == "/etc/codeq" for m in c["volumeMounts"])
        if d["metadata"]["name"] == "codeq-worker":
            # The privileges of docker/compose.yaml's workers, and its drain time.
            assert c["securityContext"].get("privileged") is True
            assert tpl["spec"]["terminationGracePeriodSeconds"] >= grace
        else:
            assert c["securityContext"]["runAsNonRoot"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


# ---- the live tests' checker, on a scrape written here --------------------------------

_SCRAPE = """# HELP codeq_sessions_live s
# TYPE codeq_sessions_live gauge
codeq_sessions_live 2
# HELP codeq_warm_pool_ready r
# TYPE codeq_warm_pool_ready gauge
codeq_warm_pool_ready{interpreter="python",network="NONE"} 1
# HELP codeq_execution_run_seconds r
# TYPE codeq_execution_run_seconds histogram
codeq_execution_run_seconds_bucket{tool="executeCode",le="0.5"} 1
codeq_execution_run_seconds_bucket{tool="executeCode",le="+Inf"} 1
codeq_execution_run_seconds_sum{tool="executeCode"} 0.2
codeq_execution_run_seconds_count{tool="executeCode"} 1
# HELP codeq_sandbox_oom_kills_total o
# TYPE codeq_sandbox_oom_kills_total counter
# HELP codeq_output_dropped_bytes_total d
# TYPE codeq_output_dropped_bytes_total gauge
codeq_output_dropped_bytes_total{stream="stdout"} 0
# HELP codeq_sessions_ended_total e
# TYPE codeq_sessions_ended_total counter
codeq_sessions_ended_total{why="stopped"} 1
"""


def test_scrape_checker():
    from monitoring import check_scrape_against_contract, scraped_families
    fams = scraped_families(_SCRAPE)
    ok = {"codeq_sessions_live", "codeq_warm_pool_ready", "codeq_execution_run_seconds",
          "codeq_sandbox_oom_kills_total"}
    assert check_scrape_against_contract(fams, ok) == []
    problems = check_scrape_against_contract(
        fams, {"codeq_output_dropped_bytes_total", "codeq_sessions_ended_total",
               "codeq_capacity_sessions"})
    assert problems == [
        "codeq_capacity_sessions: not in the scrape",
        "codeq_output_dropped_bytes_total: a gauge, the contract says counter",
        "codeq_sessions_ended_total: labels ['why'], the contract says ['reason']",
    ]

"""What the monitoring files of docker/ may refer to: issue 15's metric contract (the names,
types and labels every part of codeq exports, docs/operations.md), and a small PromQL
reader that finds the metric and label names an expression uses.

The contract is written out here rather than read from the docs, so that a metric renamed
in one place and not the other fails a test instead of passing by agreement."""

import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "codeq-dashboard.json"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
COMPOSE = DOCKER / "compose.yaml"
KUBERNETES = DOCKER / "kubernetes"
OPERATIONS = ROOT / "docs" / "operations.md"

CORE = "worker core"  # worker/: codeq mcp, codeq-worker
DAEMON = "daemon"  # fleet/, workerd/, dispatcher/
OTLP = "otlp"  # http/otlp.c: any process with otlp_endpoint set
PROM = "prometheus"  # made by Prometheus itself

# name: (type, label names, who exports it)
CONTRACT = {
    "codeq_executions_total": (
        "counter", {"tool", "language", "interpreter", "outcome", "error_code"}, CORE),
    "codeq_execution_run_seconds": ("histogram", {"tool"}, CORE),
    "codeq_sessions_live": ("gauge", set(), CORE),
    "codeq_sessions_started_total": ("counter", {"interpreter"}, CORE),
    "codeq_sessions_ended_total": ("counter", {"reason"}, CORE),
    "codeq_warm_pool_ready": ("gauge", {"interpreter", "network"}, CORE),
    "codeq_warm_pool_target": ("gauge", {"interpreter", "network"}, CORE),
    "codeq_warm_pool_misses_total": ("counter", {"interpreter"}, CORE),
    "codeq_kernel_forks_total": ("counter", {"outcome"}, CORE),
    "codeq_capacity_sessions": ("gauge", set(), CORE),
    "codeq_capacity_memory_bytes": ("gauge", set(), CORE),
    "codeq_sessions_memory_limit_bytes": ("gauge", set(), CORE),
    "codeq_sandbox_cpu_seconds_total": ("counter", set(), CORE),
    "codeq_sandbox_peak_memory_bytes": ("histogram", set(), CORE),
    "codeq_sandbox_oom_kills_total": ("counter", set(), CORE),
    "codeq_sandbox_pids_limit_hits_total": ("counter", set(), CORE),
    "codeq_output_dropped_bytes_total": ("counter", {"stream"}, CORE),
    "codeq_sandbox_network_bytes_total": ("counter", {"direction"}, CORE),
    "codeq_build_info": ("gauge", {"version", "component"}, DAEMON),
    "codeq_requests_total": ("counter", {"component", "operation", "outcome"}, DAEMON),
    "codeq_request_queue_wait_seconds": ("histogram", {"tool"}, DAEMON),
    "codeq_request_duration_seconds": ("histogram", {"tool"}, DAEMON),
    "codeq_sessions_adopted_total": ("counter", set(), DAEMON),
    "codeq_sessions_drained_total": ("counter", set(), DAEMON),
    "codeq_kafka_consumer_lag": ("gauge", {"topic", "partition"}, DAEMON),
    "codeq_kafka_produce_errors_total": ("counter", {"reason"}, DAEMON),
    "codeq_kafka_delivery_seconds": ("histogram", set(), DAEMON),
    "codeq_redis_command_seconds": ("histogram", set(), DAEMON),
    "codeq_redis_errors_total": ("counter", set(), DAEMON),
    "codeq_redis_reconnects_total": ("counter", set(), DAEMON),
    "codeq_dead_letters_total": ("counter", {"reason"}, DAEMON),
    "codeq_replays_total": ("counter", set(), DAEMON),
    "codeq_requests_refused_total": ("counter", {"reason"}, DAEMON),
    "codeq_workers": ("gauge", {"state"}, DAEMON),
    "codeq_ready": ("gauge", set(), DAEMON),
    "codeq_trace_spans_exported_total": ("counter", set(), OTLP),
    "codeq_trace_spans_dropped_total": ("counter", {"reason"}, OTLP),
    "up": ("gauge", set(), PROM),
}

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def grafana_to_promql(expr):
    """Grafana's variables replaced by what Prometheus would see."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            .replace("$__range", "1h"))


def parse_expr(expr):
    """(series names, label names) that a PromQL expression refers to. Series names are as
    written (a histogram's codeq_x_seconds_bucket stays so). Label names are those of
    matchers ({label="..."}) and of by/without/on/ignoring/group_* clauses."""
    labels = set()
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    for m in re.finditer(r"\{([^}]*)\}", s):
        for part in m.group(1).split(","):
            name = re.match(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)", part)
            if name:
                labels.add(name.group(1))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    for m in _GROUPING.finditer(s):
        labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    s = _GROUPING.sub(" ", s)
    # numbers and durations (offset 5m, 1h30m)
    s = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?((ms|[smhdwy])(\d+(ms|[smhdwy]))*)?\b", " ", s)
    names = set()
    for m in _IDENT.finditer(s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names, labels


def family_of(series):
    """The contract family a series name belongs to, and the suffix used ('' for none)."""
    if series in CONTRACT:
        return series, ""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and CONTRACT.get(base, ("",))[0] == "histogram":
            return base, suffix
    return None, None


def dashboard():
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dash=None):
    """Every panel that is not a row, rows' own panels included."""
    out = []
    for p in (dash or dashboard())["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def dashboard_exprs(dash=None):
    """(panel title, PromQL as Prometheus sees it) of every target."""
    return [(p["title"], grafana_to_promql(t["expr"]))
            for p in dashboard_panels(dash) for t in p.get("targets", [])]


def alert_rules():
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def all_exprs():
    """(where, PromQL) of the dashboard and the alert rules."""
    return ([("dashboard: " + t, e) for t, e in dashboard_exprs()]
            + [("alert " + r["alert"], r["expr"]) for r in alert_rules()])


def families_used():
    """Every contract family the dashboard and the alerts refer to."""
    used = set()
    for _, expr in all_exprs():
        for series in parse_expr(expr)[0]:
            fam, _ = family_of(series)
            if fam:
                used.add(fam)
    return used


def scrape(port, path="/metrics", host="127.0.0.1", timeout=10):
    """(status, content type, body) of GET http://host:port/path."""
    import http.client
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        conn.close()


def scraped_families(text):
    """{contract name: (type, {frozenset of label names of its samples})} of a scrape,
    parsed by prometheus_client's text parser (which drops a counter's _total)."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = {frozenset(set(s.labels) - {"le"}) for s in fam.samples}
        out[name] = (fam.type, labels)
    return out


def check_scrape_against_contract(families, names):
    """Failures (strings) of a scrape's families against the contract, for names."""
    problems = []
    for name in sorted(names):
        kind, labels, _ = CONTRACT[name]
        if name not in families:
            problems.append(f"{name}: not in the scrape")
            continue
        got_kind, got_labels = families[name]
        if got_kind != kind:
            problems.append(f"{name}: a {got_kind}, the contract says {kind}")
        for ls in got_labels:
            if set(ls) != labels:
                problems.append(f"{name}: labels {sorted(ls)}, the contract says {sorted(labels)}")
    return problems


def healthcheck_argv(port):
    """docker/compose.yaml's daemon healthcheck, asking port instead of the compose one."""
    c = yaml.safe_load(COMPOSE.read_text())
    s = c["services"]["dispatcher"]
    listen = s["environment"]["CODEQ_METRICS_LISTEN"]
    cport = listen.rsplit(":", 1)[1]
    return [a.replace(f"/{cport} ", f"/{port} ").replace(f"/{cport};", f"/{port};")
            for a in s["healthcheck"]["test"][1:]]

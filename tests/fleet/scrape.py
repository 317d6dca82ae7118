"""Reading a daemon's operations endpoints (metrics_listen: /metrics, /healthz, /readyz)
in the fleet's tests, with a real Prometheus text parser (Debian's
python3-prometheus-client)."""

import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def get(port, path):
    """(status, content type, body) of GET path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def answers_http(port):
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


def scrape(port):
    """Every sample of /metrics: {(name, frozenset(labels)): value}."""
    status, ctype, text = get(port, "/metrics")
    assert status == 200, text
    assert ctype == CONTENT_TYPE
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before, after):
    """The samples that changed, as {(name, labels): increase}."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def wait_for(what, predicate, timeout=30):
    deadline = time.time() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)

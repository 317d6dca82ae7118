"""`codeq mcp --metrics-listen`: the embedded worker core's metrics, scraped with a real
Prometheus text parser (Debian's prometheus_client), and the resource usage results
carry (structuredContent cpuTime and peakMemory).

One server with a warm pool of one and a listener on a port the kernel picks (the
server writes it on stderr). Calls of every outcome are made (ok, a raising cell, a
timeout, an OOM kill under a small memory limit, a fork bomb against the pids limit,
output past the 1 MiB limit); the counters must move by exactly the calls made, by
outcome and error code, histogram counts by the calls per tool; the sandbox counters
(OOM kills, pids-limit hits, bytes dropped per stream) move; the session gauges match
what runs. /healthz answers, /readyz turns 503 once the server is shutting down.
"""

import collections
import re
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_client import CODEQ, Session, error_code, start_session, wait_until
from mcp_fixtures import host, new_server  # noqa: F401 (fixtures)

OUTPUT_LIMIT = 1 << 20  # codeq mcp's default, per stream and call
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


class Scrape:
    """One /metrics, parsed: samples by (name, labels)."""

    def __init__(self, port):
        status, ctype, text = _get(port, "/metrics")
        assert status == 200, text
        assert ctype == CONTENT_TYPE, ctype
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, **labels):
        """The sample with exactly these labels; 0 when absent (a child not made yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0)

    def total(self, name, **labels):
        """The sum over the samples of name whose labels include these."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


def outcome_of(result):
    """What cq_result_outcome() says, from the result alone."""
    code = error_code(result)
    return {"TIMED_OUT": "timeout", "LIMIT_EXCEEDED": "limit", "INTERNAL": "internal"}.get(
        code, "user_error" if result["isError"] else "ok"), code or "NONE"


@pytest.fixture(scope="module")
def metrics_server(host):
    srv = new_server(host, "--warm-pool", "1", "--max-sessions", "9",
                     "--metrics-listen", "127.0.0.1:0")
    found = wait_until(lambda: re.search(r"metrics on port (\d+)", srv.stderr_text()), 30,
                       "the metrics port on stderr")
    srv.metrics_port = int(found.group(1))
    yield srv
    if srv.alive():
        srv.close()


def test_help_names_the_flag():
    out = subprocess.run([CODEQ, "mcp", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--metrics-listen ADDR" in out.stdout, out


def test_health_and_build_info(metrics_server):
    port = metrics_server.metrics_port
    assert _get(port, "/healthz")[0] == 200
    status, _, text = _get(port, "/readyz")
    assert status == 200, text
    m = Scrape(port)
    info = m.families["codeq_build_info"].samples
    assert len(info) == 1 and info[0].value == 1 and info[0].labels["component"] == "mcp"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", info[0].labels["version"]), info
    assert m.get("codeq_capacity_sessions") == 9
    assert m.get("codeq_capacity_memory_bytes") > 0
    assert m.get("codeq_warm_pool_target", interpreter="codeq.default", network="NONE") == 1


def test_counters_move_by_the_calls_made(metrics_server):
    server = metrics_server
    port = server.metrics_port
    before = Scrape(port)
    calls = []  # (tool, language, result) of every tool call below

    def call(session, tool, language=None, **args):
        if language is not None:
            args["language"] = language
        if session.id is not None:
            args["sessionId"] = session.id
        r = server.call(tool, args)
        calls.append((tool, language or ("python" if tool == "executeCode" else "none"), r))
        return r

    # Two sessions on the worker's defaults (the pool's: a warm one, or a miss), one
    # that a small memory limit and one that a small pids limit keep out of the pool.
    plain = [start_session(server), start_session(server)]
    small_memory = start_session(server, memory="96M")
    few_pids = start_session(server, pids=16)
    sessions = plain + [small_memory, few_pids]
    live = Scrape(port)
    assert live.get("codeq_sessions_live") - before.get("codeq_sessions_live") == 4
    assert (live.get("codeq_sessions_started_total", interpreter="codeq.default")
            - before.get("codeq_sessions_started_total", interpreter="codeq.default")) == 4
    limits = [server.call("getSession", {"sessionId": s.id})["structuredContent"]["limits"]
              for s in sessions]
    assert (live.get("codeq_sessions_memory_limit_bytes")
            - before.get("codeq_sessions_memory_limit_bytes")) == sum(l["memory"] for l in limits)

    # A warm session's kernel has numpy imported already; a cold one's has not: each
    # plain session that is cold was a miss of the pool.
    misses = 0
    for s in plain:
        r = call(s, "executeCode", code="import sys; 'numpy' in sys.modules")
        assert r["isError"] is False, r
        misses += r["content"][-1]["text"] == "False"

    s = plain[0]
    call(s, "executeCode", code="x = 6 * 7")
    call(s, "executeCode", code="x", language="python")
    r = call(s, "executeCode", code="raise ValueError('counted')")
    assert r["isError"] is True and error_code(r) is None, r
    r = call(s, "executeCode", code="import time; time.sleep(60)", timeout=1)
    assert error_code(r) == "TIMED_OUT", r
    call(s, "executeCode", code="1 + 1", language="javascript")
    r = call(s, "executeCommand", command=f"head -c {OUTPUT_LIMIT + 1000} /dev/zero; "
                                          f"head -c {OUTPUT_LIMIT + 77} /dev/zero >&2")
    assert r["isError"] is False, r
    call(s, "writeFiles", content=[{"path": "a.txt", "text": "a"}])
    call(s, "listFiles")
    r = call(Session(server, "no-such-session"), "executeCommand", command="true")
    assert error_code(r) == "NOT_FOUND", r

    r = call(small_memory, "executeCode", code="block = b'x' * (512 << 20)")
    assert error_code(r) == "LIMIT_EXCEEDED", r
    r = call(few_pids, "executeCommand",
             command="i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait", timeout=30)

    after = Scrape(port)
    moved = collections.Counter()
    for tool, language, r in calls:
        outcome, code = outcome_of(r)
        interpreter = "none" if tool == "executeCommand" and error_code(r) == "NOT_FOUND" \
            else "codeq.default"
        moved[(tool, language, interpreter, outcome, code)] += 1
    seen = set()
    for (name, labels), value in after.samples.items():
        if name != "codeq_executions_total":
            continue
        key = tuple(dict(labels)[k] for k in ("tool", "language", "interpreter", "outcome",
                                               "error_code"))
        seen.add(key)
        assert value - before.get(name, **dict(labels)) == moved.get(key, 0), (key, moved)
    assert set(moved) <= seen, (moved, seen)
    assert {k[3] for k in moved} == {"ok", "user_error", "timeout", "limit"}

    per_tool = collections.Counter(tool for tool, _, _ in calls)
    for tool, n in per_tool.items():
        name = "codeq_execution_run_seconds_count"
        assert after.get(name, tool=tool) - before.get(name, tool=tool) == n, tool
    # Calls in a session (all but the one to no session) report its sandbox's peak.
    assert (after.get("codeq_sandbox_peak_memory_bytes_count")
            - before.get("codeq_sandbox_peak_memory_bytes_count")) == len(calls) - 1

    def moved_by(name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)

    assert moved_by("codeq_output_dropped_bytes_total", stream="stdout") == 1000
    assert moved_by("codeq_output_dropped_bytes_total", stream="stderr") == 77
    assert moved_by("codeq_sandbox_oom_kills_total") >= 1
    assert moved_by("codeq_sandbox_pids_limit_hits_total") >= 1
    assert moved_by("codeq_sandbox_cpu_seconds_total") > 0
    assert moved_by("codeq_warm_pool_misses_total", interpreter="codeq.default") == misses

    for s in sessions:
        server.call("stopSession", {"sessionId": s.id})
    end = Scrape(port)
    assert end.get("codeq_sessions_live") == before.get("codeq_sessions_live")
    assert (end.get("codeq_sessions_ended_total", reason="stopped")
            - before.get("codeq_sessions_ended_total", reason="stopped")) == 4
    assert end.get("codeq_sessions_memory_limit_bytes") == before.get(
        "codeq_sessions_memory_limit_bytes")


def test_results_carry_cpu_time_and_peak_memory(metrics_server):
    s = start_session(metrics_server)
    try:
        r = s.cmd("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done")
        sc = r["structuredContent"]
        assert r["isError"] is False and sc["stdout"] == "done\n", r
        assert isinstance(sc["cpuTime"], int) and sc["cpuTime"] > 0, sc
        assert isinstance(sc["peakMemory"], int) and sc["peakMemory"] > 0, sc
        # The memory of the session's sandbox: below its limit, above what one
        # allocated buffer of 64 MiB took.
        r = s.code("b = bytearray(64 << 20)\nsum(range(3 * 10**6))")
        sc = r["structuredContent"]
        assert r["isError"] is False, r
        assert sc["peakMemory"] >= 64 << 20, sc
        info = metrics_server.call("getSession", {"sessionId": s.id})["structuredContent"]
        assert sc["peakMemory"] <= info["limits"]["memory"], (sc, info)
        # The kernel's CPU time, from the sandbox's cgroup (cpuacct on cgroup v1, with
        # cpu or in a hierarchy of its own).
        assert isinstance(sc["cpuTime"], int) and sc["cpuTime"] > 0, sc
        # Tools that run nothing still report the sandbox's peak (what it cost so far).
        r = s.call("startCommandExecution", command="true")
        assert r["structuredContent"]["peakMemory"] > 0, r
    finally:
        metrics_server.call("stopSession", {"sessionId": s.id})


def test_not_ready_while_shutting_down(metrics_server):
    """Once its input ended, the server finishes the calls in progress; meanwhile
    /readyz says it is shutting down, /healthz that it is alive."""
    server = metrics_server
    port = server.metrics_port
    call_id = server.send_call("executeCode", {"code": "import time; time.sleep(4)"})
    server.close_stdin()
    status, _, text = wait_until(
        lambda: (lambda got: got if got[0] == 503 else None)(_get(port, "/readyz")), 10,
        "/readyz answering 503")
    assert "shutting down" in text, text
    assert _get(port, "/healthz")[0] == 200
    assert server.response(call_id)["result"]["isError"] is False
    server.close()

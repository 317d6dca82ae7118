"""codeq serve --metrics-listen: the same operations endpoints as codeq mcp (issue 15),
scraped with Prometheus' own text parser while the AgentCore client calls the server:
the worker core's counters move by exactly the calls made, by outcome, and the build
info names the serve component."""
import re
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import REGION, Server, client, results

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.headers.get("Content-Type") == CONTENT_TYPE
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def executions(samples, outcome):
    return sum(v for (name, labels), v in samples.items()
               if name == "codeq_executions_total" and dict(labels).get("outcome") == outcome
               and dict(labels).get("tool") == "executeCode")


def test_serve_counts_its_calls(keys):
    srv = Server(["--keys", keys["path"], "--warm-pool", "0",
                  "--metrics-listen", "127.0.0.1:0"])
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"codeq serve: metrics on port (\d+)", srv.text())):
            assert time.monotonic() < deadline, srv.text()
            time.sleep(0.05)
        port = int(m.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
            assert r.status == 200
        before = scrape(port)
        assert before[("codeq_build_info",
                       frozenset({"version": "0.1.0", "component": "serve"}.items()))] == 1
        c = client(srv, keys["alpha"], REGION)
        sid = c.start_code_interpreter_session(
            codeInterpreterIdentifier="aws.codeinterpreter.v1")["sessionId"]
        for code in ("x = 20", "x + 22", "1/0"):
            c.invoke_code_interpreter(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                      sessionId=sid, name="executeCode",
                                      arguments={"code": code, "language": "python"})
        out = results(c.invoke_code_interpreter(
            codeInterpreterIdentifier="aws.codeinterpreter.v1", sessionId=sid,
            name="executeCode", arguments={"code": "x", "language": "python"}))
        assert out[0]["content"][0]["text"] == "20"
        after = scrape(port)
        assert executions(after, "ok") - executions(before, "ok") == 3
        assert executions(after, "user_error") - executions(before, "user_error") == 1
        key = ("codeq_execution_run_seconds_count", frozenset({"tool": "executeCode"}.items()))
        assert after.get(key, 0) - before.get(key, 0) == 4
        assert after[("codeq_sessions_live", frozenset())] == 1
        c.stop_code_interpreter_session(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                        sessionId=sid)
    finally:
        assert srv.stop() == 0

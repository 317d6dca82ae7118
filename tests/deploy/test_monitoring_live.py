"""The dashboard's and the alerts' worker-core metrics against a live scrape of
`codeq mcp --metrics-listen` (the embedded worker core), parsed by prometheus_client's
text parser: each family they use must exist with the contract's type and labels.

Needs the branch that adds --metrics-listen to codeq mcp (issue 15, worker core metrics);
without it codeq mcp refuses the flag and the test fails, as it should. Needs root (the
embedded worker makes sandboxes), like tests/e2e. The daemons' families are checked by
tests/fleet/test_monitoring_scrape.py."""

import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

from mcp_client import McpServer  # noqa: E402
from monitoring import (CONTRACT, CORE, check_scrape_against_contract, families_used,  # noqa: E402
                        healthcheck_argv, scrape, scraped_families)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(server, port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.proc.poll() is None, \
            f"codeq mcp exited {server.proc.returncode}: {server.stderr_text()[-2000:]}"
        try:
            return scrape(port, "/healthz")
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}: {server.stderr_text()[-2000:]}")


def test_worker_core_metrics_of_dashboard_and_alerts_are_served():
    port = free_port()
    server = McpServer("--metrics-listen", f"127.0.0.1:{port}")
    try:
        status, _, _ = wait_listening(server, port)
    except AssertionError:
        server.kill()  # the first failure says why, not close()'s exit status
        raise
    try:
        assert status == 200
        server.initialize()
        # One call of each kind that labels a family: executions, a session's interpreter.
        result = server.call("executeCode", {"code": "print(6 * 7)", "language": "python"})
        assert "42" in result["structuredContent"]["stdout"]
        status, ctype, text = scrape(port)
        assert status == 200
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        families = scraped_families(text)

        used_core = {n for n in families_used() if CONTRACT[n][2] == CORE}
        assert used_core, "the dashboard and alerts use no worker-core metric?"
        problems = check_scrape_against_contract(families, used_core)
        assert not problems, "\n".join(problems)
        # The rest of the core's contract too (documented in docs/operations.md).
        all_core = {n for n, c in CONTRACT.items() if c[2] == CORE}
        problems = check_scrape_against_contract(families, all_core)
        assert not problems, "\n".join(problems)

        # The call is counted with the labels the dashboard groups by.
        from prometheus_client.parser import text_string_to_metric_families
        execs = [s for f in text_string_to_metric_families(text)
                 if f.name == "codeq_executions" for s in f.samples
                 if s.name == "codeq_executions_total"]
        assert any(s.labels["tool"] == "executeCode" and s.labels["outcome"] == "ok"
                   and s.labels["error_code"] == "NONE" and s.value >= 1 for s in execs), execs

        # The compose healthcheck agrees with /readyz, whatever it answers now.
        status, _, body = scrape(port, "/readyz")
        assert status in (200, 503), (status, body)
        r = subprocess.run(healthcheck_argv(port), capture_output=True, timeout=30)
        assert (r.returncode == 0) == (status == 200), (status, body, r)
    finally:
        server.close()

"""Fixtures shared by the `codeq mcp` end-to-end suites: a module-wide server with
no warm pool, a fresh session per test, and a check that nothing is left on the host.
Test modules import them by name (`from mcp_fixtures import host, server, ...`)."""

import os

import pytest

from mcp_client import HostWatch, McpServer, start_session


@pytest.fixture(scope="module")
def host():
    """Checks, after the module, that none of its codeq processes left sandbox
    processes or cgroups behind."""
    watch = HostWatch()
    yield watch
    watch.assert_clean()


def new_server(host, *args):
    # CODEQ_TEST_FORK_KERNELS=1 runs the suites with kernels forked from the zygote
    # (docs/zygote.md), by hand for now; test_forked_kernels.py always does.
    if os.environ.get("CODEQ_TEST_FORK_KERNELS") == "1" and "--fork-kernels" not in args:
        args = args + ("--fork-kernels",)
    server = McpServer(*args)
    host.pids.append(server.pid)
    server.initialize()
    return server


@pytest.fixture(scope="module")
def server(host):
    srv = new_server(host, "--warm-pool", "0")
    yield srv
    srv.close()


@pytest.fixture
def session(server):
    s = start_session(server)
    yield s
    if server.alive():
        server.call("stopSession", {"sessionId": s.id})


def sc(result):
    return result["structuredContent"]

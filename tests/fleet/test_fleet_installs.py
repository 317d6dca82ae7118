"""In-session installs in the fleet (issue 14): what a PUBLIC session installs with pip
and npm lands in its workspace (pip's user site below HOME=/workspace, npm's
/workspace/node_modules), which the fleet keeps in Redis with the session's other
files; so when its worker is killed with kill -9, the adopting worker's new kernels
import both, with no install of their own. An install past the session's files quota
in Redis is said in the result of the call that made it.

The workers leave through client namespaces of the test internet (tests/net/internet.py),
whose package index and npm registry serve the test packages; no packet leaves the
machine. Real Kafka, Redis and sandboxes; needs root."""

import os
import sys

import pytest

from conftest import BROKERS
from driver import Driver, pb, texts

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "net"))
import internet  # noqa: E402

INDEXES = {"PIP_INDEX_URL": internet.PYPI_URL, "PIP_TRUSTED_HOST": internet.PYPI_NAME,
           "npm_config_registry": internet.REGISTRY_URL}
PY_IMPORT = (f"import {internet.TEST_PACKAGE.replace('-', '_')} as hello\n"
             "print(hello.GREETING, hello.__file__)")
JS_REQUIRE = (f"const hello = require('{internet.NPM_PACKAGE}');\n"
              f"console.log(hello.GREETING, require.resolve('{internet.NPM_PACKAGE}'))")


@pytest.fixture(scope="module")
def net():
    assert os.geteuid() == 0, "the network tests need root"
    with internet.Internet() as n:
        yield n


def owner(redis, fleet, sid):
    return (redis.hget(fleet.prefix + "session:" + sid, "owner") or b"").decode()


def invoke(driver, sid, tool, **args):
    r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool=tool, arguments=pb.Arguments(**args))), timeout=180)
    assert r.WhichOneof("payload") == "result", r
    return r.result


def stdout(result):
    assert not result.is_error, result
    return result.structured_content.stdout.strip()


def test_installed_packages_survive_the_loss_of_the_worker(new_fleet, redis_client, net):
    f = new_fleet()
    for name in ("a", "b"):
        egress = net.add_client()
        f.start_worker(name, "--egress-netns", net.netns_path(egress),
                       "--dns", internet.DNS_SERVER[0], "--network-modes", "NONE,PUBLIC")
    f.wait_workers(redis_client, 2)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session(name="installs", network=pb.NETWORK_MODE_PUBLIC,
                                   env=INDEXES)
        # Both kernels run before anything is installed.
        assert stdout(invoke(driver, sid, "executeCode", code="print('up')")) == "up"
        assert stdout(invoke(driver, sid, "executeCode", code="console.log('up')",
                             language="javascript")) == "up"
        # As the AgentCore SDK's install_packages does: a pip command line.
        r = invoke(driver, sid, "executeCommand", command=f"pip install {internet.TEST_PACKAGE}")
        assert not r.is_error and r.structured_content.exit_code == 0, r
        r = invoke(driver, sid, "executeCommand", command=f"npm install {internet.NPM_PACKAGE}")
        assert not r.is_error and r.structured_content.exit_code == 0, r
        py_where = "/workspace/.local/lib/python3"
        js_where = f"/workspace/node_modules/{internet.NPM_PACKAGE}/index.js"
        got = stdout(invoke(driver, sid, "executeCode", code=PY_IMPORT))
        assert got.startswith(internet.TEST_GREETING + " " + py_where), got
        got = stdout(invoke(driver, sid, "executeCode", code=JS_REQUIRE, language="javascript"))
        assert got == f"{internet.NPM_GREETING} {js_where}", got

        victim = owner(redis_client, f, sid)
        f.workers[victim].kill()

        # The adopter's new kernels import from the restored workspace.
        r = invoke(driver, sid, "executeCode", code=PY_IMPORT)
        assert any("moved to a new worker" in t for t in texts(r)), r
        assert owner(redis_client, f, sid) not in ("", victim)
        got = stdout(r)
        assert got.startswith(internet.TEST_GREETING + " " + py_where), r
        got = stdout(invoke(driver, sid, "executeCode", code=JS_REQUIRE, language="javascript"))
        assert got == f"{internet.NPM_GREETING} {js_where}", got
        # pip's and npm's own records came along: both list the packages as installed.
        r = invoke(driver, sid, "executeCommand",
                   command=f"pip show {internet.TEST_PACKAGE} && npm ls {internet.NPM_PACKAGE}")
        assert not r.is_error and r.structured_content.exit_code == 0, r
        assert f"Location: {py_where}" in r.structured_content.stdout, r
        assert f"{internet.NPM_PACKAGE}@{internet.NPM_VERSION}" in r.structured_content.stdout, r
    finally:
        driver.close()


def test_an_install_past_the_files_quota_is_said(new_fleet, redis_client, net):
    """An install the session's files quota in Redis cannot hold still works on its
    worker, and its result says that the files would not survive the worker's loss."""
    f = new_fleet()
    egress = net.add_client()
    f.start_worker("a", "--egress-netns", net.netns_path(egress), "--dns",
                   internet.DNS_SERVER[0], "--network-modes", "NONE,PUBLIC",
                   "--files-quota", "256")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session(name="quota", network=pb.NETWORK_MODE_PUBLIC, env=INDEXES)
        r = invoke(driver, sid, "executeCommand", command=f"npm install {internet.NPM_PACKAGE}")
        assert not r.is_error and r.structured_content.exit_code == 0, r
        said = ("codeq: the session's files are above its quota in Redis; new or changed "
                "files would not survive the loss of this worker")
        assert any(said in t for t in texts(r)), texts(r)
        got = stdout(invoke(driver, sid, "executeCode", code=JS_REQUIRE, language="javascript"))
        assert got.startswith(internet.NPM_GREETING), got
    finally:
        driver.close()

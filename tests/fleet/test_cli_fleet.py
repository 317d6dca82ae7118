"""`codeq exec --brokers` and `codeq mcp --brokers`: the command-line front ends on the
fleet instead of the embedded worker. Same subcommands, same results, but the sessions
live on the fleet's workers (checked in Redis), and nothing is left behind there."""

import base64
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e"))
from mcp_client import CODEQ, McpServer, assert_no_sanitizer_reports  # noqa: E402


def cli_env(fleet, **extra):
    env = dict(fleet.env, **extra)
    env.pop("CODEQ_LOG_LEVEL", None)  # the daemons' setting, not the command's
    return env


def run_exec(fleet, *args, env=None, timeout=120):
    p = subprocess.run([CODEQ, "exec", *args], env=env or cli_env(fleet), capture_output=True,
                       timeout=timeout)
    assert_no_sanitizer_reports(p.stderr.decode(errors="replace"), "codeq exec")
    return p


def fleet_sessions(redis_client, fleet):
    """Session ids of the fleet that are not terminated (a stopped session's record
    stays a while, TERMINATED, for getSession and listSessions)."""
    live = set()
    for key in redis_client.keys(fleet.prefix + "session:*"):
        if redis_client.hget(key, "status") != b"TERMINATED":
            live.add(key.decode().rsplit(":", 1)[1])
    return live


def started_count(fleet):
    return sum(d.log_text().count('"event":"session_started"') for d in fleet.workers.values())


def test_exec_runs_on_the_fleet_and_stops_its_session(fleet, redis_client):
    before = fleet_sessions(redis_client, fleet)
    starts = started_count(fleet)
    p = run_exec(fleet, "--brokers", fleet.env["CODEQ_BROKERS"], "-c",
                 "import sys\nprint('hello from', sys.platform)\n6 * 7")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines() == ["hello from linux", "42"]
    # The session ran on a worker of this fleet (its start is in a worker's log) and
    # was stopped at the end rather than left to its time to live.
    assert started_count(fleet) == starts + 1
    assert fleet_sessions(redis_client, fleet) == before


def test_exec_takes_brokers_from_the_environment(fleet):
    env = cli_env(fleet)
    assert "CODEQ_BROKERS" in env
    starts = started_count(fleet)
    p = run_exec(fleet, "--lang", "javascript", "-c", "console.log([1, 2, 3].map(x => x * 2))",
                 env=env)
    assert p.returncode == 0, p.stderr
    assert "[ 2, 4, 6 ]" in p.stdout.decode()
    # On the fleet, not in process: a worker of the fleet started its session.
    assert started_count(fleet) == starts + 1


def test_exec_files_in_and_out_and_a_failing_exit_status(fleet, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(bytes(range(256)) * 3)
    out = tmp_path / "out"
    code = ("import sys\n"
            "data = open('input.bin', 'rb').read()\n"
            "open('reversed.bin', 'wb').write(data[::-1])\n"
            "print(len(data))\n"
            "print('to stderr', file=sys.stderr)\n"
            "raise SystemExit(3)\n")
    p = run_exec(fleet, "--file", str(src), "--out", str(out), "-c", code)
    assert p.returncode == 3, (p.stdout, p.stderr)  # SystemExit(3)'s, through the fleet
    assert p.stdout.decode().splitlines()[0] == "768"
    assert "to stderr" in p.stderr.decode()
    assert (out / "reversed.bin").read_bytes() == (bytes(range(256)) * 3)[::-1]
    assert (out / "input.bin").read_bytes() == src.read_bytes()


def test_exec_json_result_has_agentcore_shape(fleet):
    p = run_exec(fleet, "--json", "-c", "print('x')\n'y'")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["isError"] is False
    assert result["structuredContent"]["stdout"] == "x\n"
    assert result["structuredContent"]["exitCode"] == 0
    assert [b["text"] for b in result["content"] if b["type"] == "text"] == ["x\n", "'y'"]


def test_exec_timeout_through_the_fleet(fleet):
    p = run_exec(fleet, "--timeout", "1", "-c", "import time\ntime.sleep(30)")
    assert p.returncode == 124, (p.stdout, p.stderr)  # as timeout(1)
    assert "timed out" in p.stderr.decode()


def test_exec_with_unreachable_brokers_fails_clearly(fleet):
    env = cli_env(fleet, CODEQ_BROKERS="127.0.0.1:1")
    p = run_exec(fleet, "-c", "1", env=env, timeout=60)
    assert p.returncode == 125, (p.stdout, p.stderr)
    err = p.stderr.decode()
    assert "127.0.0.1:1" in err and "Kafka" in err, err
    # librdkafka's own retries are not dumped on the user.
    assert len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def gateway(fleet):
    server = McpServer("--brokers", fleet.env["CODEQ_BROKERS"], "--request-topic",
                       fleet.request_topic, env=cli_env(fleet))
    server.initialize()
    yield server
    server.close()


def test_mcp_gateway_sessions_live_on_the_fleet(gateway, fleet, redis_client):
    started = gateway.call("startSession", {"name": "gateway-test"})
    assert started["isError"] is False, started
    sid = started["structuredContent"]["sessionId"]
    owner = redis_client.hget(f"{fleet.prefix}session:{sid}", "owner").decode()
    assert owner in fleet.workers

    r = gateway.call("executeCode", {"sessionId": sid, "code": "counter = 41"})
    assert r["isError"] is False, r
    r = gateway.call("executeCode", {"sessionId": sid, "code": "counter + 1"})
    assert [b["text"] for b in r["content"]] == ["42"]

    blob = bytes(range(256))
    r = gateway.call("writeFiles", {"sessionId": sid, "content": [
        {"path": "data/bytes.bin", "blob": base64.b64encode(blob).decode()},
        {"path": "notes.txt", "text": "héllo"}]})
    assert r["isError"] is False, r
    r = gateway.call("readFiles", {"sessionId": sid, "paths": ["data/bytes.bin", "notes.txt"]})
    res = [b["resource"] for b in r["content"] if b["type"] == "resource"]
    assert base64.b64decode(res[0]["blob"]) == blob
    assert res[1]["text"] == "héllo"
    # The fleet keeps the files in Redis too (the session can move with them).
    assert redis_client.hexists(f"{fleet.prefix}files:{sid}", "m:data/bytes.bin")

    got = gateway.call("getSession", {"sessionId": sid})
    assert got["structuredContent"]["status"] == "READY"
    assert got["structuredContent"]["name"] == "gateway-test"
    listed = gateway.call("listSessions", {"maxResults": 100})
    assert sid in [s["sessionId"] for s in listed["structuredContent"]["items"]]

    stopped = gateway.call("stopSession", {"sessionId": sid})
    assert stopped["isError"] is False, stopped
    gone = gateway.call("executeCode", {"sessionId": sid, "code": "1"})
    assert gone["isError"] is True
    assert gone["_codeq_error"]["code"] == "NOT_FOUND"


def test_mcp_gateway_default_session_keeps_state(gateway):
    r = gateway.call("executeCode", {"code": "import os\nmarker = os.getpid()"})
    assert r["isError"] is False, r
    r = gateway.call("executeCode", {"code": "print(marker)"})
    assert r["isError"] is False and r["structuredContent"]["stdout"].strip().isdigit(), r
    r = gateway.call("executeCommand", {"command": "echo out; echo err >&2; exit 4"})
    assert r["structuredContent"]["stdout"] == "out\n"
    assert r["structuredContent"]["stderr"] == "err\n"
    assert r["structuredContent"]["exitCode"] == 4


def test_mcp_gateway_tasks_and_timeouts(gateway):
    sid = gateway.call("startSession", {})["structuredContent"]["sessionId"]
    task = gateway.call("startCommandExecution", {"sessionId": sid,
                                                  "command": "sleep 30; echo never"})
    tid = task["structuredContent"]["taskId"]
    assert gateway.call("getTask", {"sessionId": sid, "taskId": tid})[
        "structuredContent"]["taskStatus"] == "working"
    stopped = gateway.call("stopTask", {"sessionId": sid, "taskId": tid})
    assert stopped["structuredContent"]["taskStatus"] == "canceled", stopped

    r = gateway.call("executeCode", {"sessionId": sid, "code": "import time\ntime.sleep(30)",
                                     "timeout": 1})
    assert r["isError"] is True and r["_codeq_error"]["code"] == "TIMED_OUT", r
    r = gateway.call("executeCode", {"sessionId": sid, "code": "'still usable'"})
    assert r["isError"] is False and r["content"][0]["text"] == "'still usable'", r
    gateway.call("stopSession", {"sessionId": sid})


def test_mcp_gateway_refusals_are_tool_errors(gateway):
    r = gateway.call("getSession", {"sessionId": "no-such-session"})
    assert r["isError"] is True and r["_codeq_error"]["code"] == "NOT_FOUND", r
    r = gateway.call("readFiles", {"sessionId": "no-such-session", "paths": ["x"]})
    assert r["isError"] is True and r["_codeq_error"]["code"] == "NOT_FOUND", r
    assert gateway.call_error("noSuchTool", {})["code"] == -32602


def test_mcp_gateway_stops_its_default_session_at_exit(fleet, redis_client):
    server = McpServer("--brokers", fleet.env["CODEQ_BROKERS"], "--request-topic",
                       fleet.request_topic, env=cli_env(fleet))
    server.initialize()
    before = fleet_sessions(redis_client, fleet)
    r = server.call("executeCode", {"code": "1"})
    assert r["isError"] is False, r
    assert len(fleet_sessions(redis_client, fleet) - before) == 1
    server.close()
    deadline = time.time() + 30
    while time.time() < deadline and fleet_sessions(redis_client, fleet) - before:
        time.sleep(0.1)
    assert not fleet_sessions(redis_client, fleet) - before


def test_exec_moves_a_30_mb_file_each_way(fleet, tmp_path):
    # Past the broker's 1 MB default: both ways through Redis (the claim check), with
    # the fleet's Redis from CODEQ_REDIS.
    data = os.urandom(30 << 20)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    out = tmp_path / "out"
    code = ("import hashlib\n"
            "d = open('big.bin', 'rb').read()\n"
            "open('copy.bin', 'wb').write(d[::-1])\n"
            "hashlib.sha256(d).hexdigest()")
    p = run_exec(fleet, "--file", str(src), "--out", str(out), "-c", code, timeout=300)
    assert p.returncode == 0, p.stderr
    import hashlib
    assert p.stdout.decode().strip() == repr(hashlib.sha256(data).hexdigest())
    assert (out / "copy.bin").read_bytes() == data[::-1]

"""Code interpreters in the fleet (docs/fleet.md, "Code interpreters in the fleet"): a
runtime and an interpreter defined once through the fleet's Redis (codeq runtime push
--fleet, codeq interpreter create --fleet) are served by every worker, with no step on
any worker.

Offline: the package is a pure-Python wheel made here (tests/net/internet.py
make_wheel) into a wheelhouse. Each worker has a runtime store of its own, empty at its
start, so a layer in it came from the fleet (the worker's log says whether it fetched
it from the fleet's cache or built it). Stores and the wheelhouse are below /tmp with
mode 0755: the installers run as the user nobody.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from conftest import BIN_DIR, BROKERS, REPO
from driver import Driver, pb, texts

sys.path.insert(0, os.path.join(REPO, "tests", "net"))
from internet import make_wheel  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client, SessionError  # noqa: E402

CODEQ = os.path.join(BIN_DIR, "codeq")
HOST_PYTHON = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('python%d.%d' % "
                              "sys.version_info[:2])"], capture_output=True, text=True,
                             check=True).stdout.strip()
EXTRA_SECONDS = 300  # builds of runtimes, on a shared machine


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="cq-fleet-interp-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_runtime(scratch, name):
    """A wheelhouse with cqfleet-pkg 1.0 and the spec of runtime name that installs it."""
    wh = os.path.join(scratch, "wheelhouse")
    os.makedirs(wh, exist_ok=True)
    os.chmod(wh, 0o755)
    filename, data = make_wheel("cqfleet-pkg", "1.0", {
        "cqfleet_pkg/__init__.py": "VALUE = 'fleet package 1.0'\n"})
    with open(os.path.join(wh, filename), "wb") as f:
        f.write(data)
    spec = os.path.join(scratch, f"{name}.json")
    with open(spec, "w") as f:
        f.write('{"name": "%s", "language": "%s", "packages": {"pip": ["cqfleet-pkg==1.0"]}, '
                '"environment": {"CQFLEET_MODE": "on"}}' % (name, HOST_PYTHON))
    return wh, spec


def start_fleet(new_fleet, scratch, max_sessions):
    """A fleet whose two workers each have an empty runtime store of their own, and the
    configuration file the CLI reaches its Redis with."""
    fleet = new_fleet()
    stores = {}
    for w in ("a", "b"):
        store = os.path.join(scratch, f"store-{w}")
        wid = fleet.start_worker(w, "--runtime-store", store, "--max-sessions", str(max_sessions))
        stores[wid] = store
    conf = os.path.join(scratch, "fleet.conf")
    with open(conf, "w") as f:
        f.write(f"redis = {fleet.env['CODEQ_REDIS']}\nredis_prefix = {fleet.prefix}\n"
                f"brokers = {BROKERS}\n")
    r = fleet.redis()
    fleet.wait_workers(r, 2)
    fleet.start_dispatcher()
    return fleet, stores, conf, r


def cli(*args, env=None, check=True):
    # The configuration file alone says where the fleet is: no CODEQ_* from the tests.
    clean = {k: v for k, v in (env or os.environ).items() if not k.startswith("CODEQ_")}
    p = subprocess.run([CODEQ, *args], capture_output=True, text=True, env=clean, timeout=300)
    if check:
        assert p.returncode == 0, f"codeq {' '.join(args)}: {p.returncode}\n{p.stderr}"
    return p


def owner(r, fleet, sid):
    return r.hget(fleet.prefix + "session:" + sid, "owner").decode()


def run_code(client, sid, code):
    out = client.invoke(sid, "executeCode", {"code": code})
    assert not out.get("isError"), out
    return out["structuredContent"]["stdout"]


IMPORT = "import os, cqfleet_pkg\nprint(cqfleet_pkg.VALUE, os.environ.get('CQFLEET_MODE'))"


def wait_ready(r, fleet, wid, name):
    """Until the worker's heartbeat lists name among the interpreters it has ready."""
    deadline = time.time() + 10
    while name.encode() not in (r.hget(fleet.prefix + "worker:" + wid, "interpreters")
                                or b"").split(b","):
        assert time.time() < deadline, f"{wid} never said {name} is ready"
        time.sleep(0.1)


def local_digest(store, name):
    path = os.path.join(store, "names", name)
    return open(path).read().strip() if os.path.exists(path) else None


def test_pushed_runtime_is_fetched_by_each_worker(new_fleet, scratch):
    fleet, stores, conf, r = start_fleet(new_fleet, scratch, max_sessions=2)
    wh, spec = make_runtime(scratch, "fleetrt")
    # Built by the CLI, uploaded to the fleet's cache.
    push = cli("runtime", "push", spec, "--fleet", conf, "--wheelhouse", wh,
               "--store", os.path.join(scratch, "cli-store"))
    digest = push.stdout.strip()
    assert len(digest) == 64, push.stdout
    assert r.hget(fleet.prefix + "runtime:fleetrt", "digest").decode() == digest
    assert r.strlen(fleet.prefix + "layer:" + digest) > 0
    assert "fleetrt" in cli("runtime", "list", "--fleet", conf).stdout
    created = cli("interpreter", "create", "--name", "fleetpy", "--runtime", "fleetrt",
                  "--memory", "512M", "--fleet", conf)
    assert '"fleetpy"' in created.stdout
    assert cli("interpreter", "list", "--fleet", conf).stdout.split() == \
        ["fleetpy", "fleetrt", "*"]
    # An interpreter naming a runtime the fleet does not have is refused at once.
    p = cli("interpreter", "create", "--name", "nort", "--runtime", "missing", "--fleet", conf,
            check=False)
    assert p.returncode == 1 and "no runtime 'missing'" in p.stderr, p.stderr
    assert all(local_digest(s, "fleetrt") is None for s in stores.values())

    with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=120) as c:
        # The first session goes to either worker, which fetches the layer and says in
        # its heartbeat (every 500 ms) that the interpreter is ready there.
        first = c.start_session(code_interpreter_identifier="fleetpy")
        a = owner(r, fleet, first.id)
        b = next(w for w in stores if w != a)
        wait_ready(r, fleet, a, "fleetpy")
        # The second goes to that worker too, though the other has more room (2 to 1):
        # it has the interpreter ready. It is then full (max_sessions 2), and the third
        # goes to the other worker, which fetches the layer in turn.
        second = c.start_session(code_interpreter_identifier="fleetpy")
        assert owner(r, fleet, second.id) == a
        third = c.start_session(code_interpreter_identifier="fleetpy")
        assert owner(r, fleet, third.id) == b
        sessions = [first, second, third]
        for s in sessions:
            assert run_code(c, s.id, IMPORT) == "fleet package 1.0 on\n"
            info = c.get_session(s.id)
            assert info["codeInterpreterIdentifier"] == "fleetpy", info
            assert (info["runtime"], info["runtimeDigest"]) == ("fleetrt", digest), info
            assert info["limits"]["memory"] == 512 << 20, info
        # Each worker fetched the layer from the fleet's cache (its log says so, its
        # store has it under the digest the CLI pushed) and built nothing.
        for wid, store in stores.items():
            log = fleet.workers[wid].log_text()
            assert f"layer {digest} fetched from the fleet's cache" in log, log[-3000:]
            assert "building it here" not in log
            assert local_digest(store, "fleetrt") == digest
            assert os.path.exists(os.path.join(store, "layers", digest, "manifest.json"))
        wait_ready(r, fleet, b, "fleetpy")

        # An interpreter that was never defined: NOT_FOUND from the dispatcher.
        with pytest.raises(SessionError) as e:
            c.start_session(code_interpreter_identifier="nosuch")
        assert e.value.code == "NOT_FOUND" and "nosuch" in str(e.value)

        # Deleted: new sessions are refused, running ones still answer.
        running = sessions[0]
        for s in sessions[1:]:
            c.stop_session(s.id)
        cli("interpreter", "delete", "fleetpy", "--fleet", conf)
        assert cli("interpreter", "list", "--fleet", conf).stdout == ""
        assert r.ttl(fleet.prefix + "interpreter:fleetpy") > 0  # the marker expires
        with pytest.raises(SessionError) as e:
            c.start_session(code_interpreter_identifier="fleetpy")
        assert e.value.code == "NOT_FOUND" and "deleted" in str(e.value), str(e.value)
        assert run_code(c, running.id, "print(1 + 1)") == "2\n"
        # The default interpreter is untouched.
        plain = c.start_session()
        assert run_code(c, plain.id, "print('plain')") == "plain\n"
        assert c.get_session(plain.id)["codeInterpreterIdentifier"] == "codeq.default"

    shown = json.loads(cli("runtime", "show", "fleetrt", "--fleet", conf).stdout)
    assert (shown["digest"], shown["builtBy"]) == (digest, "cli"), shown
    assert shown["layerBytes"] == r.strlen(fleet.prefix + "layer:" + digest)
    assert shown["spec"]["packages"]["pip"] == ["cqfleet-pkg==1.0"]
    cli("runtime", "rm", "fleetrt", "--fleet", conf)
    assert not r.exists(fleet.prefix + "layer:" + digest)
    assert cli("runtime", "list", "--fleet", conf).stdout == ""
    p = cli("runtime", "show", "fleetrt", "--fleet", conf, check=False)
    assert p.returncode == 1 and "no runtime 'fleetrt'" in p.stderr


def test_workers_build_once_and_sessions_wait_for_the_build(new_fleet, scratch):
    # One session per worker: the two starts land on the two workers at once.
    fleet, stores, conf, r = start_fleet(new_fleet, scratch, max_sessions=1)
    wh, spec = make_runtime(scratch, "builtrt")
    p = cli("runtime", "push", spec, "--fleet", conf, "--wheelhouse", wh, "--build-on-workers")
    assert p.stdout == "" and "first worker that needs it builds it" in p.stderr, p.stderr
    assert r.hget(fleet.prefix + "runtime:builtrt", "digest") in (None, b"")
    cli("interpreter", "create", "--name", "builtpy", "--runtime", "builtrt", "--fleet", conf)

    with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=240) as c:
        started, errors = [], []

        def start():
            try:
                started.append(c.start_session(code_interpreter_identifier="builtpy"))
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=start) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert len(started) == 2
        owners = {owner(r, fleet, s.id) for s in started}
        assert owners == set(stores), owners
        for s in started:
            assert run_code(c, s.id, IMPORT) == "fleet package 1.0 on\n"

    # One build in the whole fleet, one layer in its cache; the other worker's session
    # waited for that build and then fetched its layer.
    digest = r.hget(fleet.prefix + "runtime:builtrt", "digest").decode()
    assert len(digest) == 64
    assert [k.decode() for k in r.scan_iter(match=fleet.prefix + "layer:*")] == \
        [fleet.prefix + "layer:" + digest]
    assert list(r.scan_iter(match=fleet.prefix + "layertmp:*")) == []
    logs = {wid: fleet.workers[wid].log_text() for wid in stores}
    builders = [wid for wid, log in logs.items() if "runtime builtrt: built here" in log]
    assert len(builders) == 1, {w: log[-2000:] for w, log in logs.items()}
    other = next(wid for wid in stores if wid not in builders)
    assert "runtime builtrt: another worker is building it; waiting" in logs[other], \
        logs[other][-3000:]
    assert f"layer {digest} fetched from the fleet's cache" in logs[other]
    assert r.hget(fleet.prefix + "runtime:builtrt", "built_by").decode() == builders[0]
    for store in stores.values():
        assert local_digest(store, "builtrt") == digest
    assert r.get(fleet.prefix + "lock:build:builtrt") is None


def test_a_tampered_layer_is_refused(new_fleet, scratch):
    fleet, stores, conf, r = start_fleet(new_fleet, scratch, max_sessions=2)
    wh, spec = make_runtime(scratch, "tamperrt")
    digest = cli("runtime", "push", spec, "--fleet", conf, "--wheelhouse", wh,
                 "--store", os.path.join(scratch, "cli-store")).stdout.strip()
    cli("interpreter", "create", "--name", "tamperpy", "--runtime", "tamperrt", "--fleet", conf)
    # One byte changed in the cached stream: its SHA-256 no longer matches the record.
    key = fleet.prefix + "layer:" + digest
    byte = r.getrange(key, 200, 200)
    r.setrange(key, 200, bytes([byte[0] ^ 1]))
    with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=120) as c:
        with pytest.raises(SessionError) as e:
            c.start_session(code_interpreter_identifier="tamperpy")
        assert "does not match its record" in str(e.value), str(e.value)
    assert all(local_digest(s, "tamperrt") is None for s in stores.values())


def test_a_deleted_interpreters_session_is_still_adopted(new_fleet, scratch):
    # One worker first; the second, with an empty store, starts after the delete and
    # takes the session over when the first drains.
    fleet = new_fleet()
    store_a, store_b = os.path.join(scratch, "store-a"), os.path.join(scratch, "store-b")
    wid_a = fleet.start_worker("a", "--runtime-store", store_a)
    conf = os.path.join(scratch, "fleet.conf")
    with open(conf, "w") as f:
        f.write(f"redis = {fleet.env['CODEQ_REDIS']}\nredis_prefix = {fleet.prefix}\n")
    r = fleet.redis()
    fleet.wait_workers(r, 1)
    fleet.start_dispatcher()
    wh, spec = make_runtime(scratch, "adoptrt")
    digest = cli("runtime", "push", spec, "--fleet", conf, "--wheelhouse", wh,
                 "--store", os.path.join(scratch, "cli-store")).stdout.strip()
    cli("interpreter", "create", "--name", "adoptpy", "--runtime", "adoptrt", "--fleet", conf)
    with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=120) as c:
        s = c.start_session(code_interpreter_identifier="adoptpy")
        assert owner(r, fleet, s.id) == wid_a
        assert run_code(c, s.id, IMPORT + "\nopen('kept.txt', 'w').write('kept')") == \
            "fleet package 1.0 on\n"
        cli("interpreter", "delete", "adoptpy", "--fleet", conf)
        wid_b = fleet.start_worker("b", "--runtime-store", store_b)
        fleet.wait_workers(r, 2)
        fleet.workers[wid_a].stop()  # drained: its session is released
        # The next call moves the session to b, which defines the deleted interpreter
        # for this adoption only, with the layer fetched from the fleet's cache.
        assert run_code(c, s.id, IMPORT + "\nprint(open('kept.txt').read())") == \
            "fleet package 1.0 on\nkept\n"
        assert owner(r, fleet, s.id) == wid_b
        log_b = fleet.workers[wid_b].log_text()
        assert f"layer {digest} fetched from the fleet's cache" in log_b, log_b[-3000:]
        assert c.get_session(s.id)["codeInterpreterIdentifier"] == "adoptpy"
        # New sessions stay refused, by the dispatcher and by b.
        with pytest.raises(SessionError) as e:
            c.start_session(code_interpreter_identifier="adoptpy")
        assert e.value.code == "NOT_FOUND"


def test_tenants_in_a_keyless_fleet(new_fleet, scratch):
    """Keyless, requests name no tenant: an interpreter limited to tenants is refused by
    the CLI, and one that is so anyway (the fleet was made keyless later) takes no new
    session, with a message that says why (docs/fleet.md)."""
    fleet = new_fleet()
    fleet.start_worker("a")
    conf = os.path.join(scratch, "fleet.conf")
    with open(conf, "w") as f:
        f.write(f"redis = {fleet.env['CODEQ_REDIS']}\nredis_prefix = {fleet.prefix}\n")
    r = fleet.redis()
    fleet.wait_workers(r, 1)
    fleet.start_dispatcher()
    p = cli("interpreter", "create", "--name", "mine", "--tenant", "alice", "--fleet", conf,
            check=False)
    assert p.returncode == 1 and "is keyless (no keys_file)" in p.stderr, p.stderr
    assert cli("interpreter", "list", "--fleet", conf).stdout == ""
    cli("interpreter", "create", "--name", "mine", "--fleet", conf)
    d = Driver(BROKERS, fleet.request_topic)
    try:
        start = pb.StartSession(code_interpreter_identifier="mine")
        ok = d.call(pb.Request(start_session=start))
        assert ok.WhichOneof("payload") == "session", ok
        r.hset(fleet.prefix + "interpreter:mine", "tenants", "alice")
        assert cli("interpreter", "list", "--fleet", conf).stdout.split() == \
            ["mine", "-", "alice"]
        refused = d.call(pb.Request(start_session=start)).result
        assert refused.is_error and refused.error_code == pb.ERROR_CODE_NOT_FOUND, refused
        assert "limited to tenants, and this fleet is keyless" in refused.error_message
        # The session admitted before goes on.
        run = d.call(pb.Request(session_id=ok.session.session_id, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="6 * 7"))))
        assert run.result.structured_content.value == "42", run
    finally:
        d.close()


@pytest.fixture
def silent_index():
    """A package index that takes connections and never answers: a build from it blocks
    until pip's own timeout, which outlasts the test."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/simple"
    stop.set()
    t.join()
    for c in held:
        c.close()  # the orphaned pip of a killed worker fails now, not minutes later
    srv.close()


def test_a_start_running_on_a_worker_that_dies_frees_its_client_token(new_fleet, scratch,
                                                                        silent_index):
    """A start that a worker took and was still running (building its interpreter's
    runtime, held by an index that never answers) when the worker died (SIGKILL) is
    answered by recovery, and leaves nothing behind: its session is not left STARTING,
    and its client token is freed, so the client's retry starts a session that runs
    code instead of getting one no worker runs (docs/fleet.md, "Dead workers")."""
    fleet, stores, conf, r = start_fleet(new_fleet, scratch, max_sessions=2)
    _, spec = make_runtime(scratch, "stuckrt")
    cli("runtime", "push", spec, "--fleet", conf, "--index-url", silent_index,
        "--build-on-workers")
    cli("interpreter", "create", "--name", "stuckpy", "--runtime", "stuckrt", "--fleet", conf)
    driver = Driver(BROKERS, fleet.request_topic)
    try:
        token = uuid.uuid4().hex
        rid = driver.send(pb.Request(start_session=pb.StartSession(
            code_interpreter_identifier="stuckpy", client_token=token)))
        deadline = time.time() + 60
        while r.get(fleet.prefix + "start:" + token) is None or \
                r.hget(fleet.prefix + "req:" + rid, "state") != b"running":
            assert time.time() < deadline, "the start never ran"
            time.sleep(0.05)
        sid = r.get(fleet.prefix + "start:" + token).decode()
        wid = owner(r, fleet, sid)
        worker = fleet.workers[wid]
        while "building it here" not in worker.log_text():
            assert time.time() < deadline, worker.log_text()[-3000:]
            time.sleep(0.1)
        assert r.hget(fleet.prefix + "session:" + sid, "status") == b"STARTING"
        worker.kill()

        lost = driver.wait_final(rid, timeout=120)
        assert lost.result.is_error and lost.result.error_code == pb.ERROR_CODE_INTERNAL, lost
        assert "was lost" in lost.result.error_message, lost
        assert r.hget(fleet.prefix + "session:" + sid, "status") != b"STARTING"
        assert r.zscore(fleet.prefix + "sessions", sid) is None
        assert r.get(fleet.prefix + "start:" + token) is None

        # The retry (the interpreter whose build never ends swapped for the default).
        retry = driver.call(pb.Request(start_session=pb.StartSession(client_token=token)))
        assert retry.WhichOneof("payload") == "session", retry
        assert retry.session.session_id != sid
        assert owner(r, fleet, retry.session.session_id) != wid
        assert texts(driver.code(retry.session.session_id, "6 * 7")) == ["42"]
    finally:
        driver.close()

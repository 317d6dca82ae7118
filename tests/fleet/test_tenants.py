"""Tenants and signed requests (docs/security.md), attacked end to end: a fleet with a
keys file made by `codeq tenant` and `codeq key`, two tenants, and everything one of
them could try against the other's session, through the dispatcher and straight to a
worker's topic. Real Kafka, real Redis, real sandboxes."""

import os
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer

from conftest import BROKERS, REPO, Fleet
from driver import Driver, pb, texts

import sys

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client, Credentials  # noqa: E402
from codeq_client.auth import sign  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e"))
from mcp_client import CODEQ  # noqa: E402

DENIED = pb.ERROR_CODE_ACCESS_DENIED
NOT_FOUND = pb.ERROR_CODE_NOT_FOUND


def codeq(*args, check=True):
    p = subprocess.run([CODEQ, *args], capture_output=True, text=True, timeout=60)
    assert not check or p.returncode == 0, p.stderr
    return p


def parse_credentials(text):
    values = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    return Credentials(values["tenant"], values["key_id"], values["secret"])


@pytest.fixture(scope="module")
def tenants(services, redis_client):
    """A fleet with tenants alice and bob, one key each (made by the real commands)."""
    d = tempfile.mkdtemp(prefix="codeq-tenants-")
    keys = os.path.join(d, "keys")
    creds = {}
    for name in ("alice", "bob"):
        codeq("tenant", "create", name, "--keys", keys)
        creds[name] = parse_credentials(codeq("key", "create", name, "--keys", keys).stdout)
    f = Fleet(keys_file=keys)
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    yield f, keys, creds, d
    f.stop()


@pytest.fixture
def alice(tenants):
    f, _, creds, _ = tenants
    d = Driver(BROKERS, f.request_topic, credentials=creds["alice"])
    yield d
    d.close()


@pytest.fixture
def bob(tenants):
    f, _, creds, _ = tenants
    d = Driver(BROKERS, f.request_topic, credentials=creds["bob"])
    yield d
    d.close()


def invoke(sid, tool, **args):
    return pb.Request(session_id=sid, invoke=pb.Invoke(tool=tool, arguments=pb.Arguments(**args)))


def alice_private(alice):
    """alice's session with a secret in a file, a variable and its environment."""
    sid = alice.start_session(name="alice-private", env={"API_KEY": "sk-alice-secret"})
    r = alice.call(invoke(sid, "writeFiles", content=[pb.FileContent(path="secret.txt",
                                                                      text="hunter2-file")]))
    assert not r.result.is_error, r
    assert not alice.code(sid, "password = 'hunter2'").is_error
    return sid


def unknown_session_error(driver, tool, **args):
    """The error for a session id nobody has, with the id taken out."""
    made_up = uuid.uuid4().hex
    r = driver.call(invoke(made_up, tool, **args)).result
    return r.error_code, r.error_message.replace(made_up, "<sid>")


def test_another_tenant_can_neither_see_nor_touch_a_session(tenants, alice, bob):
    sid = alice_private(alice)
    listed = alice.call(pb.Request(list_sessions=pb.ListSessions(max_results=100)))
    assert sid in [s.session_id for s in listed.sessions.sessions]
    # bob lists only his own sessions: none.
    listed = bob.call(pb.Request(list_sessions=pb.ListSessions(max_results=100)))
    assert sid not in [s.session_id for s in listed.sessions.sessions], listed
    # Every tool on alice's session: exactly what a session that does not exist gets.
    attempts = [
        ("executeCode", dict(code="password")),
        ("executeCode", dict(code="import os; os.environ['API_KEY']")),
        ("executeCommand", dict(command="cat secret.txt; env")),
        ("readFiles", dict(paths=["secret.txt"])),
        ("listFiles", dict(directory_path=".")),
        ("writeFiles", dict(content=[pb.FileContent(path="secret.txt", text="overwritten")])),
        ("removeFiles", dict(paths=["secret.txt"])),
        ("startCommandExecution", dict(command="cat secret.txt")),
        ("getTask", dict(task_id="t1")),
        ("stopTask", dict(task_id="t1")),
    ]
    for tool, args in attempts:
        r = bob.call(invoke(sid, tool, **args)).result
        assert r.is_error and r.error_code == NOT_FOUND, (tool, r)
        assert (r.error_code, r.error_message.replace(sid, "<sid>")) == \
            unknown_session_error(bob, tool, **args), tool
        assert not any("hunter2" in t or "sk-alice" in t for t in texts(r)), (tool, r)
    r = bob.call(pb.Request(session_id=sid, get_session=pb.GetSession()))
    assert r.result.error_code == NOT_FOUND, r
    r = bob.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))
    assert r.result.error_code == NOT_FOUND, r
    # alice's session is untouched: running, its file, its variable, its environment.
    r = alice.code(sid, "import os; password + open('secret.txt').read() + os.environ['API_KEY']")
    assert not r.is_error and r.structured_content.value == "'hunter2hunter2-filesk-alice-secret'", r
    r = alice.call(pb.Request(session_id=sid, get_session=pb.GetSession()))
    assert r.session.status == pb.SESSION_STATUS_READY, r
    assert not alice.call(pb.Request(session_id=sid, stop_session=pb.StopSession())).result.is_error


def test_a_client_token_is_its_tenants_own(tenants, alice, bob):
    token = uuid.uuid4().hex
    a = alice.start_session(client_token=token)
    assert alice.start_session(client_token=token) == a  # the same start, repeated
    b = bob.start_session(client_token=token)
    assert b != a
    for d, sid in ((alice, a), (bob, b)):
        d.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def wait_denied(driver, rid, why, timeout=60, count=1):
    r = driver.wait_final(rid, timeout=timeout, count=count).result
    assert r.is_error and r.error_code == DENIED, r
    assert why in r.error_message, r.error_message
    return r


def test_forged_expired_unknown_revoked_and_unsigned_requests_are_refused(tenants, alice):
    f, keys, creds, _ = tenants
    a = creds["alice"]
    sid = alice.start_session()
    probe = lambda: invoke(sid, "executeCode", code="1")  # noqa: E731
    # A secret that is not the key's.
    forged = Credentials(a.tenant, a.key_id, "0" * 64)
    wait_denied(alice, alice.send(probe(), credentials=forged), "bad signature")
    # Signed ten minutes ago (the window is five).
    req = probe()
    req.request_id, req.reply_topic, req.tenant = uuid.uuid4().hex, alice.reply_topic, a.tenant
    old = sign(req, a, now_ms=int(time.time() * 1000) - 10 * 60 * 1000)
    alice.send_raw(old.SerializeToString(), key=sid)
    wait_denied(alice, req.request_id, "expired")
    # A key id nobody made.
    unknown = Credentials(a.tenant, "cqk_" + "0" * 20, a.secret)
    wait_denied(alice, alice.send(probe(), credentials=unknown), "unknown key id")
    # Unsigned.
    req = probe()
    req.request_id, req.reply_topic = uuid.uuid4().hex, alice.reply_topic
    alice.send_raw(req.SerializeToString(), key=sid)
    wait_denied(alice, req.request_id, "unsigned request")
    # Another tenant's key, claiming to be alice.
    posing = Credentials("alice", creds["bob"].key_id, creds["bob"].secret)
    wait_denied(alice, alice.send(probe(), credentials=posing), "is not a key of tenant 'alice'")
    # A second key works until it is revoked; then it is refused within a second or so.
    second = parse_credentials(codeq("key", "create", "alice", "--keys", keys).stdout)
    r = alice.wait_final(alice.send(probe(), credentials=second)).result
    assert not r.is_error, r
    codeq("key", "revoke", second.key_id, "--keys", keys)
    time.sleep(1.5)
    wait_denied(alice, alice.send(probe(), credentials=second), "was revoked")
    # The first key was never touched.
    assert not alice.code(sid, "2").is_error
    alice.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def test_a_request_id_is_its_senders(tenants, alice, bob):
    sid = alice.start_session()
    req = invoke(sid, "executeCode", code="n = globals().get('n', 0) + 1\nn")
    first = alice.call(req)
    assert first.result.structured_content.value == "1", first
    # The same request again (a retry): the same reply, not a second run.
    again = alice.call(req)
    assert again.result.structured_content.value == "1", again
    # Other content under alice's request id: refused, from alice as from bob, and
    # nobody gets alice's reply for it.
    other = invoke(sid, "executeCode", code="n")
    other.request_id = req.request_id
    rid = alice.send(other)
    assert rid == req.request_id
    wait_denied(alice, rid, "already used", count=3)  # after the first reply and its repeat
    stolen = invoke(sid, "executeCode", code="n")
    stolen.request_id = req.request_id
    wait_denied(bob, bob.send(stolen), "already used")
    assert alice.code(sid, "n").structured_content.value == "1"
    alice.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def dead_letters(fleet, want, timeout=30):
    """The dead-letter reasons of the fleet's DLQ topic, until one contains want."""
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": "dlq-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([fleet.dlq_topic])
    reasons, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline and not any(want in r for r in reasons):
            m = c.poll(0.5)
            if m is not None and not m.error():
                reasons.append(dict(m.headers() or []).get("codeq-dlq-reason", b"").decode())
    finally:
        c.close()
    return reasons


def test_straight_to_a_worker_topic_nothing_runs(tenants, alice, bob, redis_client):
    f, _, creds, _ = tenants
    sid = alice_private(alice)
    owner = redis_client.hget(f"{f.prefix}session:{sid}", "owner").decode()
    worker_topic = f"codeq.worker.{owner}"
    # bob, signing with his own valid key, writes to the worker that holds alice's
    # session: a new request id (no dispatcher admitted it), and an id alice used.
    fresh = invoke(sid, "writeFiles", content=[pb.FileContent(path="secret.txt", text="pwned")])
    fresh.request_id, fresh.reply_topic, fresh.tenant = uuid.uuid4().hex, bob.reply_topic, "bob"
    bob.send_raw(sign(fresh, creds["bob"]).SerializeToString(), key=sid, topic=worker_topic)
    used = alice.call(invoke(sid, "executeCode", code="'x'"))
    replay = invoke(sid, "executeCommand", command="cat secret.txt")
    replay.request_id, replay.reply_topic, replay.tenant = used.request_id, bob.reply_topic, "bob"
    bob.send_raw(sign(replay, creds["bob"]).SerializeToString(), key=sid, topic=worker_topic)
    # Unsigned, and signed but with the tenant's key forged: dead-lettered by the worker.
    unsigned = invoke(sid, "executeCode", code="1")
    unsigned.request_id, unsigned.reply_topic = uuid.uuid4().hex, bob.reply_topic
    bob.send_raw(unsigned.SerializeToString(), key=sid, topic=worker_topic)
    reasons = dead_letters(f, "unsigned request")
    assert any("unsigned request" in r for r in reasons), reasons
    time.sleep(2)  # what the worker would have answered would be here by now
    assert bob.finals(fresh.request_id) == [] and bob.finals(replay.request_id) == []
    assert redis_client.hget(f"{f.prefix}req:{fresh.request_id}", "state") is None
    r = alice.call(invoke(sid, "readFiles", paths=["secret.txt"]))
    assert "hunter2-file" in str(r.result), r
    alice.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def test_another_tenant_cannot_cancel_a_call(tenants, alice, bob, redis_client):
    """A cancel_call names a call by its request id: bob's, for alice's running call,
    is refused by the dispatcher (not his session) and, sent straight to the worker's
    topic, matches nothing there (not his call): alice's call runs to its end."""
    f, _, creds, _ = tenants
    sid = alice.start_session()
    call = alice.send(invoke(sid, "executeCode", code="import time\ntime.sleep(3)\n'done'"))
    via_dispatcher = bob.send(pb.Request(session_id=sid, cancel_call=pb.CancelCall(
        request_id=call)))
    r = bob.wait_final(via_dispatcher).result
    assert r.is_error and r.error_code == NOT_FOUND, r
    owner = redis_client.hget(f"{f.prefix}session:{sid}", "owner").decode()
    direct = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, tenant="bob",
                        reply_topic=bob.reply_topic, cancel_call=pb.CancelCall(request_id=call))
    bob.send_raw(sign(direct, creds["bob"]).SerializeToString(), key=sid,
                 topic=f"codeq.worker.{owner}")
    r = bob.wait_final(direct.request_id).result
    assert "nothing to cancel" in texts(r)[0], r
    r = alice.wait_final(call).result
    assert not r.is_error and texts(r) == ["'done'"], r
    # Alice's own cancel does reach it.
    call = alice.send(invoke(sid, "executeCode", code="import time\ntime.sleep(60)"))
    time.sleep(1)
    ack = alice.wait_final(alice.send(pb.Request(session_id=sid, cancel_call=pb.CancelCall(
        request_id=call)))).result
    assert "cancelled" in texts(ack)[0], ack
    r = alice.wait_final(call).result
    assert r.is_error and "cancelled" in r.error_message, r
    alice.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def test_replies_go_only_to_the_tenants_own_topics(tenants, bob, redis_client):
    f, _, creds, _ = tenants
    # bob names a reply topic of alice's: refused, dead-lettered, nothing written there.
    req = pb.Request(request_id=uuid.uuid4().hex, start_session=pb.StartSession(),
                     reply_topic="codeq.replies.alice.mine", tenant="bob")
    bob.send_raw(sign(req, creds["bob"]).SerializeToString(), key=req.request_id)
    reasons = dead_letters(f, "tenant's reply topic prefix")
    assert any("tenant's reply topic prefix" in r for r in reasons), reasons
    assert redis_client.hget(f"{f.prefix}req:{req.request_id}", "state") is None


def test_the_clients_sign_with_their_tenants_key(tenants, tmp_path):
    f, _, creds, _ = tenants
    a = creds["alice"]
    # The Python client: its reply topic is under the tenant's prefix.
    with Client(BROKERS, request_topic=f.request_topic, credentials=a) as c:
        assert c.reply_topic.startswith("codeq.replies.alice.")
        s = c.start_session()
        r = s.execute_code("6 * 7")
        assert not r["isError"] and r["content"][-1]["text"] == "42", r
        s.stop()
    # codeq exec with a credentials file, and without one (refused, clearly).
    cred = tmp_path / "alice.cred"
    cred.write_text(f"tenant = {a.tenant}\nkey_id = {a.key_id}\nsecret = {a.secret}\n")
    cred.chmod(0o600)
    env = dict(f.env)
    env.pop("CODEQ_LOG_LEVEL", None)
    p = subprocess.run([CODEQ, "exec", "--brokers", BROKERS, "--credentials", str(cred), "-c",
                        "print(6 * 7)"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "42", p.stderr
    p = subprocess.run([CODEQ, "exec", "--brokers", BROKERS, "-c", "print(1)"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "unsigned request" in p.stderr, (p.returncode, p.stderr)
    # Tenant and key id as flags, the secret from a file of its own (never an argument).
    secret = tmp_path / "alice.secret"
    secret.write_text(a.secret + "\n")
    secret.chmod(0o600)
    flags = ["--tenant", a.tenant, "--key-id", a.key_id, "--key-secret-file", str(secret)]
    p = subprocess.run([CODEQ, "exec", "--brokers", BROKERS, *flags, "-c", "print(6 * 8)"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "48", p.stderr
    # The flag wins over a secret in the environment (a wrong one here).
    p = subprocess.run([CODEQ, "exec", "--brokers", BROKERS, *flags, "-c", "print(6 * 9)"],
                       env=dict(env, CODEQ_KEY_SECRET="0" * 64), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "54", p.stderr
    secret.chmod(0o644)
    p = subprocess.run([CODEQ, "exec", "--brokers", BROKERS, *flags, "-c", "print(1)"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "readable by others" in p.stderr, (p.returncode, p.stderr)


def fleet_cli(*args, check=True):
    """codeq on the fleet's Redis through a configuration file alone (no CODEQ_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEQ_")}
    p = subprocess.run([CODEQ, *args], capture_output=True, text=True, env=env, timeout=60)
    assert not check or p.returncode == 0, p.stderr
    return p


def start_on(driver, name):
    return driver.call(pb.Request(start_session=pb.StartSession(code_interpreter_identifier=name)))


def not_found(driver, name):
    """The NOT_FOUND of a startSession on name, with the name taken out."""
    r = start_on(driver, name).result
    assert r.is_error and r.error_code == NOT_FOUND, r
    return r.error_message.replace(name, "<name>")


def test_an_interpreter_for_some_tenants(tenants, alice, bob, tmp_path):
    """An interpreter may name the tenants whose sessions start on it (its runtime may
    carry one tenant's packages and environment): to the others it does not exist."""
    f, keys, _, _ = tenants
    conf = tmp_path / "fleet.conf"
    conf.write_text(f"redis = {f.env['CODEQ_REDIS']}\nredis_prefix = {f.prefix}\n"
                    f"keys_file = {keys}\n")
    created = fleet_cli("interpreter", "create", "--name", "alice-py", "--tenant", "alice",
                        "--memory", "256M", "--fleet", str(conf))
    assert '"tenants": [\n    "alice"\n  ]' in created.stdout, created.stdout
    fleet_cli("interpreter", "create", "--name", "shared-py", "--fleet", str(conf))
    assert [line.split() for line in
            fleet_cli("interpreter", "list", "--fleet", str(conf)).stdout.splitlines()] == \
        [["alice-py", "-", "alice"], ["shared-py", "-", "*"]]
    got = fleet_cli("interpreter", "get", "alice-py", "--fleet", str(conf)).stdout
    assert '"tenants": [\n    "alice"\n  ]' in got, got

    # alice's: hers to start sessions on.
    r = start_on(alice, "alice-py")
    assert r.WhichOneof("payload") == "session", r
    assert r.session.code_interpreter_identifier == "alice-py", r
    mine = r.session.session_id
    assert alice.code(mine, "6 * 7").structured_content.value == "42"
    # To bob it does not exist: the very answer a name nobody defined gets.
    missing = not_found(bob, "nosuch-py")
    assert "no code interpreter '<name>'" in missing, missing
    assert not_found(bob, "alice-py") == missing
    # Deleted, bob still learns nothing (alice is told it was deleted); the session
    # alice started goes on.
    fleet_cli("interpreter", "delete", "alice-py", "--fleet", str(conf))
    assert not_found(bob, "alice-py") == missing
    assert "was deleted" in not_found(alice, "alice-py")
    assert alice.code(mine, "6 * 8").structured_content.value == "48"
    alice.call(pb.Request(session_id=mine, stop_session=pb.StopSession()))

    # Without tenants: every tenant's.
    for d in (alice, bob):
        sid = d.start_session(code_interpreter_identifier="shared-py")
        assert d.code(sid, "1 + 1").structured_content.value == "2"
        d.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))

    # A bad tenant name never reaches Redis; nor do tenants for a fleet whose CONF is
    # keyless (no request there proves its tenant).
    p = fleet_cli("interpreter", "create", "--name", "bad-py", "--tenant", "Alice", "--fleet",
                  str(conf), check=False)
    assert p.returncode == 1 and "tenants[0] 'Alice': not a tenant name" in p.stderr, p.stderr
    keyless = tmp_path / "keyless.conf"
    keyless.write_text(f"redis = {f.env['CODEQ_REDIS']}\nredis_prefix = {f.prefix}\n")
    p = fleet_cli("interpreter", "create", "--name", "bad-py", "--tenant", "alice", "--fleet",
                  str(keyless), check=False)
    assert p.returncode == 1 and "is keyless" in p.stderr, p.stderr
    assert fleet_cli("interpreter", "list", "--fleet", str(conf)).stdout.split() == \
        ["shared-py", "-", "*"]


def test_keys_kept_in_redis(services, redis_client):
    """keys_file = redis: the keyring in the fleet's Redis, edited by the same commands
    (for daemons that share no file system)."""
    f = Fleet(keys_file="redis")
    env = dict(f.env)
    env.pop("CODEQ_LOG_LEVEL", None)

    def cli(*args):
        p = subprocess.run([CODEQ, *args, "--keys", "redis"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout
    cli("tenant", "create", "carol")
    carol = parse_credentials(cli("key", "create", "carol"))
    assert "carol" in cli("tenant", "list")
    assert redis_client.get(f"{f.prefix}keyring:version") == b"2"
    assert carol.secret.encode() in redis_client.get(f"{f.prefix}keyring")
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    d = Driver(BROKERS, f.request_topic, credentials=carol)
    try:
        sid = d.start_session()
        assert not d.code(sid, "1 + 1").is_error
        cli("key", "revoke", carol.key_id)
        time.sleep(1.5)
        wait_denied(d, d.send(invoke(sid, "executeCode", code="1")), "was revoked")
    finally:
        d.close()
        f.stop()

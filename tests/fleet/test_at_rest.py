"""Encryption at rest: with a master key, nothing a user gave or got sits in Redis in
plain text, and the fleet still works.

A secret token goes through every path that stores user data (a written file, a
session's env, code that prints it, a variable of a session whose worker drains, a
reply over the claim threshold, a request over it); then every key under the fleet's
prefix is read back (GET, HGETALL, SMEMBERS, ZRANGE, DUMP) and the token, in plain, hex
and base64, is found nowhere, while the session still reads its file and the moved
session has its variable. Claims are sealed by whoever writes them, under a key of
their own that travels in the Kafka message (fleet/claim.h). Real Kafka, real Redis,
real workers."""

import base64
import os
import signal
import subprocess
import sys
import time
import uuid

from conftest import BIN_DIR, BROKERS, REPO
from driver import Driver, pb, texts

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Credentials  # noqa: E402

CODEQ = os.path.join(BIN_DIR, "codeq")


def master_key(directory, name):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (os.urandom(32).hex() + "\n").encode())
    os.close(fd)
    return path


def owner(redis, fleet, sid):
    return (redis.hget(fleet.prefix + "session:" + sid, "owner") or b"").decode()


def invoke(driver, sid, tool, **arguments):
    r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool=tool, arguments=pb.Arguments(**arguments))))
    assert r.WhichOneof("payload") == "result", r
    assert not r.result.is_error, r
    return r.result


def values(redis, key):
    """Every byte string Redis holds under key, whatever its type."""
    kind = redis.type(key).decode()
    out = []
    if kind == "string":
        out.append(redis.get(key) or b"")
    elif kind == "hash":
        for field, value in redis.hgetall(key).items():
            out += [field, value]
    elif kind == "set":
        out += list(redis.smembers(key))
    elif kind == "zset":
        out += list(redis.zrange(key, 0, -1))
    elif kind == "list":
        out += list(redis.lrange(key, 0, -1))
    dump = redis.dump(key)
    if dump:
        out.append(dump)
    return out


def assert_nowhere(redis, fleet, token):
    """The token in none of the fleet's keys or values; returns the keys."""
    forms = [token.encode(), token.encode().hex().encode(),
             base64.b64encode(token.encode()).rstrip(b"="),
             base64.b64encode(b"x" + token.encode())[4:-4],
             base64.b64encode(b"xy" + token.encode())[4:-4]]
    keys = [k.decode() for k in redis.scan_iter(match=fleet.prefix + "*", count=1000)]
    assert keys
    for key in keys:
        assert token not in key
        for value in values(redis, key):
            for form in forms:
                assert form not in value, (key, form, value[:200])
    return keys


def start_fleet(new_fleet, redis, key, workers=("a", "b")):
    f = new_fleet()
    f.env["CODEQ_MASTER_KEY_FILE"] = key
    for w in workers:
        f.start_worker(w)
    f.wait_workers(redis, len(workers))
    f.start_dispatcher()
    return f


def test_no_secret_in_redis_in_plain_text(new_fleet, redis_client, tmp_path):
    token = "cqtoken" + uuid.uuid4().hex
    f = start_fleet(new_fleet, redis_client, master_key(tmp_path, "master"))
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session(env={"AT_REST_TOKEN": token})
        invoke(driver, sid, "writeFiles", content=[pb.FileContent(path="secret.txt", text=token)])
        r = invoke(driver, sid, "executeCode",
                   code="import os\nkept = os.environ['AT_REST_TOKEN']\nprint(kept)")
        assert token in "".join(texts(r)), r
        # A reply over the claim threshold (512 KiB): its result: is the reference only.
        r = invoke(driver, sid, "executeCode", code="print(kept * 20000)")
        assert "".join(texts(r)).count(token) == 20000
        for d in f.dispatchers + list(f.workers.values()):
            assert "encryption at rest: on" in d.log_text(), d.log_text()[-2000:]
        # A request over the claim threshold: its arguments wait in Redis, sealed by the
        # client, until a worker reads them. Looked at before it is sent, then sent.
        big = pb.Request(session_id=sid, invoke=pb.Invoke(tool="writeFiles", arguments=(
            pb.Arguments(content=[pb.FileContent(path="big.txt", text=token * 20000)]))))
        small = driver.claims.outgoing(big)
        claim = small.invoke.arguments_claim
        assert claim.id and len(claim.key) == 32, small
        assert redis_client.exists(f.prefix + "claim:" + claim.id)
        assert_nowhere(redis_client, f, token)
        r = driver.call(small)
        assert not r.result.is_error, r
        assert not redis_client.exists(f.prefix + "claim:" + claim.id)  # read once, deleted

        # A drain writes the session's variables to state:<sid>.
        victim = owner(redis_client, f, sid)
        worker = f.workers[victim]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=120) == 0, worker.log_text()[-3000:]
        assert "variables saved" in worker.log_text(), worker.log_text()[-3000:]

        keys = assert_nowhere(redis_client, f, token)
        for kind in ("chunks:", "state:", "session:"):
            assert f.prefix + kind + sid in keys, (kind, keys)
        assert any(k.startswith(f.prefix + "result:") for k in keys), keys
        assert any(k.startswith(f.prefix + "claim:") for k in keys), keys  # the reply's
        start = redis_client.hget(f.prefix + "session:" + sid, "start")
        assert start.startswith(b"CQE1"), start[:20]
        dek = redis_client.hgetall(f.prefix + "dek:")
        assert dek[b"current"] == b"1" and len(dek[b"1"]) == 60, dek

        # The session still works: its variable moved, its file and env are there.
        r = invoke(driver, sid, "executeCode",
                   code="import os\n(kept == os.environ['AT_REST_TOKEN'], "
                        "open('secret.txt').read() == kept)")
        assert texts(r)[-1] == "(True, True)", r
        assert owner(redis_client, f, sid) != victim
        r = invoke(driver, sid, "readFiles", paths=["secret.txt"])
        assert token in str(r), r
        assert_nowhere(redis_client, f, token)
    finally:
        driver.close()


def at_rest(env, *args):
    p = subprocess.run([CODEQ, "at-rest", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_rotating_the_keys_keeps_the_data(new_fleet, redis_client, tmp_path):
    token = "cqtoken" + uuid.uuid4().hex
    old, new = master_key(tmp_path, "old"), master_key(tmp_path, "new")
    f = start_fleet(new_fleet, redis_client, old, workers=("a",))
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        invoke(driver, sid, "writeFiles", content=[pb.FileContent(path="v1.txt", text=token)])
        # A new data key version: later values use it, older ones keep theirs.
        assert "version 2 is current" in at_rest(f.env, "rotate-data", "")
        dek = f.prefix + "dek:"
        assert redis_client.hget(dek, "current") == b"2"
        before = redis_client.hgetall(dek)

        for d in f.dispatchers + list(f.workers.values()):
            d.stop()
        out = at_rest(f.env, "rotate-master", "--old", old, "--new", new)
        assert "re-wrapped 2 data keys of 1 tenants" in out, out
        after = redis_client.hgetall(dek)
        assert after[b"current"] == b"2"
        assert after[b"1"] != before[b"1"] and after[b"2"] != before[b"2"]
        # Run again, it finds nothing left to do.
        assert "re-wrapped 0 data keys" in at_rest(f.env, "rotate-master", "--old", old,
                                                   "--new", new)

        # Daemons with the new master key read what was written under the old one.
        f.env["CODEQ_MASTER_KEY_FILE"] = new
        b = f.start_worker("b")
        deadline = time.time() + 60
        while not redis_client.exists(f.prefix + "worker:" + b):
            assert time.time() < deadline, f.workers[b].log_text()[-2000:]
            time.sleep(0.1)
        f.start_dispatcher()
        r = invoke(driver, sid, "executeCode",
                   code=f"open('v1.txt').read() == {token!r}")
        assert texts(r)[-1] == "True", r
        invoke(driver, sid, "writeFiles", content=[pb.FileContent(path="v2.txt", text=token)])
        r = invoke(driver, sid, "executeCode", code="open('v2.txt').read()")
        assert texts(r)[-1] == repr(token), r
        assert_nowhere(redis_client, f, token)
    finally:
        driver.close()



def test_a_value_moved_or_written_in_plain_text_is_refused(new_fleet, redis_client, tmp_path):
    """Whoever can write to Redis cannot swap one file's contents for another's, nor
    slip a plain-text value in: the adopting worker refuses to restore them."""
    f = start_fleet(new_fleet, redis_client, master_key(tmp_path, "master"))
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        moved, plain = driver.start_session(), driver.start_session()
        for sid in (moved, plain):
            invoke(driver, sid, "writeFiles", content=[pb.FileContent(path="a.txt", text="aaa"),
                                                       pb.FileContent(path="b.txt", text="bbb")])
        chunks = f.prefix + "chunks:" + moved
        b = redis_client.hget(chunks, "b.txt:0")
        assert b.startswith(b"CQE1")
        redis_client.hset(chunks, "a.txt:0", b)  # b's envelope under a's field
        redis_client.hset(f.prefix + "chunks:" + plain, "a.txt:0", b"bbb")  # plain text
        victims = {owner(redis_client, f, sid) for sid in (moved, plain)}
        for victim in victims:
            f.workers[victim].kill()
        if len(victims) == 2:
            f.start_worker("c")
            f.wait_workers(redis_client, 1)
        for sid in (moved, plain):
            r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
                tool="executeCode", arguments=pb.Arguments(
                    code="import os\nos.path.exists('a.txt') and open('a.txt').read()"))))
            # a.txt never holds what was slipped in: the tampered value is not restored.
            # (Checked on the value alone: a hex request id can contain "bbb".)
            assert r.result.structured_content.value == "False", r
        log = "".join(d.log_text() for w, d in f.workers.items() if w not in victims)
        assert "does not authenticate" in log, log[-3000:]
        assert "without its envelope" in log, log[-3000:]
    finally:
        driver.close()


def test_each_tenant_has_its_own_data_keys(new_fleet, redis_client, tmp_path):
    """A keyed fleet (tenants made by `codeq tenant` and `codeq key`): each tenant's
    values are sealed under its own data keys, and a rotation of one tenant's data key
    leaves the other's alone."""
    keys = str(tmp_path / "keys")
    creds = {}
    for name in ("alice", "bob"):
        subprocess.run([CODEQ, "tenant", "create", name, "--keys", keys], check=True,
                       capture_output=True, timeout=60)
        out = subprocess.run([CODEQ, "key", "create", name, "--keys", keys], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        values = dict(line.split(" = ", 1) for line in out.strip().splitlines())
        creds[name] = Credentials(values["tenant"], values["key_id"], values["secret"])
    f = new_fleet(keys_file=keys)
    f.env["CODEQ_MASTER_KEY_FILE"] = master_key(tmp_path, "master")
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    token = "cqtoken" + uuid.uuid4().hex
    sids = {}
    for name in ("alice", "bob"):
        driver = Driver(BROKERS, f.request_topic, credentials=creds[name])
        try:
            sids[name] = driver.start_session(env={"AT_REST_TOKEN": token})
            invoke(driver, sids[name], "writeFiles",
                   content=[pb.FileContent(path="t.txt", text=token)])
            r = invoke(driver, sids[name], "executeCode", code="open('t.txt').read()")
            assert texts(r)[-1] == repr(token), r
        finally:
            driver.close()
        chunk = redis_client.hget(f.prefix + "chunks:" + sids[name], "t.txt:0")
        # "CQE1", the tenant's name after its length byte, then version 1.
        assert chunk.startswith(b"CQE1" + bytes([len(name)]) + name.encode() + b"\0\0\0\1")
    assert redis_client.hget(f.prefix + "dek:alice", "current") == b"1"
    assert redis_client.hget(f.prefix + "dek:bob", "current") == b"1"
    assert redis_client.hget(f.prefix + "dek:alice", "1") != \
        redis_client.hget(f.prefix + "dek:bob", "1")
    assert "version 2 is current" in at_rest(f.env, "rotate-data", "alice")
    assert redis_client.hget(f.prefix + "dek:bob", "current") == b"1"
    assert_nowhere(redis_client, f, token)


def test_claims_in_plain_text_or_altered_are_refused(new_fleet, redis_client, tmp_path):
    """An encrypted fleet takes no claim stored in plain text (a client older than sealed
    claims): it says so and deletes the bytes. A sealed claim whose bytes were altered in
    Redis does not open. The session goes on, with neither file in it."""
    f = start_fleet(new_fleet, redis_client, master_key(tmp_path, "master"), workers=("a",))
    driver = Driver(BROKERS, f.request_topic, f)
    store = f.claim_store()
    try:
        sid = driver.start_session()
        args = pb.Arguments(content=[pb.FileContent(path="plain.bin", blob=b"p" * 1000)])
        packed = args.SerializeToString()
        cid = store.put(packed, 60)
        r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="writeFiles", arguments_claim=pb.Claim(id=cid, size=len(packed),
                                                        largest_file=1000))))
        assert r.result.is_error and r.result.error_code == pb.ERROR_CODE_INVALID_ARGUMENT, r
        assert "in plain text" in r.result.error_message, r.result.error_message
        assert not redis_client.exists(f.prefix + "claim:" + cid)

        args = pb.Arguments(content=[pb.FileContent(path="altered.bin", blob=b"a" * 1000)])
        claim = store.put_sealed(args.SerializeToString(), 60)
        key = f.prefix + "claim:" + claim.id
        stored = bytearray(redis_client.get(key))
        stored[40] ^= 1
        redis_client.set(key, bytes(stored))
        claim.largest_file = 1000
        r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="writeFiles", arguments_claim=claim)))
        assert r.result.is_error, r
        assert "do not open with the claim's key" in r.result.error_message, r

        r = invoke(driver, sid, "executeCommand", command="ls")
        assert r.structured_content.stdout.split() == [], r
    finally:
        store.close()
        driver.close()

"""Large payloads by reference (the claim check, fleet/claim.h): requests and replies
too large for one Kafka message travel through Redis, so the fleet runs on brokers with
Kafka's stock 1 MB message limit. Real Kafka, real Redis, real sandboxes."""

import hashlib
import os
import subprocess
import sys
import uuid

import pytest

from conftest import BIN_DIR, BROKERS, REPO
from driver import Driver, pb

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client, RequestRefused  # noqa: E402
from codeq_client.claims import ClaimStore  # noqa: E402

STOCK_MESSAGE_MAX = 1048588  # Kafka's default message.max.bytes
AFTER_END_S = 600  # fleet/store.c, RESULT_AFTER_END_S: stored replies outlive their session


def expires_soon(redis_client, key):
    """The key exists and expires within AFTER_END_S (as its session ended)."""
    ttl = redis_client.ttl(key)
    return 0 < ttl <= AFTER_END_S


def client_of(fleet, **kw):
    return Client(BROKERS, request_topic=fleet.request_topic, default_timeout=300,
                  redis=fleet.env["CODEQ_REDIS"], redis_prefix=fleet.prefix, **kw)


def topic_limit(topic):
    """The max.message.bytes the broker applies to topic."""
    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({"bootstrap.servers": BROKERS})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(30)
    return int(configs["max.message.bytes"].value)


def claim_keys(redis_client, fleet):
    return set(redis_client.scan_iter(match=fleet.prefix + "claim:*", count=1000))


def file_block(result, path):
    for b in result["content"]:
        if b.get("type") == "resource" and b["resource"]["uri"].endswith("/" + path):
            return b["resource"]
    raise AssertionError(f"no {path} in {result}")


def test_150_mb_of_files_through_topics_of_1_mb(fleet, redis_client):
    """The issue's case: writeFiles of 150 MB (two files: 100 MB, the limit of one, and
    50 MB) through topics that take Kafka's stock 1 MB, then each read back."""
    import base64
    big, half = os.urandom(100 << 20), os.urandom(50 << 20)
    with client_of(fleet) as c:
        # No topic the payloads pass through takes more than a stock broker's 1 MB.
        worker_topic = "codeq.worker." + next(iter(fleet.workers))
        for topic in (fleet.request_topic, worker_topic, c.reply_topic):
            assert topic_limit(topic) <= STOCK_MESSAGE_MAX, topic
        s = c.start_session()
        wrote = s.write_files({"big.bin": big, "half.bin": half})
        assert not wrote["isError"], wrote
        digest = s.execute_command("sha256sum big.bin half.bin")
        assert hashlib.sha256(big).hexdigest() in digest["structuredContent"]["stdout"]
        assert hashlib.sha256(half).hexdigest() in digest["structuredContent"]["stdout"]
        # Read back: a 50 MB reply, through Redis too.
        read = s.read_files(["half.bin"])
        assert not read["isError"], read
        res = file_block(read, "half.bin")
        data = base64.b64decode(res["blob"]) if "blob" in res else res["text"].encode()
        assert data == half
        # The request's claims were deleted once read; the reply's stay until the
        # session ends (its client may ask again within claim_ttl).
        sid = s.id
        listed = {b"%sclaim:%s" % (fleet.prefix.encode(), m)
                  for m in redis_client.smembers(f"{fleet.prefix}claims:{sid}")}
        assert len(listed) == 1
        assert claim_keys(redis_client, fleet) & listed == listed
        s.stop()
        # The reply's claim goes with its session (after the grace copies get).
        assert all(expires_soon(redis_client, k) for k in listed)
        assert not redis_client.exists(f"{fleet.prefix}claims:{sid}")


def test_stored_replies_stay_small_and_go_with_their_session(fleet, redis_client):
    with client_of(fleet) as c:
        s = c.start_session()
        s.write_files({"mb.txt": "x" * (3 << 20)})
        rid = uuid.uuid4().hex
        req = pb.Request(request_id=rid, session_id=s.id, invoke=pb.Invoke(
            tool="readFiles", arguments=pb.Arguments(paths=["mb.txt"])))
        reply = c.request(req)
        assert reply.WhichOneof("payload") == "result" and not reply.result.is_error
        # What Redis keeps for a retry is the reference, not the 3 MB.
        stored = redis_client.get(f"{fleet.prefix}result:{rid}")
        assert stored is not None and len(stored) < 4096
        ref = pb.Response.FromString(stored)
        assert ref.WhichOneof("payload") == "claim" and ref.claim.size > 3 << 20
        # A retry gets the same reply (read from Redis again), without a second run.
        again = c.request(pb.Request(request_id=rid, session_id=s.id,
                                     invoke=req.invoke))
        assert again.SerializeToString() == reply.SerializeToString()
        assert redis_client.ttl(f"{fleet.prefix}result:{rid}") > AFTER_END_S
        s.stop()
        # They go with the session: the stored reply, its record and its claim expire
        # within AFTER_END_S, and meanwhile a copy of the request still gets its reply
        # (a dispatcher's restart redelivers requests; clients retry).
        for key in (f"result:{rid}", f"req:{rid}", f"claim:{ref.claim.id}"):
            assert expires_soon(redis_client, fleet.prefix + key), key
        late = c.request(pb.Request(request_id=rid, session_id=s.id, invoke=req.invoke))
        assert late.SerializeToString() == reply.SerializeToString()
        # Once expired (made so here), the id is a new request of a session that is gone.
        redis_client.delete(*(fleet.prefix + k for k in (f"result:{rid}", f"req:{rid}")))
        gone = c.request(pb.Request(request_id=rid, session_id=s.id, invoke=req.invoke))
        assert gone.result.is_error and gone.result.error_code == pb.ERROR_CODE_NOT_FOUND, gone


def test_clients_refuse_what_the_fleet_would(fleet):
    with client_of(fleet) as c:
        s = c.start_session()
        with pytest.raises(RequestRefused) as e:
            s.write_files({"big.bin": b"\0" * ((100 << 20) + 1)})
        assert e.value.code == "INVALID_ARGUMENT"
        assert "100 MB limit" in str(e.value)
    # Without Redis, a large request is refused with a clear error, not sent.
    with Client(BROKERS, request_topic=fleet.request_topic, redis="127.0.0.1:1",
                redis_prefix=fleet.prefix) as c:
        s = c.session(s.id)
        with pytest.raises(RequestRefused) as e:
            s.write_files({"m.bin": b"\0" * (1 << 20)})
        assert e.value.code == "INTERNAL" and "Redis" in str(e.value)


def raw_claim(driver, sid, claim, tool="writeFiles"):
    return driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool=tool, arguments_claim=claim)))


def test_hostile_claims_get_clear_errors(fleet, redis_client):
    """References come from anyone on the brokers: each kind of lie gets its error
    reply, and the fleet goes on serving."""
    driver = Driver(BROKERS, fleet.request_topic, fleet=fleet)
    store = ClaimStore(fleet.env["CODEQ_REDIS"], fleet.prefix)
    try:
        sid = driver.start_session()

        def refused(r, code, text):
            assert r.result.is_error and r.result.error_code == code, r
            assert text in r.result.error_message, r.result.error_message

        # Checked by the dispatcher, before anything is forwarded.
        for bad_id in ("../session", "A" * 32, "0" * 31, "0" * 32 + "*", ""):
            r = raw_claim(driver, sid, pb.Claim(id=bad_id, size=10))
            refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "32 lowercase hexadecimal")
            assert not redis_client.hget(fleet.prefix + "req:" + r.request_id, "worker")
        r = raw_claim(driver, sid, pb.Claim(id="0" * 32, size=(200 << 20) + 1))
        refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "200 MiB")
        r = raw_claim(driver, sid, pb.Claim(id="0" * 32, size=10, largest_file=(100 << 20) + 1))
        refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "100 MB limit")
        assert not redis_client.hget(fleet.prefix + "req:" + r.request_id, "worker")
        both = pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="listFiles", arguments=pb.Arguments(directory_path=""),
            arguments_claim=pb.Claim(id="0" * 32, size=1)))
        refused(driver.call(both), pb.ERROR_CODE_INVALID_ARGUMENT, "both arguments")

        # Checked by the worker, against what Redis holds.
        r = raw_claim(driver, sid, pb.Claim(id=uuid.uuid4().hex, size=10))
        refused(r, pb.ERROR_CODE_NOT_FOUND, "gone")
        args = pb.Arguments(content=[pb.FileContent(path="f.bin", blob=b"y" * 1000)])
        packed = args.SerializeToString()
        cid = store.put(packed, 60)
        r = raw_claim(driver, sid, pb.Claim(id=cid, size=len(packed) + 1, largest_file=1000))
        refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "bytes")
        cid = store.put(packed, 60)
        r = raw_claim(driver, sid, pb.Claim(id=cid, size=len(packed), largest_file=10))
        refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "more than the claim declared")
        assert not redis_client.exists(fleet.prefix + "claim:" + cid)  # read once, deleted
        garbage = b"\xff" * 64
        cid = store.put(garbage, 60)
        r = raw_claim(driver, sid, pb.Claim(id=cid, size=len(garbage), largest_file=10))
        refused(r, pb.ERROR_CODE_INVALID_ARGUMENT, "do not decode")

        # An honest claim still works, and nothing above reached the workspace.
        cid = store.put(packed, 60)
        r = raw_claim(driver, sid, pb.Claim(id=cid, size=len(packed), largest_file=1000))
        assert not r.result.is_error, r
        listing = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCommand", arguments=pb.Arguments(command="ls; wc -c f.bin"))))
        assert listing.result.structured_content.stdout.split() == ["f.bin", "1000", "f.bin"]
    finally:
        driver.close()
        store.close()


def test_codeq_exec_sends_large_code_through_redis(fleet, tmp_path):
    """The C client (codeq exec --brokers): code of 700 KB, above the threshold."""
    from test_cli_fleet import run_exec
    src = tmp_path / "big.py"
    src.write_text("x = '" + "a" * 700_000 + "'\nlen(x)\n")
    p = run_exec(fleet, "--brokers", fleet.env["CODEQ_BROKERS"], str(src), timeout=180)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().strip() == "700000"


def test_a_client_needs_only_the_claim_keys(fleet, redis_client, tmp_path):
    """docs/fleet.md's Redis user for clients: only claim keys, only the commands a
    claim needs. A large request and a large reply go through with it, from the Python
    client and from the C client (`codeq exec --brokers`); any other key is out of its
    reach."""
    import redis
    user, password = "codeq-client-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    redis_client.acl_setuser(user, enabled=True, passwords=["+" + password],
                             keys=[fleet.prefix + "claim:*"],
                             commands=["+set", "+setrange", "+strlen", "+getrange"])
    try:
        host, port = fleet.env["CODEQ_REDIS"].rsplit(":", 1)
        url = f"redis://{user}:{password}@{host}:{port}"
        with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=120,
                    redis=url, redis_prefix=fleet.prefix) as c:
            s = c.start_session()
            data = os.urandom(2 << 20)
            assert not s.write_files({"two.bin": data})["isError"]
            res = file_block(s.read_files(["two.bin"]), "two.bin")
            import base64
            assert base64.b64decode(res["blob"]) == data
            s.stop()
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(600 << 10))
        env = dict(fleet.env, CODEQ_REDIS_USER=user, CODEQ_REDIS_PASSWORD=password)
        env.pop("CODEQ_LOG_LEVEL")
        p = subprocess.run([os.path.join(BIN_DIR, "codeq"), "exec", "--file", str(src), "--out",
                            str(tmp_path / "out"), "-c",
                            "open('out.bin', 'wb').write(open('in.bin', 'rb').read()[::-1])"],
                           env=env, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "out" / "out.bin").read_bytes() == src.read_bytes()[::-1]
        limited = redis.Redis(host=host, port=int(port), username=user, password=password)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.get(fleet.prefix + "session:x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.keys("*")
    finally:
        redis_client.acl_deluser(user)

"""The audit log (docs/security.md, "Audit log"): a fleet with tenants and an audit key
writes a record for every request a dispatcher sees (admitted or refused) and for every
call a worker runs; `codeq audit verify` finds the chains whole, and finds where a
tampered copy breaks. Real Kafka, real Redis, real sandboxes."""

import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer

from conftest import BROKERS, Fleet
from driver import Driver, pb
from test_tenants import CODEQ, codeq, parse_credentials, wait_denied

from codeq_client import Credentials


@pytest.fixture(scope="module")
def audited(services, redis_client):
    d = tempfile.mkdtemp(prefix="codeq-audit-")
    keys = os.path.join(d, "keys")
    codeq("tenant", "create", "alice", "--keys", keys)
    alice = parse_credentials(codeq("key", "create", "alice", "--keys", keys).stdout)
    audit_key = os.path.join(d, "audit.key")
    with open(os.open(audit_key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    f = Fleet(keys_file=keys)
    f.env["CODEQ_AUDIT_KEY_FILE"] = audit_key
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    yield f, alice, audit_key, d
    f.stop()


def audit_lines(fleet, until, timeout=30):
    """The audit topic's lines, read until until(records) holds."""
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": "audit-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([fleet.audit_topic])
    lines, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline and not until([json.loads(x) for x in lines]):
            m = c.poll(0.5)
            if m is not None and not m.error():
                lines.append(m.value().decode())
    finally:
        c.close()
    return lines


def test_every_request_and_call_is_recorded_and_the_chains_verify(audited, tmp_path):
    f, alice, audit_key, _ = audited
    d = Driver(BROKERS, f.request_topic, credentials=alice)
    try:
        sid = d.start_session()
        code = "print(6 * 7)"
        ran = d.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code=code))))
        assert not ran.result.is_error, ran
        wrote = d.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="writeFiles", arguments=pb.Arguments(content=[
                pb.FileContent(path="data.csv", text="a,b\n1,2\n")]))))
        assert not wrote.result.is_error, wrote
        forged = Credentials(alice.tenant, alice.key_id, "0" * 64)
        refused = d.send(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="1"))), credentials=forged)
        wait_denied(d, refused, "bad signature")
    finally:
        d.close()

    def complete(records):
        calls = [r for r in records if r.get("request_id") == ran.request_id]
        return len(calls) == 2 and any(r.get("request_id") == refused for r in records) and \
            any(r.get("request_id") == wrote.request_id and r["event"] == "call" for r in records)
    lines = audit_lines(f, complete)
    records = [json.loads(x) for x in lines]
    assert complete(records), records
    admitted = next(r for r in records if r.get("request_id") == ran.request_id and
                    r["event"] == "request")
    assert admitted["outcome"] == "admitted" and admitted["tenant"] == "alice"
    assert admitted["key_id"] == alice.key_id and admitted["producer"].startswith("dispatcher-")
    call = next(r for r in records if r.get("request_id") == ran.request_id and
                r["event"] == "call")
    assert call["outcome"] == "ok" and call["exit_code"] == 0 and call["operation"] == "executeCode"
    assert call["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
    assert call["worker"] in f.workers and call["duration_ms"] > 0
    assert call["key_id"] == alice.key_id and call["tenant"] == "alice"
    assert call["peak_memory_bytes"] > 0
    files = next(r for r in records if r.get("request_id") == wrote.request_id and
                 r["event"] == "call")["files"]
    assert files == [{"path": "data.csv", "size": 8,
                      "sha256": hashlib.sha256(b"a,b\n1,2\n").hexdigest()}]
    denied = next(r for r in records if r.get("request_id") == refused)
    assert denied["outcome"] == "refused" and denied["error_code"] == "ACCESS_DENIED"
    assert "bad signature" in denied["reason"]
    # Digests, not contents (audit_content is off).
    assert not any("print(6" in x or "a,b" in x for x in lines)

    # The whole topic verifies, signatures included.
    p = subprocess.run([CODEQ, "audit", "verify", "--topic", f.audit_topic, "--brokers", BROKERS,
                        "--key-file", audit_key], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "every signature valid" in p.stdout, p.stderr
    # A copy with the call's exit code changed fails at that record; without the key, at
    # the next record of its producer; with the record deleted, at the gap.
    at = next(i for i, r in enumerate(records) if r.get("request_id") == ran.request_id and
              r["event"] == "call")
    edited = list(lines)
    edited[at] = edited[at].replace('"exit_code":0', '"exit_code":1')
    copy = tmp_path / "edited.jsonl"
    copy.write_text("\n".join(edited) + "\n")
    p = subprocess.run([CODEQ, "audit", "verify", str(copy), "--key-file", audit_key],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and f"line {at + 1}:" in p.stderr and "bad signature" in p.stderr, \
        p.stderr
    deleted = lines[:at] + lines[at + 1:]
    copy.write_text("\n".join(deleted) + "\n")
    p = subprocess.run([CODEQ, "audit", "verify", str(copy), "--key-file", audit_key],
                       capture_output=True, text=True, timeout=60)
    producer = json.loads(lines[at])["producer"]
    # The worker's next record (the writeFiles call) is where the gap shows.
    later = [i for i, x in enumerate(deleted) if json.loads(x)["producer"] == producer and i >= at]
    assert later, "the worker wrote no record after the call"
    assert p.returncode == 1 and f"line {later[0] + 1}:" in p.stderr, p.stderr
    assert "missing" in p.stderr, p.stderr


def test_the_embedded_mode_writes_the_same_records(tmp_path):
    log = tmp_path / "audit.jsonl"
    key = tmp_path / "audit.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    env = dict(os.environ, CODEQ_AUDIT_KEY_FILE=str(key))
    for code in ("print(1)", "raise SystemExit(3)"):
        subprocess.run([CODEQ, "exec", "--audit-log", str(log), "-c", code], env=env,
                       capture_output=True, timeout=120)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["ok", "error"], records
    assert records[0]["code_sha256"] == hashlib.sha256(b"print(1)").hexdigest()
    p = subprocess.run([CODEQ, "audit", "verify", str(log), "--key-file", str(key)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "2 records checked" in p.stdout, p.stderr

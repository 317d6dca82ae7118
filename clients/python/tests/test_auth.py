"""codeq_client.auth: credentials and request signing, checked against the scheme of
fleet/auth.h (the fleet's end-to-end tests verify these signatures with the C code)."""

import hashlib
import hmac
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from codeq_client import Credentials, CredentialsError  # noqa: E402
from codeq_client import codeq_pb2 as pb  # noqa: E402
from codeq_client.auth import sign  # noqa: E402

KEY = Credentials("acme", "cqk_0123456789abcdef0123", "ab" * 32)


def request():
    return pb.Request(request_id="r1", session_id="s1", tenant="acme",
                      reply_topic="codeq.replies.acme.x",
                      invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(code="1")))


def test_the_signature_is_the_hmac_of_the_canonical_string():
    req = request()
    env = sign(req, KEY, now_ms=1800000000000)
    assert env.WhichOneof("operation") is None and not env.request_id
    assert env.signed.request == req.SerializeToString()
    assert env.signed.key_id == KEY.key_id and env.signed.timestamp_unix_ms == 1800000000000
    canonical = "\n".join(["CODEQ1-HMAC-SHA256", "1800000000000", KEY.key_id, "acme", "r1",
                           "executeCode", hashlib.sha256(env.signed.request).hexdigest()])
    want = hmac.new(KEY.secret.encode(), canonical.encode(), hashlib.sha256).digest()
    assert env.signed.signature == want
    # Another time, another signature; the same bytes inside.
    later = sign(req, KEY, now_ms=1800000000001)
    assert later.signed.signature != env.signed.signature
    assert later.signed.request == env.signed.request


def test_a_key_signs_only_for_its_own_tenant():
    req = request()
    req.tenant = "globex"
    with pytest.raises(CredentialsError):
        sign(req, KEY)


def test_credentials_are_checked_and_never_shown():
    for bad in (("Acme", KEY.key_id, KEY.secret), ("acme", "cqk_1", KEY.secret),
                ("acme", KEY.key_id, "ab" * 31), ("", KEY.key_id, KEY.secret)):
        with pytest.raises(CredentialsError):
            Credentials(*bad)
    assert KEY.secret not in repr(KEY) and KEY.secret not in str(KEY)


def test_a_credentials_file_must_be_private(tmp_path, monkeypatch):
    path = tmp_path / "cred"
    path.write_text(f"# acme's\ntenant = acme\nkey_id = {KEY.key_id}\nsecret = {KEY.secret}\n")
    path.chmod(0o644)
    with pytest.raises(CredentialsError, match="readable by others"):
        Credentials.from_file(str(path))
    path.chmod(0o600)
    assert Credentials.from_file(str(path)) == KEY
    for name in ("CODEQ_TENANT", "CODEQ_KEY_ID", "CODEQ_KEY_SECRET", "CODEQ_KEY_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODEQ_CREDENTIALS", str(path))
    assert Credentials.from_environment() == KEY
    monkeypatch.delenv("CODEQ_CREDENTIALS")
    assert Credentials.from_environment() is None
    monkeypatch.setenv("CODEQ_TENANT", "acme")  # incomplete: an error, not unsigned
    with pytest.raises(CredentialsError):
        Credentials.from_environment()
    assert os.stat(path).st_mode & 0o077 == 0


def test_the_secret_alone_in_a_private_file(tmp_path, monkeypatch):
    secret = tmp_path / "secret"
    secret.write_text(KEY.secret + "\n")
    secret.chmod(0o600)
    monkeypatch.delenv("CODEQ_CREDENTIALS", raising=False)
    monkeypatch.delenv("CODEQ_KEY_SECRET", raising=False)
    monkeypatch.setenv("CODEQ_TENANT", KEY.tenant)
    monkeypatch.setenv("CODEQ_KEY_ID", KEY.key_id)
    monkeypatch.setenv("CODEQ_KEY_SECRET_FILE", str(secret))
    assert Credentials.from_environment() == KEY
    secret.chmod(0o640)
    with pytest.raises(CredentialsError, match="readable by others"):
        Credentials.from_environment()
    secret.chmod(0o600)
    monkeypatch.setenv("CODEQ_KEY_SECRET", KEY.secret)
    with pytest.raises(CredentialsError, match="give one"):
        Credentials.from_environment()

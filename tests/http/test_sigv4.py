"""tests/http/test_sigv4.py - codeq serve's SigV4 verifier (http/sigv4.c) against
botocore's signer.

Every request here is signed by botocore's SigV4Auth, the signer of boto3 and of the
AgentCore SDK, and fed as raw HTTP to tests/tools/cq_sigv4_check.c. The verifier must
accept exactly those, and refuse every altered copy: the method, the path, the query,
a signed header, the body, the date, the signature, the key. No sandbox, no network.
"""
import re

import pytest
from botocore.auth import SigV4Auth
from botocore.utils import percent_encode_sequence, percent_encode

from aws import T0, sign, verify

HOST = "https://codeq.example:8443"
CI = "/code-interpreters/aws.codeinterpreter.v1"
JSON = [("Content-Type", "application/json")]


def q(pairs):
    return percent_encode_sequence(pairs)


# The AgentCore data plane's routes as botocore's rest-json serializer writes them, and
# paths and queries with characters that need encoding.
REQUESTS = {
    "start": ("PUT", HOST + CI + "/sessions/start", b'{"name":"s1","sessionTimeoutSeconds":900,"clientToken":"c-1"}', JSON),
    "invoke": ("POST", HOST + CI + "/tools/invoke",
               b'{"name":"executeCode","arguments":{"code":"print(1+1)","language":"python"}}',
               JSON + [("x-amzn-code-interpreter-session-id", "01JZ8XK2Q3R4S5T6V7W8X9Y0Z1")]),
    "get": ("GET", HOST + CI + "/sessions/get?" + q({"sessionId": "01JZ8XK2Q3R4S5T6V7W8X9Y0Z1"}), b"", []),
    "stop": ("PUT", HOST + CI + "/sessions/stop?" + q({"sessionId": "01JZ8XK2Q3R4S5T6V7W8X9Y0Z1"}), b"", []),
    "list": ("POST", HOST + CI + "/sessions/list", b'{"maxResults":10,"status":"READY"}', JSON),
    "codeq-default": ("POST", HOST + "/code-interpreters/codeq.default/tools/invoke", b'{"name":"listFiles","arguments":{"directoryPath":"/"}}',
                      JSON + [("x-amzn-code-interpreter-session-id", "abc123")]),
    "query-encoding": ("GET", HOST + CI + "/sessions/get?" + q([
        ("sessionId", "a b+c/d=e&f"), ("x", "ümlaut ☃"), ("a", "~*!'()"), ("empty", ""), ("a", "0"), ("Z", "z")]), b"", []),
    "query-repeated": ("GET", HOST + CI + "/sessions/get?" + q([("k", "2"), ("k", "10"), ("k", "1")]), b"", []),
    "path-encoding": ("POST", HOST + "/code-interpreters/" + percent_encode("my interp/ü%x", safe="") + "/tools/invoke",
                      b"{}", JSON),
    "path-dots": ("GET", HOST + "/code-interpreters/a/../b/./sessions//get?sessionId=x", b"", []),
    "root": ("GET", HOST + "/", b"", []),
    "default-port": ("GET", "https://codeq.example/ping", b"", []),
    "header-spaces": ("POST", HOST + CI + "/tools/invoke", b"{}",
                      JSON + [("x-amzn-code-interpreter-session-id", "  s  1 \t 2  "), ("X-Custom", "a   b")]),
    "header-repeated": ("POST", HOST + CI + "/tools/invoke", b"{}",
                        JSON + [("x-codeq-thing", "one"), ("x-codeq-thing", " two  words ")]),
    "binary-body": ("POST", HOST + CI + "/tools/invoke", bytes(range(256)) * 8, [("Content-Type", "application/octet-stream")]),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_botocore_signed_requests_are_accepted(name):
    method, url, body, headers = REQUESTS[name]
    rc, out = verify(sign(method, url, body, headers))
    assert rc == 0, out
    assert out == "ok key=AKIDEXAMPLE tenant=tenant-a payload_signed=1 session_token=0"


def test_many_regions_keys_and_tenants():
    keys = ("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY:tenant-a",
            "AKIAOTHER0000000:s3cr3t+/=:tenant-b")
    for region in ("us-east-1", "eu-west-3", "local"):
        rc, out = verify(sign("GET", HOST + "/x", region=region), keys=keys)
        assert (rc, out.split()[2]) == (0, "tenant=tenant-a"), out
        rc, out = verify(sign("GET", HOST + "/x", key="AKIAOTHER0000000", secret="s3cr3t+/=", region=region), keys=keys)
        assert (rc, out.split()[2]) == (0, "tenant=tenant-b"), out


def split(raw):
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    return lines[0], lines[1:], body


def join(request_line, headers, body):
    return ("\r\n".join([request_line] + headers) + "\r\n\r\n").encode() + body


def with_header(raw, name, fn):
    line, headers, body = split(raw)
    out = []
    for h in headers:
        n, _, v = h.partition(": ")
        out.append(f"{n}: {fn(v)}" if n.lower() == name.lower() else h)
    assert out != headers, f"no header {name}"
    return join(line, out, body)


def alterations(raw):
    """(what, altered request) for each part the signature must cover."""
    line, headers, body = split(raw)
    method, target, version = line.split(" ")
    path, _, query = target.partition("?")
    yield "method", join(f"{'PATCH' if method != 'PATCH' else 'PUT'} {target} {version}", headers, body)
    yield "path", join(f"{method} {path}x{'?' + query if query else ''} {version}", headers, body)
    if path.upper() != path:
        yield "path case", join(f"{method} {path.upper()}{'?' + query if query else ''} {version}", headers, body)
    if query:
        yield "query value", join(f"{method} {path}?{query}0 {version}", headers, body)
        yield "query dropped", join(f"{method} {path} {version}", headers, body)
    yield "query added", join(f"{method} {path}?{query + '&' if query else ''}extra=1 {version}", headers, body)
    yield "date", with_header(raw, "X-Amz-Date", lambda v: v[:-3] + "57Z" if v[-3:] != "57Z" else v[:-3] + "58Z")
    yield "host", with_header(raw, "Host", lambda v: "evil.example")
    yield "signature", with_header(raw, "Authorization", lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"))
    yield "body", join(line, [h if not h.lower().startswith("content-length") else f"Content-Length: {len(body) + 1}" for h in headers], body + b"!")
    if body:
        yield "body byte", join(line, headers, bytes([body[0] ^ 1]) + body[1:])
    for h in headers:
        n, _, v = h.partition(": ")
        if n.lower() in ("x-amzn-code-interpreter-session-id", "content-type", "x-codeq-thing"):
            yield f"header {n}", with_header(raw, n, lambda v: v + "x")


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_every_alteration_is_refused(name):
    method, url, body, headers = REQUESTS[name]
    raw = sign(method, url, body, headers)
    assert verify(raw)[0] == 0
    n = 0
    for what, altered in alterations(raw):
        rc, out = verify(altered)
        assert rc == 1, f"{what}: {out}\n{altered!r}"
        assert out.startswith("denied: "), out
        n += 1
    assert n >= 7


def test_another_keys_signature_is_refused():
    keys = ("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY:tenant-a", "AKIAOTHER0000000:other:tenant-b")
    raw = sign("GET", HOST + "/x", key="AKIAOTHER0000000", secret="wrong")
    rc, out = verify(raw, keys=keys)
    assert rc == 1 and "signature mismatch" in out, out
    # a valid signature by key A presented under key B's id
    raw = sign("GET", HOST + "/x").replace(b"Credential=AKIDEXAMPLE/", b"Credential=AKIAOTHER0000000/")
    rc, out = verify(raw, keys=keys)
    assert rc == 1 and "signature mismatch" in out, out
    assert "wJalr" not in out and "other" not in out.replace("another", "")


def test_unknown_key_is_refused():
    rc, out = verify(sign("GET", HOST + "/x", key="AKIANOBODY000000"))
    assert rc == 1 and out == "denied: unknown access key 'AKIANOBODY000000'", out


def test_missing_authorization_is_refused():
    raw = sign("GET", HOST + "/x")
    line, headers, body = split(raw)
    rc, out = verify(join(line, [h for h in headers if not h.startswith("Authorization")], body))
    assert rc == 1 and "missing Authorization header" in out, out


class NoHostSigV4(SigV4Auth):
    """A signer that leaves Host out of the signed headers (as a broken or hostile
    client might): the signature is valid, the Host unprotected."""

    def headers_to_sign(self, request):
        h = super().headers_to_sign(request)
        del h["host"]
        return h


def test_unsigned_host_is_refused():
    raw = sign("GET", HOST + "/x", headers=[("X-Custom", "1")], auth_class=NoHostSigV4)
    assert b"SignedHeaders=x-amz-date;x-custom," in raw
    rc, out = verify(raw)
    assert rc == 1 and "host header must be signed" in out, out


@pytest.mark.parametrize("offset,ok", [(0, True), (299, True), (-299, True), (300, True), (-300, True),
                                       (301, False), (-301, False), (86400, False)])
def test_clock_skew_bound(offset, ok):
    rc, out = verify(sign("GET", HOST + "/x"), now=T0 + offset)
    assert (rc == 0) == ok, out
    if not ok:
        assert "expired or not yet valid" in out


def test_skew_is_configurable():
    raw = sign("GET", HOST + "/x")
    assert verify(raw, now=T0 + 301, extra=["--skew", "900"])[0] == 0
    assert verify(raw, now=T0 + 61, extra=["--skew", "60"])[0] == 1


def test_service_and_region_scope():
    rc, out = verify(sign("GET", HOST + "/x", service="bedrock-agentcore-control"))
    assert rc == 1 and "service 'bedrock-agentcore-control'" in out, out
    raw = sign("GET", HOST + "/x", region="eu-west-3")
    assert verify(raw, extra=["--region", "eu-west-3"])[0] == 0
    rc, out = verify(raw, extra=["--region", "us-east-1"])
    assert rc == 1 and "region 'eu-west-3'" in out, out


def test_session_token():
    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+tok/en=="
    keys = (f"ASIATEMP00000000:tempsecret:tenant-s:{token}",)
    raw = sign("POST", HOST + CI + "/tools/invoke", b"{}", JSON, key="ASIATEMP00000000", secret="tempsecret", token=token)
    assert b"x-amz-security-token" in raw
    rc, out = verify(raw, keys=keys)
    assert rc == 0 and out.endswith("session_token=1"), out
    # another token, or none, for that key: refused by the lookup
    rc, out = verify(with_header(raw, "X-Amz-Security-Token", lambda v: v + "x"), keys=keys)
    assert rc == 1 and "unknown access key" in out, out
    rc, out = verify(sign("GET", HOST + "/x", key="ASIATEMP00000000", secret="tempsecret"), keys=keys)
    assert rc == 1 and "unknown access key" in out, out
    # a token the signature does not cover
    rc, out = verify(sign("GET", HOST + "/x").replace(b"\r\n\r\n", f"\r\nX-Amz-Security-Token: {token}\r\n\r\n".encode()),
                     keys=keys)
    assert rc == 1 and "x-amz-security-token must be sent once and signed" in out, out


def test_unsigned_payload():
    raw = sign("POST", HOST + CI + "/tools/invoke", b'{"name":"x"}', JSON, unsigned_payload=True)
    assert b"X-Amz-Content-SHA256: UNSIGNED-PAYLOAD" in raw
    rc, out = verify(raw)
    assert rc == 0 and "payload_signed=0" in out, out
    # the body is not covered: that is what UNSIGNED-PAYLOAD means (the caller sees it)
    line, headers, body = split(raw)
    assert verify(join(line, headers, b'{"name":"y"}'))[0] == 0
    # but the claim itself is
    rc, out = verify(with_header(raw, "X-Amz-Content-SHA256", lambda v: "0" * 64))
    assert rc == 1, out


def test_content_sha256_header_must_match_the_body():
    import hashlib
    body = b'{"name":"executeCode"}'
    raw = sign("POST", HOST + "/x", body, JSON + [("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest())])
    assert verify(raw)[0] == 0
    line, headers, _ = split(raw)
    rc, out = verify(join(line, headers, b'{"name":"executeCodf"}'))
    assert rc == 1 and "not the SHA-256 of the body" in out, out
    # a hash the client signed but that is not its body's: refused even with a good signature
    raw = sign("POST", HOST + "/x", body, JSON + [("X-Amz-Content-SHA256", "ab" * 32)])
    rc, out = verify(raw)
    assert rc == 1 and "not the SHA-256 of the body" in out, out


def test_refusals_never_show_the_secret():
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    raw = sign("GET", HOST + "/x")
    for _, altered in alterations(raw):
        _, out = verify(altered)
        assert secret not in out and not re.search(r"[0-9a-f]{64}", out.replace(raw.decode(errors="replace"), "")), out

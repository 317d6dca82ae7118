"""tests/http/aws.py - requests signed by botocore, as raw HTTP bytes, for the C tools.

botocore's SigV4Auth is the reference signer: it is what boto3, the AgentCore SDK,
Strands and langchain-aws sign with. Its clock is pinned (it reads
datetime.datetime.utcnow(), or .now(timezone.utc) in newer releases) so that a test can
put the verifier's "now" anywhere around the signing time.
"""
import contextlib
import datetime
import os
import subprocess
import types
from unittest import mock
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TOOLS = os.environ.get("CODEQ_TEST_TOOLS", os.path.join(os.path.dirname(__file__), "..", "..", "build", "tests"))
SIGV4_CHECK = os.path.join(TOOLS, "cq-sigv4-check")
EVENTSTREAM = os.path.join(TOOLS, "cq-eventstream")

SERVICE = "bedrock-agentcore"
# 2025-07-16T12:34:56Z
T0 = int(datetime.datetime(2025, 7, 16, 12, 34, 56, tzinfo=datetime.timezone.utc).timestamp())


@contextlib.contextmanager
def pinned_clock(unix):
    fixed = datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)

    class FixedDateTime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return fixed.replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return fixed if tz else fixed.replace(tzinfo=None)

    fake = types.SimpleNamespace(datetime=FixedDateTime, timezone=datetime.timezone,
                                 timedelta=datetime.timedelta)
    import botocore.auth
    with mock.patch.object(botocore.auth, "datetime", fake):
        yield


def sign(method, url, body=b"", headers=None, key="AKIDEXAMPLE", secret="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
         token=None, region="us-east-1", service=SERVICE, at=T0, unsigned_payload=False, auth_class=SigV4Auth):
    """Signs with botocore and returns the raw HTTP/1.1 request as bytes."""
    request = AWSRequest(method=method, url=url, data=body)
    for name, value in (headers or []):
        request.headers[name] = value  # a repeated name is added again, not replaced
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    auth = auth_class(Credentials(key, secret, token), service, region)
    with pinned_clock(at):
        auth.add_auth(request)
    return raw(request)


def raw(request):
    parts = urlsplit(request.url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    lines = [f"{request.method} {target} HTTP/1.1"]
    names = {n.lower() for n in request.headers.keys()}
    if "host" not in names:
        lines.append(f"Host: {parts.netloc}")
    for name, value in request.headers.items():
        lines.append(f"{name}: {value}")
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def verify(raw_request, now=T0, keys=("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY:tenant-a",),
           extra=()):
    """Runs cq-sigv4-check; returns (exit code, its output line)."""
    args = [SIGV4_CHECK, "--now", str(now)]
    for k in keys:
        args += ["--key", k]
    args += list(extra)
    p = subprocess.run(args, input=raw_request, capture_output=True, timeout=30)
    assert p.returncode in (0, 1), (p.returncode, p.stdout, p.stderr)
    return p.returncode, p.stdout.decode().strip()

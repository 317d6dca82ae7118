"""Signed requests (docs/security.md): the tenant key a client signs with.

A fleet with keys takes only requests signed with one of its tenants' keys: HMAC-SHA256
over a canonical string that names the request and carries the SHA-256 of its exact
packed bytes, which travel inside the envelope (``Request.signed``) unchanged, so that
every daemon verifies the very bytes the client signed. fleet/auth.h is the reference
implementation; clients/python/tests checks this one against it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Optional

from . import codeq_pb2 as pb

SCHEME = "CODEQ1-HMAC-SHA256"
_TENANT = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_KEY_ID = re.compile(r"cqk_[0-9a-f]{20}")
_SECRET = re.compile(r"[0-9a-f]{64}")


class CredentialsError(ValueError):
    """Credentials that are incomplete, malformed or kept where others can read them."""


@dataclass(frozen=True)
class Credentials:
    """A tenant's key: what ``codeq key create`` prints."""

    tenant: str
    key_id: str
    secret: str

    def __post_init__(self) -> None:
        if not _TENANT.fullmatch(self.tenant or ""):
            raise CredentialsError(f"tenant {self.tenant!r}: 1-40 of a-z, 0-9 and '-'")
        if not _KEY_ID.fullmatch(self.key_id or ""):
            raise CredentialsError(f"key id {self.key_id!r} is not a codeq key id (cqk_...)")
        if not _SECRET.fullmatch(self.secret or ""):
            raise CredentialsError("the secret must be 64 hexadecimal digits")

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"Credentials(tenant={self.tenant!r}, key_id={self.key_id!r})"

    @classmethod
    def from_file(cls, path: str) -> "Credentials":
        """Reads a credentials file (``key = value`` lines: tenant, key_id, secret),
        which must be readable by its owner alone."""
        mode = os.stat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise CredentialsError(f"credentials file {path} is readable by others "
                                   f"(mode {stat.S_IMODE(mode):03o}): chmod 600 it")
        values: dict[str, str] = {}
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, eq, value = line.partition("=")
                name = name.strip()
                if not eq or name not in ("tenant", "key_id", "secret"):
                    raise CredentialsError(f"{path}:{n}: not a tenant, key_id or secret line")
                values[name] = value.strip()
        return cls(values.get("tenant", ""), values.get("key_id", ""), values.get("secret", ""))

    @classmethod
    def from_environment(cls) -> Optional["Credentials"]:
        """CODEQ_CREDENTIALS (a file), then CODEQ_TENANT, CODEQ_KEY_ID and
        CODEQ_KEY_SECRET (or the secret alone in the file CODEQ_KEY_SECRET_FILE, readable
        by its owner only) over it; None when none is set (the client does not sign)."""
        path = os.environ.get("CODEQ_CREDENTIALS")
        base = cls.from_file(path) if path else None
        tenant = os.environ.get("CODEQ_TENANT") or (base.tenant if base else "")
        key_id = os.environ.get("CODEQ_KEY_ID") or (base.key_id if base else "")
        secret = os.environ.get("CODEQ_KEY_SECRET") or ""
        secret_file = os.environ.get("CODEQ_KEY_SECRET_FILE")
        if secret_file:
            if secret:
                raise CredentialsError("a key secret and a key secret file are both given: "
                                       "give one")
            mode = stat.S_IMODE(os.stat(secret_file).st_mode)
            if mode & 0o077:
                raise CredentialsError(f"key secret file {secret_file} is readable by others "
                                       f"(mode {mode:03o}): chmod 600 it")
            with open(secret_file, encoding="utf-8") as f:
                secret = f.read().strip()
        secret = secret or (base.secret if base else "")
        if not (tenant or key_id or secret):
            return None
        return cls(tenant, key_id, secret)


def operation(request: pb.Request) -> str:
    kind = request.WhichOneof("operation")
    if kind == "invoke":
        return request.invoke.tool
    return {"start_session": "startSession", "get_session": "getSession",
            "list_sessions": "listSessions", "stop_session": "stopSession",
            "cancel_call": "cancelCall"}.get(kind or "", "")


def canonical_string(request: pb.Request, key_id: str, timestamp_ms: int, packed: bytes) -> str:
    return "\n".join([SCHEME, str(timestamp_ms), key_id, request.tenant, request.request_id,
                      operation(request), hashlib.sha256(packed).hexdigest()])


def sign(request: pb.Request, credentials: Credentials,
         now_ms: Optional[int] = None) -> pb.Request:
    """The signed envelope of request, whose tenant must be the key's."""
    if request.tenant != credentials.tenant:
        raise CredentialsError(f"the request names tenant {request.tenant!r}, the key is "
                               f"{credentials.tenant!r}'s")
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    packed = request.SerializeToString()
    mac = hmac.new(credentials.secret.encode(), canonical_string(
        request, credentials.key_id, ts, packed).encode(), hashlib.sha256).digest()
    return pb.Request(signed=pb.Signed(request=packed, key_id=credentials.key_id,
                                       timestamp_unix_ms=ts, signature=mac))

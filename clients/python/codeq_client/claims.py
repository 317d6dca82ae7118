"""Payloads too large for one Kafka message, sent by reference (the claim check).

The fleet's side is fleet/claim.h; docs/fleet.md ("Large payloads") has the protocol.
A request whose packed size is above the claim threshold (512 KiB by default, half of
Kafka's stock 1 MB message limit) keeps every field but its Invoke's arguments, which
are stored in Redis under ``<prefix>claim:<id>``; a final reply too large for Kafka
arrives as a reference to the packed Response, stored the same way by the worker.

What Redis holds is sealed with AES-256-GCM under a key made for that claim alone,
which travels in the Kafka message that refers to it (``Claim.key``): Redis alone never
yields a payload, and the key is exposed exactly as much as a small payload sent inline.
Stored bytes are nonce (12) | ciphertext | tag (16), the additional data
``codeq-claim-v1:<id>``.

Redis is only needed for such payloads, so the connection is made on first use, and
the ``redis`` and ``cryptography`` packages are imported only then.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import ssl
import threading
from typing import Any, Optional, Union

from . import codeq_pb2 as pb

DEFAULT_THRESHOLD = 512 << 10
# AgentCore's 100 MB file, twice over: the largest payload a claim may carry.
MAX_CLAIM_BYTES = 200 << 20
MAX_FILE_BYTES = 100 << 20
# How long a request's claim waits for its worker (the worker deletes it once read).
REQUEST_TTL_S = 3600
# Slices of a claim in Redis: one 150 MB command would stall Redis for everyone else.
_PIECE = 1 << 20
_SOCKET_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 5.0
_ID = re.compile(r"[0-9a-f]{32}\Z")
_NONCE, _TAG, _KEY = 12, 16, 32


class ClaimError(Exception):
    """A payload could not go through Redis, or a reply's claim could not be read."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code  # LIMIT_EXCEEDED, INVALID_ARGUMENT, NOT_FOUND or INTERNAL


def _file_len(f: pb.FileContent) -> int:
    which = f.WhichOneof("data")
    if which == "blob":
        return len(f.blob)
    if which == "text":
        return len(f.text.encode("utf-8"))
    return 0


class ClaimStore:
    """Reads and writes claims in the fleet's Redis.

    Args:
        redis: "host:port" or a redis:// / rediss:// URL (which then carries its own
            credentials and TLS); default $CODEQ_REDIS or 127.0.0.1:16379
            (scripts/services).
        prefix: the fleet's redis_prefix (default $CODEQ_REDIS_PREFIX or "codeq:").
        threshold: requests packing larger than this go by reference (default
            $CODEQ_CLAIM_THRESHOLD or 512 KiB); it must not exceed what the brokers
            take in one message.
        username, password, password_file: Redis AUTH, as the fleet's redis_user,
            redis_password and redis_password_file (defaults: the CODEQ_REDIS_USER,
            CODEQ_REDIS_PASSWORD and CODEQ_REDIS_PASSWORD_FILE variables). The file is
            read at each new connection; its line end is not part of the password.
        tls, tls_ca, tls_cert, tls_key, tls_server_name: TLS to Redis, as the fleet's
            redis_tls (on/off, or a bool), redis_tls_ca (default: the system's CAs),
            redis_tls_cert and redis_tls_key (a client certificate) and
            redis_tls_server_name (the name the certificate must carry; default: the
            host); defaults from CODEQ_REDIS_TLS, CODEQ_REDIS_TLS_CA, ... The
            certificate and its name are always verified.
    """

    def __init__(self, redis: Optional[str] = None, prefix: Optional[str] = None,
                 threshold: Optional[int] = None, *, username: Optional[str] = None,
                 password: Optional[str] = None, password_file: Optional[str] = None,
                 tls: Optional[Union[bool, str]] = None, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None):
        env = os.environ.get
        self.address = redis or env("CODEQ_REDIS") or "127.0.0.1:16379"
        self.prefix = prefix if prefix is not None else env("CODEQ_REDIS_PREFIX", "codeq:")
        env_threshold = env("CODEQ_CLAIM_THRESHOLD")
        self.threshold = threshold or (_parse_size(env_threshold) if env_threshold
                                       else DEFAULT_THRESHOLD)
        self.username = username or env("CODEQ_REDIS_USER") or None
        self._password = password or env("CODEQ_REDIS_PASSWORD") or None
        self._password_file = password_file or env("CODEQ_REDIS_PASSWORD_FILE") or None
        if self._password and self._password_file:
            raise ValueError("a Redis password and a password file are both given: give one")
        if self.username and not (self._password or self._password_file):
            raise ValueError(f"Redis user {self.username!r} needs a password or a password file")
        self.tls = _on_off(tls if tls is not None else env("CODEQ_REDIS_TLS", "off"))
        self._tls_ca = tls_ca or env("CODEQ_REDIS_TLS_CA") or None
        self._tls_cert = tls_cert or env("CODEQ_REDIS_TLS_CERT") or None
        self._tls_key = tls_key or env("CODEQ_REDIS_TLS_KEY") or None
        self._tls_server_name = tls_server_name or env("CODEQ_REDIS_TLS_SERVER_NAME") or None
        if not self.tls and (self._tls_ca or self._tls_cert or self._tls_key or
                             self._tls_server_name):
            raise ValueError("Redis TLS files or a server name are given but TLS is off "
                             "(tls=True or CODEQ_REDIS_TLS=on)")
        if bool(self._tls_cert) != bool(self._tls_key):
            raise ValueError("a client certificate and its key go together: give both or "
                             "neither")
        self._redis: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        with self._lock:
            if self._redis is None:
                try:
                    import redis  # noqa: PLC0415 - only clients with large payloads need it
                except ImportError as e:
                    raise ClaimError("a payload too large for Kafka goes through Redis: "
                                     "install the 'redis' package", "INTERNAL") from e
                # Bounded waits: replies are resolved on the client's poll thread,
                # which a Redis that stopped answering must not hold forever.
                timeouts = {"socket_timeout": _SOCKET_TIMEOUT_S,
                            "socket_connect_timeout": _CONNECT_TIMEOUT_S}
                if "://" in self.address:
                    self._redis = redis.Redis.from_url(self.address, **timeouts)
                else:
                    host, _, port = self.address.rpartition(":")
                    self._redis = redis.Redis(connection_pool=redis.ConnectionPool(
                        connection_class=self._connection_class(redis),
                        host=host or "127.0.0.1", port=int(port or 6379),
                        username=self.username, **timeouts))
            return self._redis

    def _connection_class(self, redis: Any) -> Any:
        """redis-py's connection, with the password read when it connects (a password
        file may change) and TLS set up as the fleet's daemons set it up: the name
        checked is tls_server_name when given, which redis-py's own SSL connection
        cannot do (it checks the host it connects to, and not by default)."""
        store = self
        try:
            context = self._tls_context() if self.tls else None
        except (OSError, ssl.SSLError) as e:
            raise ClaimError(f"Redis TLS settings (CA, client certificate): {e}",
                             "INTERNAL") from e

        class Connection(redis.connection.Connection):
            def _connect(self):  # noqa: ANN202 - redis-py's hook
                sock = super()._connect()
                if context is None:
                    return sock
                try:
                    return context.wrap_socket(sock,
                                               server_hostname=store._tls_server_name or self.host)
                except BaseException:
                    sock.close()
                    raise

            def on_connect(self):  # noqa: ANN202 - redis-py's hook
                self.password = store._current_password()
                super().on_connect()

        return Connection

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._tls_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        if self._tls_cert:
            context.load_cert_chain(self._tls_cert, self._tls_key)
        return context

    def _current_password(self) -> Optional[str]:
        if self._password_file:
            with open(self._password_file, encoding="utf-8") as f:
                text = f.read()
            # The file's line end is not part of the password (as the fleet reads it).
            text = text[:-1] if text.endswith("\n") else text
            text = text[:-1] if text.endswith("\r") else text
            return text
        return self._password

    def client(self) -> Any:
        """The redis-py client of this store (connected on first use)."""
        return self._connection()

    def close(self) -> None:
        with self._lock:
            if self._redis is not None:
                self._redis.close()
                self._redis = None

    def _key(self, claim_id: str) -> str:
        return f"{self.prefix}claim:{claim_id}"

    def put(self, data: bytes, ttl_s: int, claim_id: Optional[str] = None) -> str:
        """Stores data as it is (put_sealed seals it first) under claim_id, or a new
        claim id; returns the id."""
        claim_id = claim_id or secrets.token_hex(16)
        key = self._key(claim_id)
        r = self._connection()
        try:
            # SETRANGE, not APPEND: a slice sent again after a lost reply lands on
            # itself (the fleet's writer, fleet/store.c, does the same).
            r.set(key, data[:_PIECE], ex=ttl_s)
            for off in range(_PIECE, len(data), _PIECE):
                r.setrange(key, off, data[off:off + _PIECE])
        except Exception as e:
            raise ClaimError(f"could not store {len(data)} bytes in Redis at {self.address}: {e}",
                             "INTERNAL") from e
        return claim_id

    def put_sealed(self, payload: bytes, ttl_s: int) -> pb.Claim:
        """Stores payload sealed under a new key; returns the claim that refers to it
        (id, size stored, key)."""
        aesgcm = _aesgcm()
        key = secrets.token_bytes(_KEY)
        nonce = secrets.token_bytes(_NONCE)
        # The id is chosen before the bytes are stored: it is part of what is sealed.
        claim_id = secrets.token_hex(16)
        stored = nonce + aesgcm(key).encrypt(nonce, payload, _aad(claim_id))
        self.put(stored, ttl_s, claim_id=claim_id)
        return pb.Claim(id=claim_id, size=len(stored), key=key)

    def get(self, claim: pb.Claim) -> bytes:
        """The payload a claim refers to (opened when sealed)."""
        if not _ID.match(claim.id):
            raise ClaimError("a claim's id must be 32 lowercase hexadecimal digits",
                             "INVALID_ARGUMENT")
        overhead = _NONCE + _TAG if claim.key else 0
        if claim.key and len(claim.key) != _KEY:
            raise ClaimError("a claim's key must be 32 bytes", "INVALID_ARGUMENT")
        if claim.size <= overhead or claim.size - overhead > MAX_CLAIM_BYTES:
            raise ClaimError(f"a claim of {claim.size} bytes is out of bounds", "INVALID_ARGUMENT")
        data = self._fetch(claim)
        if not claim.key:
            return data
        try:
            return _aesgcm()(claim.key).decrypt(data[:_NONCE], data[_NONCE:], _aad(claim.id))
        except ClaimError:
            raise
        except Exception as e:
            raise ClaimError("the claimed bytes do not open with the claim's key (altered, or "
                             "another claim's)", "INVALID_ARGUMENT") from e

    def _fetch(self, claim: pb.Claim) -> bytes:
        key = self._key(claim.id)
        r = self._connection()
        try:
            stored = r.strlen(key)
            if stored == 0:
                raise ClaimError("the payload stored in Redis for this reply is gone (its time "
                                 "to live ran out, or its session ended)", "NOT_FOUND")
            if stored != claim.size:
                raise ClaimError(f"the payload stored in Redis has {stored} bytes, the reply "
                                 f"says {claim.size}", "INVALID_ARGUMENT")
            parts = []
            for off in range(0, claim.size, _PIECE):
                n = min(_PIECE, claim.size - off)
                part = r.getrange(key, off, off + n - 1)
                if len(part) != n:
                    raise ClaimError("the payload stored in Redis changed while it was read",
                                     "NOT_FOUND")
                parts.append(part)
        except ClaimError:
            raise
        except Exception as e:
            raise ClaimError(f"could not read a claim from Redis at {self.address}: {e}",
                             "INTERNAL") from e
        return b"".join(parts)

    # ---- requests and replies ---------------------------------------------------------

    def outgoing(self, request: pb.Request) -> pb.Request:
        """The request to send: request itself, or a copy whose arguments went to
        Redis when it is too large for a Kafka message. Checks the limits the fleet's
        edge checks, so that a request bound to be refused is not sent at all."""
        invoke = request.invoke if request.WhichOneof("operation") == "invoke" else None
        largest = 0
        if invoke is not None:
            for f in invoke.arguments.content:
                n = _file_len(f)
                if n > MAX_FILE_BYTES:
                    raise ClaimError(f"{f.path} has {n} bytes, more than the 100 MB limit of a "
                                     "file", "INVALID_ARGUMENT")
                largest = max(largest, n)
        size = request.ByteSize()
        if size <= self.threshold:
            return request
        if invoke is None:
            raise ClaimError(f"the request packs to {size} bytes, more than a Kafka message "
                             f"takes ({self.threshold}); only an invoke's arguments can go "
                             "through Redis", "LIMIT_EXCEEDED")
        packed = invoke.arguments.SerializeToString()
        if len(packed) > MAX_CLAIM_BYTES:
            raise ClaimError(f"the request's arguments have {len(packed)} bytes, more than the "
                             "200 MiB limit of a request", "LIMIT_EXCEEDED")
        claim = self.put_sealed(packed, REQUEST_TTL_S)
        small = pb.Request()
        small.CopyFrom(request)
        small.invoke.ClearField("arguments")
        small.invoke.arguments_claim.CopyFrom(claim)
        small.invoke.arguments_claim.largest_file = largest
        # A signature covers the claimed bytes through their digest (docs/security.md).
        small.invoke.arguments_claim.sha256 = hashlib.sha256(packed).digest()
        return small

    def incoming(self, response: pb.Response) -> pb.Response:
        """The reply itself, or the one its claim refers to (checked as the fleet
        checks: same request, a final payload, never another claim)."""
        if response.WhichOneof("payload") != "claim":
            return response
        data = self.get(response.claim)
        inner = pb.Response()
        try:
            inner.ParseFromString(data)
        except Exception as e:
            raise ClaimError(f"the claimed reply does not decode: {e}", "INVALID_ARGUMENT") from e
        if inner.request_id != response.request_id or (
                inner.session_id and response.session_id and
                inner.session_id != response.session_id):
            raise ClaimError("the claimed reply is of another request", "INVALID_ARGUMENT")
        if inner.WhichOneof("payload") not in ("result", "session", "sessions"):
            raise ClaimError("the claimed reply is not a final reply", "INVALID_ARGUMENT")
        return inner


def _aad(claim_id: str) -> bytes:
    return b"codeq-claim-v1:" + claim_id.encode()


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    except ImportError as e:
        raise ClaimError("a payload too large for Kafka goes through Redis sealed: install "
                         "the 'cryptography' package", "INTERNAL") from e
    return AESGCM


def _on_off(value: Union[bool, str]) -> bool:
    """CODEQ_REDIS_TLS's values, as the fleet's daemons take them."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("on", "yes", "true", "1"):
        return True
    if text in ("off", "no", "false", "0", ""):
        return False
    raise ValueError(f"redis_tls: {value!r} is neither on nor off")


def _parse_size(text: str) -> int:
    text = text.strip()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)

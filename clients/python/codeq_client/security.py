"""Kafka security settings of a client: librdkafka's security properties, passed
through to the client's producer, consumer and admin client.

The same settings as the fleet's daemons and C client (docs/fleet.md, "Kafka
security"): ``CODEQ_KAFKA_<PROPERTY>`` variables (dots as underscores, upper case;
``CODEQ_KAFKA_<PROPERTY>_FILE`` reads the value from a file, for secrets) give the
defaults, and a client's ``kafka_config`` dict (``{"sasl.password": ...}`` or
``{"sasl.password_file": path}``) goes on top. Only security.protocol, sasl.*, ssl.*
and enable.ssl.certificate.verification pass: the client tunes the rest of its Kafka
settings itself (idempotence, partitioner, latency), and a pass-through of those could
break it without a word.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

ALLOWED_PREFIXES = ("security.", "sasl.", "ssl.", "enable.ssl.certificate.verification")
_ENV_PREFIX = "CODEQ_KAFKA_"


def allowed(name: str) -> bool:
    return name.startswith(ALLOWED_PREFIXES)


def _read_secret(path: str, source: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().rstrip("\r\n")
    except OSError as e:
        raise ValueError(f"{source}: cannot read {path}: {e.strerror}") from None
    # An empty secret is a mistake (a file not yet written), not a password.
    if not value or "\0" in value:
        raise ValueError(f"{source}: {path} is empty or holds a NUL byte")
    return value


def _put(config: dict[str, Any], key: str, value: Any, source: str) -> None:
    name = key[: -len("_file")] if key.endswith("_file") else key
    if not allowed(name):
        raise ValueError(
            f"{source}: {name!r} is not a Kafka security property (only security.protocol, "
            "sasl.*, ssl.* and enable.ssl.certificate.verification pass through)"
        )
    config[name] = _read_secret(str(value), source) if name != key else value


def from_environment(environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The CODEQ_KAFKA_* defaults. Names that map outside the accepted prefixes
    (scripts/services' CODEQ_KAFKA_PORT, CODEQ_KAFKA_VERSION, ...) are not settings of
    a client and are left alone."""
    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for var in sorted(environ):
        if not var.startswith(_ENV_PREFIX):
            continue
        rest = var[len(_ENV_PREFIX):]
        from_file = rest.endswith("_FILE")
        name = (rest[:-5] if from_file else rest).lower().replace("_", ".")
        if not allowed(name):
            continue
        if from_file and var[:-5] in environ:
            raise ValueError(f"{var[:-5]} and {var} are both set")
        _put(config, name + ("_file" if from_file else ""), environ[var], var)
    return config


def kafka_security_config(
    kafka_config: Optional[Mapping[str, Any]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """librdkafka properties: the environment's, then kafka_config's. Raises ValueError
    for a property outside the accepted ones or a secret's file that cannot be read."""
    config = from_environment(environ)
    for key, value in (kafka_config or {}).items():
        _put(config, key, value, "kafka_config")
    return config


"""codeq_client/security.py: the Kafka security settings of a client, from
CODEQ_KAFKA_* variables and kafka_config, and the refusals of anything else."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codeq_client import Client, CodeqError  # noqa: E402
from codeq_client.security import kafka_security_config  # noqa: E402


def test_settings_from_environment_dict_and_files(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret#1\n")
    env = {"CODEQ_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CODEQ_KAFKA_SASL_USERNAME": "env",
           "CODEQ_KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none",
           "CODEQ_KAFKA_SASL_PASSWORD_FILE": str(secret),
           # scripts/services' own: no properties, left alone
           "CODEQ_KAFKA_PORT": "19092", "CODEQ_KAFKA_VERSION": "4.4.0"}
    assert kafka_security_config({"sasl.username": "dict"}, env) == {
        "security.protocol": "SASL_SSL", "sasl.username": "dict", "sasl.password": "s3cret#1",
        "ssl.endpoint.identification.algorithm": "none"}
    with pytest.raises(ValueError, match="'linger.ms' is not a Kafka security property"):
        kafka_security_config({"linger.ms": 5}, {})
    with pytest.raises(ValueError, match="are both set"):
        kafka_security_config(None, dict(env, CODEQ_KAFKA_SASL_PASSWORD="x"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        kafka_security_config({"ssl.key.password_file": str(tmp_path / "empty")}, {})
    with pytest.raises(CodeqError, match="'debug' is not a Kafka security property"):
        Client("127.0.0.1:1", kafka_config={"debug": "all"})


def test_a_setting_librdkafka_refuses_is_a_codeq_error():
    with pytest.raises(CodeqError, match="sasl.nope"):
        Client("127.0.0.1:1", kafka_config={"sasl.nope": "x"})


def test_the_asyncio_client_takes_the_same_settings():
    from codeq_client import AsyncClient
    with pytest.raises(CodeqError, match="'debug' is not a Kafka security property"):
        AsyncClient("127.0.0.1:1", kafka_config={"debug": "all"})

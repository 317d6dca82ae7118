"""tests/serve/conftest.py - `codeq serve` driven by the unmodified AgentCore clients.

The clients (PyPI bedrock-agentcore, boto3, botocore) live in build/pydeps-agentcore
(or $CODEQ_AGENTCORE_PYDEPS), where scripts/setup installs them; Debian's own botocore is too old for
the bedrock-agentcore service model. Their absence fails the tests rather than skipping
them. Nothing reaches AWS: every client is given codeq's endpoint, keys made here with
`codeq tenant` / `codeq key`, and AWS configuration files that do not exist.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")
PYDEPS = os.environ.get("CODEQ_AGENTCORE_PYDEPS") or os.path.join(REPO, "build", "pydeps-agentcore")
sys.path.insert(0, PYDEPS)

REGION = "us-east-1"
# What a client reads when nothing else is given: keep the tests away from any real
# AWS configuration on the machine.
os.environ.update({
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
})

import botocore  # noqa: E402  (from PYDEPS: fails here when it is missing)
import botocore.config  # noqa: E402
import boto3  # noqa: E402

assert tuple(int(x) for x in botocore.__version__.split(".")[:2]) >= (1, 40), \
    f"botocore {botocore.__version__} from {botocore.__file__}: run scripts/setup (build/pydeps-agentcore)"


from serve_process import Server, make_key  # noqa: E402,F401  (used by the test modules)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serve") / "keys")
    return {"path": path, "alpha": make_key(path, "alpha"), "beta": make_key(path, "beta")}


@pytest.fixture(scope="session")
def server(keys):
    s = Server(["--keys", keys["path"], "--warm-pool", "0", "--max-body", "8M"])
    yield s
    assert s.stop() == 0


def client(server, key, region=REGION):
    return boto3.client("bedrock-agentcore", region_name=region, endpoint_url=server.endpoint,
                        aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=botocore.config.Config(retries={"max_attempts": 1},
                                                      read_timeout=300))


@pytest.fixture(scope="session")
def alpha(server, keys):
    return client(server, keys["alpha"])


@pytest.fixture(scope="session")
def beta(server, keys):
    return client(server, keys["beta"])


def sdk_module(dp_endpoint, cp_endpoint=None):
    """The SDK's code_interpreter_client as it is when imported with these endpoints in
    the environment (it reads them at import): reloaded, so that modules using other
    servers do not see each other's."""
    import importlib
    for name, value in (("BEDROCK_AGENTCORE_DP_ENDPOINT", dp_endpoint),
                        ("BEDROCK_AGENTCORE_CP_ENDPOINT", cp_endpoint)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    importlib.reload(importlib.import_module("bedrock_agentcore._utils.endpoints"))
    module = importlib.reload(
        importlib.import_module("bedrock_agentcore.tools.code_interpreter_client"))
    assert module.DP_ENDPOINT_OVERRIDE == dp_endpoint
    assert module.CP_ENDPOINT_OVERRIDE == cp_endpoint
    return module


def results(response):
    """The result events of an invoke_code_interpreter answer."""
    return [e["result"] for e in response["stream"] if "result" in e]

"""tests/serve/test_control.py - AgentCore's control plane for code interpreters on
`codeq serve`: the unmodified SDK's create/get/list/delete_code_interpreter (pointed at
codeq by BEDROCK_AGENTCORE_CP_ENDPOINT) and plain boto3's bedrock-agentcore-control
client, then sessions on what they made. An interpreter belongs to the tenant that made
it; the operator's own (codeq interpreter create) are seen by all and deleted by none."""
import json
import os
import subprocess
import uuid

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import CODEQ, REGION, Server, make_key, results, sdk_module

ROLE = "arn:aws:iam::123456789012:role/InterpreterRole"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("store"))
    # The operator's own interpreter, made with the command: every tenant sees it.
    subprocess.run([CODEQ, "interpreter", "create", "--name", "shared", "--network", "NONE",
                    "--store", path], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def cp_server(store, tmp_path_factory):
    keys = str(tmp_path_factory.mktemp("cpkeys") / "keys")
    made = {"alpha": make_key(keys, "alpha"), "beta": make_key(keys, "beta")}
    env = dict(os.environ, CODEQ_RUNTIME_STORE=store)
    s = Server(["--keys", keys, "--warm-pool", "0"], env=env)
    s.keys = made
    yield s
    assert s.stop() == 0


def control(server, tenant):
    key_id, secret = server.keys[tenant]
    return boto3.client("bedrock-agentcore-control", region_name=REGION,
                        endpoint_url=server.endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1}))


def data(server, tenant):
    key_id, secret = server.keys[tenant]
    return boto3.client("bedrock-agentcore", region_name=REGION, endpoint_url=server.endpoint,
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=botocore.config.Config(retries={"max_attempts": 1},
                                                      read_timeout=120))


def error(call):
    with pytest.raises(ClientError) as e:
        call()
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_sdk_creates_uses_and_deletes_an_interpreter(cp_server, store):
    ci_module = sdk_module(cp_server.endpoint, cp_server.endpoint)
    key_id, secret = cp_server.keys["alpha"]
    session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                            region_name=REGION)
    ci = ci_module.CodeInterpreter(REGION, session=session)

    made = ci.create_code_interpreter(name="Analytics_1", execution_role_arn=ROLE,
                                      network_configuration={"networkMode": "SANDBOX"},
                                      description="team A's interpreter")
    iid = made["codeInterpreterId"]
    assert made["status"] == "READY"
    assert iid.startswith("analytics_1-") and len(iid) == len("analytics_1-") + 10, iid
    assert made["codeInterpreterArn"].endswith(":code-interpreter-custom/" + iid)
    # It is the store's definition, as `codeq interpreter get` shows it.
    shown = json.loads(subprocess.run([CODEQ, "interpreter", "get", iid, "--store", store],
                                      check=True, capture_output=True, text=True).stdout)
    assert shown["network"] == "NONE" and shown["tenants"] == ["alpha"], shown

    got = ci.get_code_interpreter(iid)
    assert got["name"] == "Analytics_1" and got["description"] == "team A's interpreter"
    assert got["networkConfiguration"] == {"networkMode": "SANDBOX"}
    assert got["executionRoleArn"] == ROLE and got["status"] == "READY"

    listed = ci.list_code_interpreters(interpreter_type="CUSTOM", max_results=100)
    ids = [s["codeInterpreterId"] for s in listed["codeInterpreterSummaries"]]
    assert iid in ids and "shared" in ids and "aws.codeinterpreter.v1" not in ids, ids

    # A session on it runs code, with its network mode (NONE: no interface but lo).
    session_id = ci.start(identifier=iid, name="on-custom")
    try:
        r = results(ci.execute_code(
            "import socket\nprint([n for _, n in socket.if_nameindex()])"))
        assert r[0]["structuredContent"]["stdout"] == "['lo']\n", r
    finally:
        ci.stop()
    assert session_id

    deleted = ci.delete_code_interpreter(iid)
    assert deleted["codeInterpreterId"] == iid and deleted["status"] == "DELETED"
    code, _ = error(lambda: ci.get_code_interpreter(iid))
    assert code == "ResourceNotFoundException"
    code, _ = error(lambda: ci.start(identifier=iid))
    assert code == "ResourceNotFoundException"


def test_tenants_see_only_their_own(cp_server):
    alpha, beta = control(cp_server, "alpha"), control(cp_server, "beta")
    iid = alpha.create_code_interpreter(
        name="private", networkConfiguration={"networkMode": "SANDBOX"})["codeInterpreterId"]
    try:
        # Another tenant: as if it did not exist, for every operation.
        for call in (lambda: beta.get_code_interpreter(codeInterpreterId=iid),
                     lambda: beta.delete_code_interpreter(codeInterpreterId=iid),
                     lambda: data(cp_server, "beta").start_code_interpreter_session(
                         codeInterpreterIdentifier=iid)):
            assert error(call)[0] == "ResourceNotFoundException"
        ids = [s["codeInterpreterId"] for s in beta.list_code_interpreters(
            maxResults=100)["codeInterpreterSummaries"]]
        assert iid not in ids and "shared" in ids and "aws.codeinterpreter.v1" in ids, ids
        # The same name is another tenant's to take.
        other = beta.create_code_interpreter(
            name="private", networkConfiguration={"networkMode": "PUBLIC"})["codeInterpreterId"]
        assert other != iid
        assert beta.get_code_interpreter(
            codeInterpreterId=other)["networkConfiguration"]["networkMode"] == "PUBLIC"
        beta.delete_code_interpreter(codeInterpreterId=other)
        # The owner still has it.
        assert alpha.get_code_interpreter(codeInterpreterId=iid)["name"] == "private"
    finally:
        alpha.delete_code_interpreter(codeInterpreterId=iid)


def test_operators_and_built_in_interpreters(cp_server):
    alpha = control(cp_server, "alpha")
    got = alpha.get_code_interpreter(codeInterpreterId="aws.codeinterpreter.v1")
    assert got["codeInterpreterId"] == "aws.codeinterpreter.v1" and got["status"] == "READY"
    assert got["codeInterpreterArn"].endswith(":aws:code-interpreter/aws.codeinterpreter.v1")
    system = alpha.list_code_interpreters(type="SYSTEM")["codeInterpreterSummaries"]
    assert [s["codeInterpreterId"] for s in system] == ["aws.codeinterpreter.v1"]
    code, message = error(lambda: alpha.delete_code_interpreter(
        codeInterpreterId="aws.codeinterpreter.v1"))
    assert code == "ValidationException" and "built in" in message
    code, message = error(lambda: alpha.delete_code_interpreter(codeInterpreterId="shared"))
    assert code == "AccessDeniedException" and "operator" in message
    assert alpha.get_code_interpreter(codeInterpreterId="shared")["name"] == "shared"


def test_client_token_and_conflicts(cp_server):
    alpha = control(cp_server, "alpha")
    token = uuid.uuid4().hex + "x"
    first = alpha.create_code_interpreter(name="tokened", clientToken=token,
                                          networkConfiguration={"networkMode": "SANDBOX"})
    try:
        again = alpha.create_code_interpreter(name="tokened", clientToken=token,
                                              networkConfiguration={"networkMode": "SANDBOX"})
        assert again["codeInterpreterId"] == first["codeInterpreterId"]
        assert again["createdAt"] == first["createdAt"]
        # The same name without the token: taken.
        code, _ = error(lambda: alpha.create_code_interpreter(
            name="tokened", networkConfiguration={"networkMode": "SANDBOX"}))
        assert code == "ConflictException"
        # The token for another name: a conflict, not a second interpreter.
        code, _ = error(lambda: alpha.create_code_interpreter(
            name="other", clientToken=token, networkConfiguration={"networkMode": "SANDBOX"}))
        assert code == "ConflictException"
    finally:
        alpha.delete_code_interpreter(codeInterpreterId=first["codeInterpreterId"])


def test_what_codeq_cannot_honour_is_refused(cp_server):
    alpha = control(cp_server, "alpha")
    code, message = error(lambda: alpha.create_code_interpreter(
        name="vpc", networkConfiguration={
            "networkMode": "VPC", "vpcConfig": {"securityGroups": ["sg-1"],
                                                "subnets": ["subnet-1"]}}))
    assert code == "ValidationException" and "ALLOWLIST" in message
    code, message = error(lambda: alpha.create_code_interpreter(
        name="bad-name", networkConfiguration={"networkMode": "SANDBOX"}))
    assert code == "ValidationException" and "name" in message
    code, _ = error(lambda: alpha.create_code_interpreter(
        name="certs", networkConfiguration={"networkMode": "SANDBOX"},
        certificates=[{"location": {"secretsManager": {"secretArn": "arn:x"}}}]))
    assert code == "ValidationException"
    code, _ = error(lambda: alpha.list_code_interpreters(maxResults=100, type="OTHER"))
    assert code == "ValidationException"
    ids = [s["codeInterpreterId"] for s in alpha.list_code_interpreters(
        maxResults=100)["codeInterpreterSummaries"]]
    assert not any(i.startswith(("vpc-", "certs-")) for i in ids), ids


def test_pagination(cp_server):
    alpha = control(cp_server, "alpha")
    made = [alpha.create_code_interpreter(name=f"page{i}", networkConfiguration={
        "networkMode": "SANDBOX"})["codeInterpreterId"] for i in range(5)]
    try:
        seen, token = [], None
        while True:
            kwargs = {"maxResults": 2}
            if token:
                kwargs["nextToken"] = token
            page = alpha.list_code_interpreters(**kwargs)
            assert len(page["codeInterpreterSummaries"]) <= 2
            seen += [s["codeInterpreterId"] for s in page["codeInterpreterSummaries"]]
            token = page.get("nextToken")
            if not token:
                break
        assert len(seen) == len(set(seen)), seen
        assert set(made) <= set(seen) and "aws.codeinterpreter.v1" in seen, seen
    finally:
        for iid in made:
            alpha.delete_code_interpreter(codeInterpreterId=iid)

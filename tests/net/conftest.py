"""Fixtures every network test module shares: root and a built codeq before anything,
and a test "internet" of its own (internet.py) per module, torn down after it."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

import internet  # noqa: E402
from mcp_client import CODEQ  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _preconditions():
    assert os.geteuid() == 0, "the network tests need root"
    assert os.access(CODEQ, os.X_OK), f"{CODEQ} is not built"


@pytest.fixture(scope="module")
def net():
    with internet.Internet() as n:
        yield n

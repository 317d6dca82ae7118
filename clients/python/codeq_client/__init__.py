"""Python client of codeq, a self-hosted code interpreter with AgentCore's API.

Requests travel over Kafka to a codeq fleet (docs/fleet.md); results come back as the
dicts AgentCore (an MCP CallToolResult) and ``codeq exec`` use::

    from codeq_client import code_session

    with code_session("127.0.0.1:19092") as s:
        result = s.execute_code("print(6 * 7)")
        print(result["structuredContent"]["stdout"])
"""

from . import codeq_pb2
from .aio import AsyncClient, AsyncSession, async_code_session
from .auth import Credentials, CredentialsError
from .client import (
    Client,
    CodeqError,
    RequestRefused,
    OutputCallback,
    Session,
    SessionError,
    TimeoutError,
    code_session,
)
from .results import arguments_from_dict, result_to_dict, session_list_to_dict, session_to_dict

__all__ = [
    "codeq_pb2",
    "Credentials",
    "CredentialsError",
    "Client",
    "Session",
    "code_session",
    "AsyncClient",
    "AsyncSession",
    "async_code_session",
    "CodeqError",
    "RequestRefused",
    "SessionError",
    "TimeoutError",
    "OutputCallback",
    "arguments_from_dict",
    "result_to_dict",
    "session_to_dict",
    "session_list_to_dict",
]

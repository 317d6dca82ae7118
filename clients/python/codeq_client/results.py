"""Translation between codeq.v1 protobuf messages and AgentCore-shaped dicts.

The dicts are the JSON that `codeq exec` and `codeq mcp` print (cli/result_json.c and
cli/mcp_tools.c): a tool result is an MCP CallToolResult, a session is AgentCore's
session record. Keys appear in the same order as in the C rendering, so that
``json.dumps`` of either side compares equal.

One difference is forced by proto3: a string field cannot be absent, only empty. The C
side omits ``stdout``/``stderr`` when the worker produced none (a task that has just
started); a result that crossed the wire always carries them, possibly empty.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional

from . import codeq_pb2 as pb

__all__ = [
    "arguments_from_dict",
    "result_to_dict",
    "session_to_dict",
    "session_list_to_dict",
    "error_code_name",
    "stream_name",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Task states whose exit code does not exist yet (cli/result_json.c leaves it out).
_RUNNING_TASK = (pb.TASK_STATUS_SUBMITTED, pb.TASK_STATUS_WORKING)

# The enum value names without their proto prefix are the names C prints.
_ERROR_PREFIX = "ERROR_CODE_"
_TASK_PREFIX = "TASK_STATUS_"
_STREAM_PREFIX = "STREAM_"


def error_code_name(code: int) -> str:
    """The AgentCore-style name of an ErrorCode ("NOT_FOUND", ...).

    Values this schema does not know (a newer server) read as INTERNAL, as in C.
    """
    if code not in pb.ErrorCode.values():
        return "INTERNAL"
    return pb.ErrorCode.Name(code)[len(_ERROR_PREFIX):]


def _task_status_name(status: int) -> str:
    # C prints lower-case names and "" for none or unknown values.
    if status == pb.TASK_STATUS_UNSPECIFIED or status not in pb.TaskStatus.values():
        return ""
    return pb.TaskStatus.Name(status)[len(_TASK_PREFIX):].lower()


def stream_name(stream: int) -> str:
    """The name of an OutputChunk's stream: "stdout", "stderr" (or "unspecified")."""
    if stream not in pb.Stream.values():
        return "unspecified"
    return pb.Stream.Name(stream)[len(_STREAM_PREFIX):].lower()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _block_to_dict(block: pb.ContentBlock) -> dict[str, Any]:
    kind = block.WhichOneof("block")
    if kind == "text":
        return {"type": "text", "text": block.text.text}
    if kind == "image":
        return {"type": "image", "data": _b64(block.image.data), "mimeType": block.image.mime_type}
    if kind == "resource":
        res = block.resource
        inner: dict[str, Any] = {"uri": res.uri, "mimeType": res.mime_type}
        if res.WhichOneof("contents") == "blob":
            inner["blob"] = _b64(res.blob)
        else:
            # Unset contents is empty text, as a C block that is not a blob.
            inner["text"] = res.text
        return {"type": "resource", "resource": inner}
    if kind == "resource_link":
        link = block.resource_link
        return {
            "type": "resource_link",
            "uri": link.uri,
            "name": link.name,
            "mimeType": link.mime_type,
            "size": link.size,
            "description": link.description,
        }
    # An empty block (or one of a newer schema): keep the position, say nothing false.
    return {"type": "text", "text": ""}


def _structured_to_dict(sc: pb.StructuredContent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sc.task_id:
        out["taskId"] = sc.task_id
        out["taskStatus"] = _task_status_name(sc.task_status)
    out["stdout"] = sc.stdout
    out["stderr"] = sc.stderr
    if sc.task_status not in _RUNNING_TASK:
        out["exitCode"] = sc.exit_code
    # Microseconds, as the C side prints it (15 significant digits): never
    # 8000.7420000000002 from a value a server computed another way.
    out["executionTime"] = round(float(sc.execution_time), 3)
    out["cpuTime"] = sc.cpu_time_ms
    out["peakMemory"] = sc.peak_memory_bytes
    if sc.network:
        out["networkBytesSent"] = sc.network_bytes_sent
        out["networkBytesReceived"] = sc.network_bytes_received
    return out


def result_to_dict(result: pb.Result) -> dict[str, Any]:
    """An AgentCore tool result: ``{"content", "structuredContent"?, "isError"}``.

    ``structuredContent`` appears only when the result has one (file tools have none).
    When the service itself failed (error_code is not NONE) the dict also has
    ``"_codeq_error": {"code": "TIMED_OUT", "message": ...}``; the message is left out
    when empty.
    """
    out: dict[str, Any] = {"content": [_block_to_dict(b) for b in result.content]}
    if result.HasField("structured_content"):
        out["structuredContent"] = _structured_to_dict(result.structured_content)
    out["isError"] = result.is_error
    if result.error_code != pb.ERROR_CODE_NONE:
        err: dict[str, Any] = {"code": error_code_name(result.error_code)}
        if result.error_message:
            err["message"] = result.error_message
        out["_codeq_error"] = err
    return out


def _iso_time(unix_ms: int) -> str:
    # YYYY-MM-DDTHH:MM:SS.mmmZ in UTC, zero-padded like C's snprintf (strftime's %Y
    # does not pad years before 1000 on glibc).
    t = _EPOCH + timedelta(milliseconds=unix_ms)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


_NETWORK_MODES = {pb.NETWORK_MODE_NONE: "NONE", pb.NETWORK_MODE_PUBLIC: "PUBLIC",
                  pb.NETWORK_MODE_ALLOWLIST: "ALLOWLIST"}


def session_to_dict(session: pb.Session) -> dict[str, Any]:
    """AgentCore's session record: sessionId, name, status, createdAt, lastUpdatedAt,
    sessionTimeoutSeconds, codeInterpreterIdentifier; and codeq's networkMode,
    networkAllow, runtime, runtimeDigest and limits (memory and disk in bytes, cpus in
    cores, pids: what the sandbox got; codeq mcp's shape). Status is "READY" or "TERMINATED"; times are ISO 8601 UTC."""
    limits = session.limits
    return {
        "sessionId": session.session_id,
        "name": session.name,
        "status": "READY" if session.status == pb.SESSION_STATUS_READY else "TERMINATED",
        "createdAt": _iso_time(session.created_at_unix_ms),
        "lastUpdatedAt": _iso_time(session.last_updated_at_unix_ms),
        "sessionTimeoutSeconds": session.session_timeout_seconds,
        "networkMode": _NETWORK_MODES.get(session.network, "NONE"),
        "networkAllow": list(session.network_allow),
        "codeInterpreterIdentifier": session.code_interpreter_identifier or "codeq.default",
        "runtime": session.runtime,
        "runtimeDigest": session.runtime_digest,
        "limits": {
            "memory": limits.memory_bytes,
            "cpus": limits.cpu_millis / 1000,
            "disk": limits.disk_bytes,
            "pids": limits.pids,
        },
    }


def session_list_to_dict(sessions: pb.SessionList) -> dict[str, Any]:
    """``{"items": [session, ...], "nextToken": ...}``; nextToken only when there is
    another page (as listSessions in cli/mcp_tools.c)."""
    out: dict[str, Any] = {"items": [session_to_dict(s) for s in sessions.sessions]}
    if sessions.next_token:
        out["nextToken"] = sessions.next_token
    return out


# AgentCore's camelCase argument names -> codeq.v1 Arguments fields, for the scalar ones.
_SCALAR_ARGUMENTS = {
    "code": "code",
    "language": "language",
    "clearContext": "clear_context",
    "runtime": "runtime",
    "command": "command",
    "directoryPath": "directory_path",
    "taskId": "task_id",
    "timeout": "timeout",
}
_LIST_ARGUMENTS = ("paths", "content")


def _file_content(item: Mapping[str, Any]) -> pb.FileContent:
    unknown = set(item) - {"path", "text", "blob"}
    if unknown:
        raise ValueError(f"unknown file content key(s): {', '.join(sorted(unknown))}")
    if "path" not in item:
        raise ValueError("file content needs a 'path'")
    if ("text" in item) == ("blob" in item):
        raise ValueError(f"file content for {item['path']!r} needs exactly one of 'text', 'blob'")
    fc = pb.FileContent(path=item["path"])
    if "text" in item:
        fc.text = item["text"]
        return fc
    blob = item["blob"]
    if isinstance(blob, str):
        # In AgentCore's JSON a blob is base64; accept that form, decoded once here.
        try:
            fc.blob = base64.b64decode(blob, validate=True)
        except binascii.Error as e:
            raise ValueError(f"blob for {item['path']!r} is not valid base64: {e}") from None
    else:
        fc.blob = bytes(blob)
    return fc


def arguments_from_dict(arguments: Optional[Mapping[str, Any]]) -> pb.Arguments:
    """codeq.v1 Arguments from AgentCore's flat argument dict.

    Names are AgentCore's (code, language, clearContext, runtime, command, paths,
    content, directoryPath, taskId, timeout). ``content`` items are
    ``{"path", "text"}`` or ``{"path", "blob"}`` with blob as bytes or a base64 string.
    Keys whose value is None are treated as absent. Unknown keys raise ValueError, so
    a misspelt argument is not silently ignored.
    """
    args = pb.Arguments()
    if not arguments:
        return args
    for key, value in arguments.items():
        if value is None:
            continue
        if key in _SCALAR_ARGUMENTS:
            setattr(args, _SCALAR_ARGUMENTS[key], value)
        elif key == "paths":
            if isinstance(value, (str, bytes)):
                # A lone string would otherwise become one path per character.
                raise TypeError("'paths' must be a list of strings, not a single string")
            args.paths.extend(value)
        elif key == "content":
            args.content.extend(_file_content(item) for item in value)
        else:
            known = sorted([*_SCALAR_ARGUMENTS, *_LIST_ARGUMENTS])
            raise ValueError(f"unknown argument {key!r} (known: {', '.join(known)})")
    return args

"""tests/http/test_eventstream.py - codeq serve's event stream framing
(http/eventstream.c) against botocore's decoder and its InvokeCodeInterpreter parser.

The C encoder's messages (tests/tools/cq_eventstream.c) are read by botocore's
EventStreamBuffer, the decoder boto3 reads `invoke_code_interpreter`'s stream with, and
then by botocore's EventStream with the rest-json event parser over the output shape of
InvokeCodeInterpreter, which is what a boto3 user iterates over. Messages this file frames
itself (struct and zlib's CRC32, following the format description) go the other way, into
the C decoder, which must also refuse corrupt and truncated ones.
"""
import base64
import binascii
import json
import struct
import subprocess

import pytest
from botocore import parsers
from botocore.eventstream import (ChecksumMismatch, EventStream, EventStreamBuffer,
                                  EventStreamError)
from botocore.model import ServiceModel

from aws import EVENTSTREAM

RESULT = {
    "content": [{"type": "text", "text": "2"}],
    "structuredContent": {"stdout": "2\n", "stderr": "", "exitCode": 0, "executionTime": 0.012,
                          "taskId": "t-1", "taskStatus": "completed"},
    "isError": False,
}


def encode(*args, stdin=b""):
    p = subprocess.run([EVENTSTREAM, *args], input=stdin, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def decode_c(data, *args):
    p = subprocess.run([EVENTSTREAM, "decode", *args], input=data, capture_output=True, timeout=30)
    assert p.returncode in (0, 1), p.stderr
    lines = p.stdout.decode().splitlines()
    return [json.loads(x) for x in lines[:-1]], lines[-1]


def botocore_messages(data, chunk=None):
    buf = EventStreamBuffer()
    out = []
    chunk = chunk or len(data) or 1
    for i in range(0, len(data), chunk):
        buf.add_data(data[i:i + chunk])
        out.extend(buf)
    return out


def test_result_event_decodes_in_botocore():
    payload = json.dumps(RESULT).encode()
    data = encode("event", "result", stdin=payload)
    (msg,) = botocore_messages(data)
    assert msg.headers == {":event-type": "result", ":content-type": "application/json",
                           ":message-type": "event"}
    assert msg.payload == payload
    assert msg.prelude.total_length == len(data)


def test_a_stream_of_messages_in_small_chunks():
    data = b"".join(encode("event", "result", stdin=json.dumps({"content": [{"type": "text", "text": str(i) * i}]}).encode())
                    for i in range(50))
    for chunk in (1, 7, 4096):
        msgs = botocore_messages(data, chunk)
        assert [json.loads(m.payload)["content"][0]["text"] for m in msgs] == [str(i) * i for i in range(50)]


def test_every_header_type_decodes_in_botocore():
    spec = (b":message-type 7 event\nflag 0\noff 1\nb 2 -7\ns 3 -300\ni 4 -70000\n"
            b"l 5 -5000000000\nraw 6 \x00\x01bytes\nts 8 1752669296000\nid 9 0123456789abcdef\n\n"
            b"payload")
    (msg,) = botocore_messages(encode("headers", stdin=spec))
    h = msg.headers
    assert (h["flag"], h["off"], h["b"], h["s"], h["i"], h["l"]) == (True, False, -7, -300, -70000, -5000000000)
    assert h["raw"] == b"\x00\x01bytes" and h["ts"] == 1752669296000 and h["id"] == b"0123456789abcdef"
    assert msg.payload == b"payload"


# InvokeCodeInterpreter's output as botocore's service model bedrock-agentcore 2024-02-28
# describes it (only the shapes the stream needs; written from reading that model, whose
# JSON Debian 12's botocore 1.29 does not carry yet).
MODEL = {
    "version": "2.0",
    "metadata": {"apiVersion": "2024-02-28", "endpointPrefix": "bedrock-agentcore", "protocol": "rest-json",
                 "serviceId": "Bedrock AgentCore", "signatureVersion": "v4", "signingName": "bedrock-agentcore",
                 "uid": "bedrock-agentcore-2024-02-28"},
    "operations": {"InvokeCodeInterpreter": {
        "name": "InvokeCodeInterpreter",
        "http": {"method": "POST", "requestUri": "/code-interpreters/{codeInterpreterIdentifier}/tools/invoke"},
        "input": {"shape": "InvokeRequest"}, "output": {"shape": "InvokeResponse"}}},
    "shapes": {
        "InvokeRequest": {"type": "structure", "required": ["codeInterpreterIdentifier", "name"], "members": {
            "codeInterpreterIdentifier": {"shape": "String", "location": "uri", "locationName": "codeInterpreterIdentifier"},
            "sessionId": {"shape": "String", "location": "header", "locationName": "x-amzn-code-interpreter-session-id"},
            "name": {"shape": "String"}}},
        "InvokeResponse": {"type": "structure", "required": ["stream"], "payload": "stream", "members": {
            "sessionId": {"shape": "String", "location": "header", "locationName": "x-amzn-code-interpreter-session-id"},
            "stream": {"shape": "StreamOutput"}}},
        "StreamOutput": {"type": "structure", "eventstream": True, "members": {
            "result": {"shape": "Result"},
            "accessDeniedException": {"shape": "Error"}, "conflictException": {"shape": "Error"},
            "internalServerException": {"shape": "Error"}, "resourceNotFoundException": {"shape": "Error"},
            "serviceQuotaExceededException": {"shape": "Error"}, "throttlingException": {"shape": "Error"},
            "validationException": {"shape": "Error"}}},
        "Result": {"type": "structure", "event": True, "required": ["content"], "members": {
            "content": {"shape": "ContentList"}, "structuredContent": {"shape": "Structured"},
            "isError": {"shape": "Boolean"}}},
        "ContentList": {"type": "list", "member": {"shape": "Content"}},
        "Content": {"type": "structure", "required": ["type"], "members": {
            "type": {"shape": "String"}, "text": {"shape": "String"}, "data": {"shape": "Blob"},
            "mimeType": {"shape": "String"}, "name": {"shape": "String"}, "size": {"shape": "Long"}}},
        "Structured": {"type": "structure", "members": {
            "taskId": {"shape": "String"}, "taskStatus": {"shape": "String"}, "stdout": {"shape": "String"},
            "stderr": {"shape": "String"}, "exitCode": {"shape": "Integer"}, "executionTime": {"shape": "Double"}}},
        "Error": {"type": "structure", "exception": True, "members": {"message": {"shape": "String"}}},
        "String": {"type": "string"}, "Blob": {"type": "blob"}, "Boolean": {"type": "boolean"},
        "Integer": {"type": "integer"}, "Long": {"type": "long"}, "Double": {"type": "double"},
    },
}


class RawStream:
    """What botocore's EventStream reads: the HTTP body, as chunks."""

    def __init__(self, data, chunk=13):
        self.data, self.chunk = data, chunk

    def stream(self):
        for i in range(0, len(self.data), self.chunk):
            yield self.data[i:i + self.chunk]

    def close(self):
        pass


def events(data):
    """What boto3's invoke_code_interpreter returns as response["stream"]: botocore's
    rest-json parser over the operation's output shape, given the HTTP answer."""
    op = ServiceModel(MODEL, "bedrock-agentcore").operation_model("InvokeCodeInterpreter")
    assert op.has_event_stream_output
    response = {"status_code": 200, "body": RawStream(data),
                "headers": {"content-type": "application/vnd.amazon.eventstream",
                            "x-amzn-code-interpreter-session-id": "s1"},
                "context": {"operation_name": "InvokeCodeInterpreter"}}
    parsed = parsers.create_parser("rest-json").parse(response, op.output_shape)
    assert parsed["sessionId"] == "s1"
    assert isinstance(parsed["stream"], EventStream)
    return parsed["stream"]


def test_boto3_reads_the_result_event():
    png = bytes(range(256))
    result = dict(RESULT)
    result["content"] = RESULT["content"] + [
        {"type": "image", "mimeType": "image/png", "data": base64.b64encode(png).decode()}]
    data = encode("event", "result", stdin=json.dumps(result).encode()) * 2
    got = list(events(data))
    assert len(got) == 2
    r = got[0]["result"]
    assert r["content"][0] == {"type": "text", "text": "2"}
    assert r["content"][1]["data"] == png  # blobs come back as bytes
    assert r["structuredContent"] == RESULT["structuredContent"]
    assert r["isError"] is False


def test_boto3_raises_the_modelled_exception():
    data = (encode("event", "result", stdin=json.dumps(RESULT).encode())
            + encode("exception", "resourceNotFoundException", stdin=b'{"message":"no session s-1"}'))
    it = iter(events(data))
    assert next(it)["result"]["isError"] is False
    with pytest.raises(EventStreamError) as e:
        next(it)
    assert e.value.response["Error"] == {"Code": "resourceNotFoundException", "Message": "no session s-1"}


def test_unmodelled_error_message():
    spec = b":message-type 7 error\n:error-code 7 InternalFailure\n:error-message 7 worker lost\n\n"
    with pytest.raises(EventStreamError) as e:
        list(events(encode("headers", stdin=spec)))
    assert e.value.response["Error"] == {"Code": "InternalFailure", "Message": "worker lost"}


def test_botocore_refuses_what_c_would_refuse():
    """The CRCs the C encoder writes are the ones botocore checks: flipping a payload
    byte is caught by both sides."""
    data = bytearray(encode("event", "result", stdin=b'{"content":[]}'))
    data[-6] ^= 1
    with pytest.raises(ChecksumMismatch):
        botocore_messages(bytes(data))
    assert decode_c(bytes(data))[1] == "error: event stream: message CRC mismatch"


# ---- the C decoder on messages framed here ---------------------------------------------

def frame(headers, payload):
    """One message, framed by this test from the format's description."""
    h = b""
    for name, t, value in headers:
        h += bytes([len(name)]) + name + bytes([t])
        if t in (6, 7):
            h += struct.pack(">H", len(value)) + value
        elif t in (2, 3, 4, 5, 8):
            h += struct.pack({2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}[t], value)
        elif t == 9:
            h += value
    total = 16 + len(h) + len(payload)
    prelude = struct.pack(">II", total, len(h))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    body = prelude + h + payload
    return body + struct.pack(">I", binascii.crc32(body))


def test_c_decodes_python_framed_messages():
    m1 = frame([(b":message-type", 7, b"event"), (b":event-type", 7, b"result"), (b"n", 5, -2),
                (b"t", 0, None), (b"u", 9, b"x" * 16)], b'{"a":1}')
    m2 = frame([], b"")
    msgs, end = decode_c(m1 + m2)
    assert end == "end"
    assert msgs[0]["headers"] == {":message-type": [7, "event"], ":event-type": [7, "result"], "n": [5, -2],
                                  "t": [0, 1], "u": [9, base64.b64encode(b"x" * 16).decode()]}
    assert base64.b64decode(msgs[0]["payload"]) == b'{"a":1}'
    assert msgs[1] == {"headers": {}, "payload": ""}


def test_c_decoder_refuses_corruption_and_waits_for_truncation():
    m = frame([(b":message-type", 7, b"event")], b"payload")
    for i in range(len(m)):
        bad = bytearray(m)
        bad[i] ^= 0x20
        msgs, end = decode_c(bytes(bad))
        # a flipped length byte may also announce more than is there: it must never decode
        assert msgs == [] and (end.startswith("error: ") or end.startswith("partial")), (i, end)
    for n in range(1, len(m)):
        assert decode_c(m[:n]) == ([], f"partial {n}")


@pytest.mark.parametrize("what,message", [
    ("header name past the headers", frame([(b"abc", 7, b"v")], b"")[:12] + b"\x10abc"),
    ("unknown type", None),
    ("total below the minimum", None),
    ("over the maximum", None),
])
def test_c_decoder_refuses_malformed(what, message):
    def refix(raw):
        """Keeps the CRCs right, so that only the thing under test is wrong."""
        raw = bytearray(raw)
        raw[8:12] = struct.pack(">I", binascii.crc32(bytes(raw[:8])))
        raw[-4:] = struct.pack(">I", binascii.crc32(bytes(raw[:-4])))
        return bytes(raw)

    if what == "header name past the headers":
        good = frame([(b"abc", 7, b"v")], b"")
        raw = bytearray(good)
        raw[12] = 200  # name length past the headers section
        msgs, end = decode_c(refix(raw))
        assert end == "error: event stream: header name out of bounds"
    elif what == "unknown type":
        raw = bytearray(frame([(b"a", 7, b"v")], b""))
        raw[14] = 10
        assert decode_c(refix(raw))[1] == "error: event stream: unknown header type 10"
    elif what == "total below the minimum":
        raw = bytearray(frame([], b""))
        raw[0:4] = struct.pack(">I", 15)
        assert decode_c(refix(raw))[1].startswith("error: event stream: lengths out of bounds")
    else:
        raw = frame([], b"x" * 100)
        assert decode_c(raw, "100")[1].startswith("error: event stream: lengths out of bounds")
        assert decode_c(raw, "116")[1] == "end"

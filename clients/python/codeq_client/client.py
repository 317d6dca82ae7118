"""The synchronous codeq client: requests over Kafka, replies on a private topic.

The wire protocol is docs/fleet.md. A client produces ``codeq.v1.Request`` messages to
the request topic and consumes its own reply topic, where the fleet publishes ``chunk``
replies (live stdout/stderr) and one ``final`` reply per request. One background thread
polls the reply consumer and hands every reply to the call waiting for it; the asyncio
client (aio.py) shares this machinery and only differs in how a call waits.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
import uuid
from typing import (Any, Callable, Generic, Iterable, Iterator, Mapping, Optional, Sequence,
                    TypeVar, Union)

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from . import codeq_pb2 as pb
from .auth import Credentials, sign
from .claims import ClaimError, ClaimStore
from .security import kafka_security_config
from .results import (
    arguments_from_dict,
    error_code_name,
    result_to_dict,
    session_list_to_dict,
    session_to_dict,
    stream_name,
)

__all__ = [
    "Client",
    "Session",
    "code_session",
    "CodeqError",
    "RequestRefused",
    "SessionError",
    "TimeoutError",
    "OutputCallback",
    "fill_request",
    "request_key",
    "start_session_request",
    "list_sessions_request",
    "invoke_request",
    "session_reply",
    "session_list_reply",
    "invoke_reply",
]

log = logging.getLogger("codeq_client")

OutputCallback = Callable[[str, bytes], None]
"""Receives live output: the stream ("stdout" or "stderr") and the bytes of a chunk.
Chunk boundaries can split a UTF-8 character, hence bytes."""

DEFAULT_REQUEST_TOPIC = "codeq.requests"

# Final replies remembered per client to drop the copies docs/fleet.md allows.
_COMPLETED_IDS = 100_000
# How long an invoke waits beyond the call's own timeout: the worker answers a
# timed-out call itself (after interrupting the code, up to 2 s, or restarting the
# kernel), and that answer, not a client-side timeout, is the useful outcome.
_REPLY_MARGIN_S = 10.0
# Between checks of the stop flag; also the latency of delivery-failure reports.
_POLL_INTERVAL_S = 0.05
_TOPIC_CREATE_TIMEOUT_S = 15.0
# Room beside the claim threshold for the rest of a message: larger payloads travel
# through Redis (claims.py), so messages stay within a stock broker's 1 MB.
_ENVELOPE_BYTES = 64 << 10


# Kafka errors that no retry mends: start-up ends at once with them.
_REFUSED = (
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError.SASL_AUTHENTICATION_FAILED,
)


def _scram_note(error: KafkaError) -> str:
    # librdkafka before 2.6.1 repeats the client nonce in its SCRAM proof, which Kafka
    # 4.x refuses (librdkafka#4895) as "invalid credentials", not as what it is.
    if "SCRAM" in error.str() and confluent_kafka.libversion()[1] < 0x020601FF:
        return (
            f" (librdkafka {confluent_kafka.libversion()[0]} cannot log in to Kafka 4.x with "
            "SCRAM, fixed in 2.6.1: use sasl.mechanism PLAIN over SASL_SSL there)"
        )
    return ""


class CodeqError(Exception):
    """Base class of the errors this package raises (transport failures and the like).

    A tool that fails (code raising, a file not found, a call timing out in the
    sandbox) is not an exception: its result dict has ``isError`` set.
    """


class TimeoutError(CodeqError, TimeoutError):  # noqa: A001 - deliberately the builtin's name
    """No final reply arrived in time (or the reply consumer was not ready in time)."""


class RequestRefused(CodeqError):
    """The client refused a request before sending it, or could not read its reply's
    payload from Redis: ``code`` is LIMIT_EXCEEDED, INVALID_ARGUMENT, NOT_FOUND or
    INTERNAL, as the fleet would have said."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class SessionError(CodeqError):
    """A session operation was refused: the fleet answered with an error result.

    ``code`` is the error name ("NOT_FOUND", "LIMIT_EXCEEDED", ...), ``result`` the
    whole result dict.
    """

    def __init__(self, message: str, code: str, result: dict[str, Any]):
        super().__init__(message)
        self.code = code
        self.result = result


def fill_request(request: pb.Request, reply_topic: str, timeout: float) -> pb.Request:
    """Completes a request for sending, in place: a uuid4-hex request id when it has
    none, the client's reply topic, and a deadline ``timeout`` seconds from now when it
    has none (past it the fleet answers TIMED_OUT instead of running it)."""
    if not request.request_id:
        request.request_id = uuid.uuid4().hex
    request.reply_topic = reply_topic
    if request.deadline_unix_ms == 0:
        request.deadline_unix_ms = int(time.time() * 1000) + int(math.ceil(timeout * 1000))
    return request


def request_key(request: pb.Request) -> str:
    """The Kafka key of a request: its session id, so that one session's requests stay
    in one partition and in order, or its request id when it has no session."""
    return request.session_id or request.request_id


class _Call:
    """A request waiting for its final reply. Both callbacks run on the poll thread."""

    __slots__ = ("on_chunk", "on_final", "last_sequence", "reply_trace")

    def __init__(
        self,
        on_chunk: Optional[OutputCallback],
        on_final: Callable[[Union[pb.Response, BaseException]], None],
        reply_trace: Optional[dict[str, str]] = None,
    ):
        self.on_chunk = on_chunk
        self.on_final = on_final
        self.last_sequence = -1
        # Filled with the final reply's trace context headers, before on_final.
        self.reply_trace = reply_trace


# The W3C trace context headers (docs/fleet.md, "Trace context").
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(traceparent: Optional[str], tracestate: Optional[str]) -> list:
    """The Kafka headers of a request's trace context: none without a traceparent (the
    fleet then starts a trace of its own when it records spans)."""
    if not traceparent:
        return []
    headers = [("traceparent", traceparent.encode())]
    if tracestate:
        headers.append(("tracestate", tracestate.encode()))
    return headers


def with_trace(result: dict[str, Any], reply_trace: dict[str, str]) -> dict[str, Any]:
    """result with ``_meta`` carrying the reply's trace context (as an MCP result
    does), when the reply had one."""
    if reply_trace:
        result.setdefault("_meta", {}).update(reply_trace)
    return result


def _header(headers: Optional[list], name: str) -> Optional[str]:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return None


class Client:
    """A connection to a codeq fleet through Kafka.

    Args:
        brokers: Kafka bootstrap servers ("host:port,...").
        request_topic: where requests go (the dispatchers' topic).
        reply_topic: where this client's replies come; by default a private
            ``codeq.replies.<hex>`` topic, deleted by ``close()``. Either is created
            (one partition) when missing.
        client_id: Kafka client.id, shown in broker logs.
        default_timeout: seconds a call may take when it does not say.
        ready_timeout: seconds the constructor waits for the reply consumer to be
            assigned its partitions (see ``wait_ready``); None to not wait.
        redis, redis_prefix, claim_threshold: the fleet's Redis, for requests and
            replies too large for one Kafka message (claims.py; defaults from
            CODEQ_REDIS, CODEQ_REDIS_PREFIX, CODEQ_CLAIM_THRESHOLD). Connected only
            when a payload needs it.
        redis_options: Redis authentication and TLS, the keyword arguments of
            ``ClaimStore`` (username, password, password_file, tls, tls_ca, tls_cert,
            tls_key, tls_server_name); each defaults to its CODEQ_REDIS_* variable,
            the names the fleet's daemons read.
        credentials: the tenant key to sign every request with (auth.py; a fleet
            with keys takes only signed requests). By default from CODEQ_CREDENTIALS
            or CODEQ_TENANT, CODEQ_KEY_ID and CODEQ_KEY_SECRET; unsigned when none is
            set. The default reply topic is then ``codeq.replies.<tenant>.<hex>``.
        kafka_config: librdkafka's security properties for the producer, consumer
            and admin client (security.protocol, sasl.*, ssl.*; "<property>_file"
            reads a value from a file), over CODEQ_KAFKA_<PROPERTY> defaults from the
            environment (security.py; docs/fleet.md, "Kafka security").

    A client is thread-safe: any thread may issue calls, and calls run concurrently.
    Use it as a context manager or call ``close()``.
    """

    def __init__(
        self,
        brokers: str,
        request_topic: str = DEFAULT_REQUEST_TOPIC,
        reply_topic: Optional[str] = None,
        client_id: Optional[str] = None,
        default_timeout: float = 300.0,
        ready_timeout: Optional[float] = 30.0,
        redis: Optional[str] = None,
        redis_prefix: Optional[str] = None,
        claim_threshold: Optional[int] = None,
        redis_options: Optional[Mapping[str, Any]] = None,
        credentials: Optional[Credentials] = None,
        kafka_config: Optional[Mapping[str, Any]] = None,
    ):
        token = uuid.uuid4().hex
        try:
            security = kafka_security_config(kafka_config)
        except ValueError as e:
            raise CodeqError(f"Kafka security settings: {e}") from None
        # The last error a Kafka handle reported (_on_kafka_error): start-up stops at
        # one that no retry mends, and names it when it gives up otherwise.
        self._kafka_error: Optional[KafkaError] = None
        self._claims = ClaimStore(redis, redis_prefix, claim_threshold, **(redis_options or {}))
        self._credentials = credentials or Credentials.from_environment()
        self.request_topic = request_topic
        tenant = f"{self._credentials.tenant}." if self._credentials else ""
        self.reply_topic = reply_topic or f"codeq.replies.{tenant}{token}"
        self.default_timeout = default_timeout
        # Only a topic named for this client is known to be nobody else's to delete.
        self._owns_reply_topic = reply_topic is None
        client_id = client_id or "codeq-python"
        common = {
            "bootstrap.servers": brokers,
            "client.id": client_id,
            "socket.nagle.disable": True,
            "error_cb": self._on_kafka_error,
            **security,
        }
        try:
            self._producer = Producer(
                {
                    **common,
                    "linger.ms": 0,
                    # The fleet's producers use murmur2_random too, so keys land in the
                    # partitions a Java client would pick (docs/fleet.md).
                    "partitioner": "murmur2_random",
                    "acks": "all",
                    "enable.idempotence": True,
                    # One produce request in flight: with more, librdkafka 2.0.2 can
                    # report a request delivered that never reached the topic (the
                    # first batch to a partition just made, refused, and a later one
                    # taken; fleet/kafka.c says how). The request then got no answer.
                    "max.in.flight.requests.per.connection": 1,
                    "message.max.bytes": max(
                        1_000_000, self._claims.threshold + _ENVELOPE_BYTES
                    ),
                }
            )
            self._admin = AdminClient(common)
            self._consumer = Consumer(
                {
                    **common,
                    "group.id": f"codeq-client-{token}",
                    # A fresh group starts at the beginning, so replies published before
                    # the partition was assigned are still read.
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 10,
                    "enable.auto.commit": True,
                }
            )
        except KafkaException as e:  # librdkafka refused the settings: a missing password
            raise CodeqError(f"Kafka client settings: {e.args[0].str()}") from None
        self._lock = threading.Lock()
        self._pending: dict[str, _Call] = {}
        self._completed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._startup_done = threading.Event()
        self._startup_error: Optional[CodeqError] = None
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"codeq-client-{token[:8]}", daemon=True
        )
        self._thread.start()
        if ready_timeout is not None:
            try:
                self.wait_ready(ready_timeout)
            except BaseException:
                self.close()
                raise

    # ---- lifecycle ----------------------------------------------------------------

    def wait_ready(self, timeout: Optional[float] = 30.0) -> None:
        """Waits until the reply consumer has its partitions, so replies get read
        without delay. Raises TimeoutError, or CodeqError when the reply topic could
        not be set up."""
        if not self._startup_done.wait(timeout):
            raise TimeoutError(
                f"the reply topic {self.reply_topic!r} was not assigned within {timeout} s "
                f"(is the broker reachable?{self._last_kafka_error()})"
            )
        if self._startup_error is not None:
            raise self._startup_error

    def close(self) -> None:
        """Stops the poll thread, fails calls still waiting, flushes the producer and
        deletes the private reply topic. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._thread.join()
        self._fail_pending(CodeqError("the client was closed"))
        self._consumer.close()
        self._producer.flush(5.0)
        # Without an assignment the topic may not exist, or the brokers not answer.
        if self._owns_reply_topic and self._startup_done.is_set() and not self._startup_error:
            self._delete_reply_topic()
        self._claims.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # ---- requests -------------------------------------------------------------------

    def request(
        self,
        request: pb.Request,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        reply_trace: Optional[dict[str, str]] = None,
    ) -> pb.Response:
        """Sends one request and returns its final Response.

        ``traceparent`` (and ``tracestate``): the caller's W3C trace context, sent as
        the request's headers; the fleet's spans continue that trace. ``reply_trace``,
        a dict, gets the final reply's ``traceparent`` and ``tracestate`` (the fleet's
        span of the request, in the same trace).

        ``request`` is completed in place (see ``fill_request``); sending a request id
        again is a retry, answered with the stored result. ``on_output`` gets
        the live output chunks, in order, on the client's poll thread (so it should
        return quickly). Raises TimeoutError when no final reply comes within
        ``timeout`` seconds (default: the client's default_timeout), CodeqError when
        the request could not be sent.
        """
        timeout = self.default_timeout if timeout is None else timeout
        done = threading.Event()
        outcome: list[Union[pb.Response, BaseException]] = []

        def finish(value: Union[pb.Response, BaseException]) -> None:
            outcome.append(value)
            done.set()

        request_id = self._send(
            request, timeout, on_output, finish, trace_headers(traceparent, tracestate),
            reply_trace,
        )
        if not done.wait(timeout):
            self._forget(request_id)
            # The reply may have landed between the wait and the forget.
            if not outcome:
                raise TimeoutError(f"no reply to request {request_id} within {timeout} s")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def start_session(
        self,
        name: Optional[str] = None,
        session_timeout_seconds: Optional[int] = None,
        memory: Optional[int] = None,
        pids: Optional[int] = None,
        cpus: Optional[float] = None,
        disk: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        client_token: Optional[str] = None,
        timeout: Optional[float] = None,
        network_mode: Optional[str] = None,
        network_allow: Optional[Sequence[str]] = None,
        code_interpreter_identifier: Optional[str] = None,
    ) -> "Session":
        """Starts a session and returns it. ``memory`` and ``disk`` are bytes, ``cpus``
        cores (fractions allowed); unset limits are the fleet's defaults. A repeated
        ``client_token`` returns the session it started the first time.
        ``network_mode`` is "NONE", "PUBLIC" or "ALLOWLIST" (None: the workers' default,
        network_default) and ``network_allow`` the ALLOWLIST's destinations (NAME,
        *.NAME, IP, CIDR, each with an optional :PORT). Raises SessionError when the
        fleet refuses (INVALID_ARGUMENT naming the rule for a request beyond the
        workers' network policy). ``code_interpreter_identifier`` names the code
        interpreter the session runs on (AgentCore's codeInterpreterIdentifier; None:
        codeq.default); one that the fleet does not have, or deleted, is NOT_FOUND. A
        session on an interpreter whose runtime is still being built waits for it."""
        request = start_session_request(
            name, session_timeout_seconds, memory, pids, cpus, disk, env, client_token,
            network_mode, network_allow, code_interpreter_identifier,
        )
        info = session_reply(self.request(request, timeout), "startSession")
        return Session(self, info)

    def get_session(self, session_id: str, timeout: Optional[float] = None) -> dict[str, Any]:
        """The session's record (sessionId, name, status, createdAt, ...). Raises
        SessionError (code NOT_FOUND) for an unknown session."""
        request = pb.Request(session_id=session_id, get_session=pb.GetSession())
        return session_reply(self.request(request, timeout), "getSession")

    def list_sessions(
        self,
        status: Optional[str] = None,
        max_results: Optional[int] = None,
        next_token: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> dict[str, Any]:
        """``{"items": [session, ...], "nextToken": ...}``, newest first; ``status``
        "READY" or "TERMINATED" filters, ``nextToken`` is present when there is
        another page."""
        request = list_sessions_request(status, max_results, next_token)
        return session_list_reply(self.request(request, timeout))

    def stop_session(self, session_id: str, timeout: Optional[float] = None) -> dict[str, Any]:
        """Stops the session and returns its final record (status TERMINATED)."""
        request = pb.Request(session_id=session_id, stop_session=pb.StopSession())
        return session_reply(self.request(request, timeout), "stopSession")

    def session(self, session_id: str) -> "Session":
        """A handle on an existing session (no request is made)."""
        return Session(self, {"sessionId": session_id})

    def cancel(self, session_id: str, request_id: str, timeout: Optional[float] = None) -> str:
        """Cancels the session's call ``request_id`` (a request sent with that id): a
        running cell is interrupted as on its timeout and keeps its variables, a command
        is killed, a queued call does not run. The call still gets its own final reply,
        which says so. Returns what the fleet found ("cancelled: the call was running",
        "... queued", or "nothing to cancel")."""
        request = cancel_request(session_id, request_id)
        return invoke_reply(self.request(request, timeout))["content"][0]["text"]

    def _cancel_quietly(self, session_id: str, request_id: str) -> None:
        """Sends a cancel for the call without waiting for its answer (an awaiting task
        that was cancelled); nothing is kept waiting for the answer past a minute."""
        try:
            cancel_id = self._send(cancel_request(session_id, request_id), 60.0, None,
                                   lambda _outcome: None)
        except CodeqError as e:
            log.warning("the cancellation of request %s was not sent: %s", request_id, e)
            return
        timer = threading.Timer(60.0, self._forget, (cancel_id,))
        timer.daemon = True
        timer.start()

    def invoke(
        self,
        session_id: str,
        tool: str,
        arguments: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> dict[str, Any]:
        """Runs one AgentCore tool in a session; see ``Session.invoke``."""
        request, wait = invoke_request(session_id, tool, arguments, timeout, self.default_timeout)
        reply_trace: dict[str, str] = {}
        response = self.request(
            request, wait, on_output, traceparent=traceparent, tracestate=tracestate,
            reply_trace=reply_trace,
        )
        return with_trace(invoke_reply(response), reply_trace)

    # ---- the machinery shared with the asyncio client ---------------------------------

    def _send(
        self,
        request: pb.Request,
        timeout: float,
        on_chunk: Optional[OutputCallback],
        on_final: Callable[[Union[pb.Response, BaseException]], None],
        headers: Optional[list] = None,
        reply_trace: Optional[dict[str, str]] = None,
    ) -> str:
        """Registers the call and produces the request (with ``headers``); returns its
        request id. The caller waits for on_final and calls ``_forget`` if it stops
        waiting; ``reply_trace`` gets the final reply's trace context headers."""
        fill_request(request, self.reply_topic, timeout)
        request_id = request.request_id
        if self._credentials is not None:
            request.tenant = self._credentials.tenant
        try:
            wire = self._claims.outgoing(request)
        except ClaimError as e:
            raise RequestRefused(f"request {request_id}: {e}", e.code) from e
        if self._credentials is not None:
            wire = sign(wire, self._credentials)
        with self._lock:
            # Checked under the lock that close() and a failed start take before they
            # fail the pending calls: a call is either refused here or failed there.
            if self._closed:
                raise CodeqError("the client is closed")
            if self._startup_error is not None:
                raise self._startup_error
            if request_id in self._pending:
                raise CodeqError(f"request {request_id} is already waiting for its reply")
            # Sending an id again is a deliberate retry: its (identical) final reply
            # must reach this call, not be dropped as a copy of the earlier one.
            self._completed.pop(request_id, None)
            self._pending[request_id] = _Call(on_chunk, on_final, reply_trace)
        try:
            self._producer.produce(
                self.request_topic,
                value=wire.SerializeToString(),
                key=request_key(request),
                headers=headers or None,
                on_delivery=lambda err, _msg: self._delivered(request_id, err),
            )
        except (BufferError, KafkaException) as e:
            self._forget(request_id)
            raise CodeqError(f"could not send request {request_id}: {e}") from e
        return request_id

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _delivered(self, request_id: str, err: Optional[KafkaError]) -> None:
        # A request the broker refused will never be answered: fail its call now
        # rather than let it run into its timeout.
        if err is not None:
            self._complete(request_id, CodeqError(f"could not send request {request_id}: {err}"))

    def _complete(self, request_id: str, outcome: Union[pb.Response, BaseException]) -> None:
        with self._lock:
            call = self._pending.pop(request_id, None)
            if call is None:
                return
            self._completed[request_id] = None
            if len(self._completed) > _COMPLETED_IDS:
                self._completed.popitem(last=False)
        call.on_final(outcome)

    def _fail_pending(self, error: CodeqError) -> None:
        with self._lock:
            calls = list(self._pending.values())
            self._pending.clear()
        for call in calls:
            call.on_final(error)

    # ---- the poll thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._ensure_reply_topic()
            self._consumer.subscribe([self.reply_topic], on_assign=self._on_assign)
            # librdkafka learns a topic's partitions at its next periodic metadata
            # refresh, about a second after the first message to it; asking now makes
            # the first request leave at once (as the fleet's own producers do).
            try:
                self._producer.list_topics(self.request_topic, timeout=_TOPIC_CREATE_TIMEOUT_S)
            except KafkaException as e:
                log.warning("metadata of %s: %s", self.request_topic, e)
        except CodeqError as e:
            with self._lock:
                self._startup_error = e
            self._startup_done.set()
            self._fail_pending(e)
            return
        while not self._stop.is_set():
            # Serves the producer's delivery reports (failures complete calls early).
            self._producer.poll(0)
            try:
                message = self._consumer.poll(_POLL_INTERVAL_S)
            except KafkaException as e:
                log.warning("polling the reply topic failed: %s", e)
                continue
            if message is None:
                continue
            if message.error() is not None:
                log.warning("reply topic %s: %s", self.reply_topic, message.error())
                continue
            try:
                self._on_message(message)
            except Exception:
                # A failing output callback must not stop replies for everyone else.
                log.exception("handling a reply failed")

    def _ensure_reply_topic(self) -> None:
        # Created explicitly rather than left to auto-creation: a consumer does not
        # create the topics it subscribes to, and brokers often disable it anyway.
        # One partition: nobody but this client reads it.
        future = self._admin.create_topics(
            [NewTopic(self.reply_topic, 1)], operation_timeout=_TOPIC_CREATE_TIMEOUT_S
        )[self.reply_topic]
        give_up = time.monotonic() + _TOPIC_CREATE_TIMEOUT_S
        # Waited for in steps, so that close() need not sit out unreachable brokers;
        # polling the admin client serves _on_kafka_error.
        while not future.done():
            self._admin.poll(_POLL_INTERVAL_S)
            error = self._kafka_error
            if error is not None and error.code() in _REFUSED:
                raise CodeqError(
                    f"could not create the reply topic {self.reply_topic!r}: Kafka refused "
                    "the connection (check the security settings: kafka_config, "
                    f"CODEQ_KAFKA_*): {error.str()}{_scram_note(error)}"
                )
            if self._stop.is_set() or time.monotonic() > give_up:
                raise CodeqError(
                    f"could not create the reply topic {self.reply_topic!r}: no broker "
                    f"answered{self._last_kafka_error()}"
                )
        try:
            future.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise CodeqError(f"could not create the reply topic {self.reply_topic!r}: {e}")

    def _on_kafka_error(self, error: KafkaError) -> None:
        # Runs in poll() of any of the client's Kafka handles.
        self._kafka_error = error
        log.warning("kafka: %s", error.str())

    def _last_kafka_error(self) -> str:
        error = self._kafka_error
        return f"; last Kafka error: {error.str()}" if error is not None else ""

    def _delete_reply_topic(self) -> None:
        futures = self._admin.delete_topics([self.reply_topic], operation_timeout=5.0)
        try:
            futures[self.reply_topic].result(5.0)
        except Exception as e:
            log.warning("could not delete the reply topic %s: %s", self.reply_topic, e)

    def _on_assign(self, _consumer: Consumer, partitions: list) -> None:
        if partitions:
            self._startup_done.set()

    def _on_message(self, message: Any) -> None:
        response = pb.Response()
        try:
            response.ParseFromString(message.value() or b"")
        except Exception as e:  # protobuf's DecodeError; other fleets' garbage
            log.warning("undecodable reply at offset %s: %s", message.offset(), e)
            return
        headers = message.headers()
        key = message.key()
        request_id = (
            _header(headers, "request_id")
            or (key.decode("utf-8", "replace") if key else "")
            or response.request_id
        )
        kind = _header(headers, "codeq-kind") or (
            "chunk" if response.WhichOneof("payload") == "chunk" else "final"
        )
        if kind == "chunk":
            self._on_chunk(request_id, response.chunk)
            return
        with self._lock:
            call = self._pending.get(request_id)
            if call is None:
                return  # a copy of a reply already had, or a call that gave up
        if call.reply_trace is not None:
            for name in TRACE_HEADERS:
                value = _header(headers, name)
                if value:
                    call.reply_trace[name] = value
        # A reply too large for Kafka is read from Redis here, on the poll thread:
        # other calls' replies wait meanwhile (about a second for 100 MB on loopback).
        try:
            outcome: Union[pb.Response, BaseException] = self._claims.incoming(response)
        except ClaimError as e:
            outcome = RequestRefused(f"reply to request {request_id}: {e}", e.code)
        self._complete(request_id, outcome)

    def _on_chunk(self, request_id: str, chunk: pb.OutputChunk) -> None:
        with self._lock:
            call = self._pending.get(request_id)
            # One request's replies share a key, hence a partition, hence an order:
            # a sequence at or below the last delivered one can only be a copy.
            if call is None or chunk.sequence <= call.last_sequence:
                return
            call.last_sequence = chunk.sequence
        if call.on_chunk is not None and chunk.data:
            call.on_chunk(stream_name(chunk.stream), chunk.data)


# ---- requests and replies, shared with aio.py ------------------------------------------


def start_session_request(
    name: Optional[str],
    session_timeout_seconds: Optional[int],
    memory: Optional[int],
    pids: Optional[int],
    cpus: Optional[float],
    disk: Optional[int],
    env: Optional[Mapping[str, str]],
    client_token: Optional[str],
    network_mode: Optional[str] = None,
    network_allow: Optional[Sequence[str]] = None,
    code_interpreter_identifier: Optional[str] = None,
) -> pb.Request:
    """The Request of a startSession (unset arguments are zero: the fleet's default)."""
    modes = {None: pb.NETWORK_MODE_UNSPECIFIED, "NONE": pb.NETWORK_MODE_NONE,
             "PUBLIC": pb.NETWORK_MODE_PUBLIC, "ALLOWLIST": pb.NETWORK_MODE_ALLOWLIST}
    if network_mode not in modes:
        raise ValueError(f"network_mode {network_mode!r} is not NONE, PUBLIC or ALLOWLIST")
    if isinstance(network_allow, str):
        raise ValueError("network_allow is a list of destinations, not one string")
    start = pb.StartSession(
        network=modes[network_mode],
        network_allow=list(network_allow or []),
        name=name or "",
        session_timeout_seconds=session_timeout_seconds or 0,
        client_token=client_token or "",
        env=dict(env or {}),
        code_interpreter_identifier=code_interpreter_identifier or "",
        limits=pb.Limits(
            memory_bytes=memory or 0,
            pids=pids or 0,
            cpu_millis=round(cpus * 1000) if cpus else 0,
            disk_bytes=disk or 0,
        ),
    )
    return pb.Request(start_session=start)


def list_sessions_request(
    status: Optional[str], max_results: Optional[int], next_token: Optional[str]
) -> pb.Request:
    """The Request of a listSessions; ``status`` is "READY", "TERMINATED" or None."""
    statuses = {
        None: pb.SESSION_STATUS_UNSPECIFIED,
        "READY": pb.SESSION_STATUS_READY,
        "TERMINATED": pb.SESSION_STATUS_TERMINATED,
    }
    if status not in statuses:
        raise ValueError(f"status {status!r} is not READY or TERMINATED")
    listing = pb.ListSessions(
        status=statuses[status], max_results=max_results or 0, next_token=next_token or ""
    )
    return pb.Request(list_sessions=listing)


def invoke_request(
    session_id: str,
    tool: str,
    arguments: Optional[Mapping[str, Any]],
    timeout: Optional[float],
    default_timeout: float,
) -> tuple[pb.Request, float]:
    """The Request of a tool call and how long to wait for its reply.

    The call's timeout (``timeout``, else the arguments' ``timeout``, else the
    client's default) always goes in the arguments, so the worker enforces it and
    answers TIMED_OUT itself; the client waits that long plus a margin for the answer.
    """
    args = arguments_from_dict(arguments)
    if timeout is not None:
        args.timeout = timeout
    elif args.timeout <= 0:
        args.timeout = default_timeout
    invoke = pb.Invoke(tool=tool, arguments=args)
    return pb.Request(session_id=session_id, invoke=invoke), args.timeout + _REPLY_MARGIN_S


def _result_message(result: dict[str, Any]) -> str:
    error = result.get("_codeq_error", {})
    texts = [b["text"] for b in result["content"] if b["type"] == "text" and b["text"]]
    return error.get("message") or "; ".join(texts) or "the request failed"


def _payload(response: pb.Response, expected: str, operation: str) -> Any:
    """The expected payload of a final reply; an error result raises SessionError."""
    kind = response.WhichOneof("payload")
    if kind == expected:
        return getattr(response, expected)
    if kind == "result":
        result = result_to_dict(response.result)
        code = error_code_name(response.result.error_code)
        raise SessionError(f"{operation}: {_result_message(result)}", code, result)
    raise CodeqError(f"{operation}: expected a {expected} reply, got {kind or 'an empty one'}")


def session_reply(response: pb.Response, operation: str) -> dict[str, Any]:
    """The session record of a start/get/stop session reply."""
    return session_to_dict(_payload(response, "session", operation))


def session_list_reply(response: pb.Response) -> dict[str, Any]:
    """The listing of a listSessions reply."""
    return session_list_to_dict(_payload(response, "sessions", "listSessions"))


def cancel_request(session_id: str, request_id: str) -> pb.Request:
    return pb.Request(session_id=session_id, cancel_call=pb.CancelCall(request_id=request_id))


def invoke_reply(response: pb.Response) -> dict[str, Any]:
    """The result dict of a tool call's reply (an error result is still a result)."""
    if response.WhichOneof("payload") != "result":
        raise CodeqError(f"a tool call got a {response.WhichOneof('payload')} reply")
    return result_to_dict(response.result)


# ---- sessions --------------------------------------------------------------------------

_R = TypeVar("_R")


class _Tools(Generic[_R]):
    """The AgentCore tools as methods, over ``invoke``; the result type _R is a dict
    for Session and an awaitable of one for AsyncSession."""

    id: str

    def invoke(
        self,
        tool: str,
        arguments: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> _R:
        raise NotImplementedError

    def execute_code(
        self,
        code: str,
        language: str = "python",
        clear_context: bool = False,
        *,
        runtime: Optional[str] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> _R:
        """Runs code in the session's kernel for ``language`` (python, javascript,
        typescript); variables persist between calls unless ``clear_context``.
        ``traceparent``/``tracestate``: see ``Session.invoke``."""
        arguments = {
            "code": code,
            "language": language,
            "clearContext": clear_context,
            "runtime": runtime,
        }
        return self.invoke(
            "executeCode", arguments, timeout, on_output, **_trace_kwargs(traceparent, tracestate)
        )

    def execute_command(
        self,
        command: str,
        *,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> _R:
        """Runs a shell command in /workspace; stdout, stderr and exitCode kept apart."""
        return self.invoke(
            "executeCommand", {"command": command}, timeout, on_output,
            **_trace_kwargs(traceparent, tracestate),
        )

    def start_command_execution(self, command: str, *, timeout: Optional[float] = None) -> _R:
        """Starts a command in the background; structuredContent.taskId names it."""
        return self.invoke("startCommandExecution", {"command": command}, timeout)

    def get_task(self, task_id: str, *, timeout: Optional[float] = None) -> _R:
        """A background task's status and output so far."""
        return self.invoke("getTask", {"taskId": task_id}, timeout)

    def stop_task(self, task_id: str, *, timeout: Optional[float] = None) -> _R:
        """Stops a background task."""
        return self.invoke("stopTask", {"taskId": task_id}, timeout)

    def write_files(
        self, files: Mapping[str, Union[str, bytes]], *, timeout: Optional[float] = None
    ) -> _R:
        """Writes files (path -> text, or bytes for binary content) into the workspace."""
        content = [
            {"path": path, "text": data} if isinstance(data, str) else {"path": path, "blob": data}
            for path, data in files.items()
        ]
        return self.invoke("writeFiles", {"content": content}, timeout)

    def read_files(self, paths: Iterable[str], *, timeout: Optional[float] = None) -> _R:
        """Reads files: a resource block each, text when valid UTF-8, a blob otherwise."""
        return self.invoke("readFiles", {"paths": _path_list(paths)}, timeout)

    def list_files(
        self, directory_path: Optional[str] = None, *, timeout: Optional[float] = None
    ) -> _R:
        """Lists one directory of the workspace (its root by default)."""
        return self.invoke("listFiles", {"directoryPath": directory_path}, timeout)

    def remove_files(self, paths: Iterable[str], *, timeout: Optional[float] = None) -> _R:
        """Removes files and directories (recursively)."""
        return self.invoke("removeFiles", {"paths": _path_list(paths)}, timeout)


def _trace_kwargs(traceparent: Optional[str], tracestate: Optional[str]) -> dict[str, str]:
    """The trace context arguments of invoke, only when given: an invoke written before
    they existed (a subclass's) keeps working for calls without them."""
    kwargs = {}
    if traceparent is not None:
        kwargs["traceparent"] = traceparent
    if tracestate is not None:
        kwargs["tracestate"] = tracestate
    return kwargs


def _path_list(paths: Iterable[str]) -> list[str]:
    if isinstance(paths, str):
        raise TypeError("paths must be a list of strings, not a single string")
    return list(paths)


class Session(_Tools[dict]):
    """A session of a Client: ``id``, ``info`` (the record it was started or opened
    with), and the AgentCore tools as methods returning result dicts."""

    def __init__(self, client: Client, info: dict[str, Any]):
        self.client = client
        self.info = info
        self.id: str = info["sessionId"]

    def invoke(
        self,
        tool: str,
        arguments: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> dict[str, Any]:
        """Runs one AgentCore tool (executeCode, executeCommand, readFiles, listFiles,
        removeFiles, writeFiles, startCommandExecution, getTask, stopTask).

        ``arguments`` uses AgentCore's names (code, language, clearContext, runtime,
        command, paths, content, directoryPath, taskId, timeout). ``timeout`` (seconds)
        overrides the arguments' timeout; the worker enforces it. Returns
        ``{"content", "structuredContent"?, "isError"}`` plus ``_codeq_error`` when the
        service failed; raises only for transport problems and TimeoutError.

        ``traceparent`` (and ``tracestate``): the caller's W3C trace context; the
        fleet's spans of the call continue it, and the result's
        ``_meta["traceparent"]`` is the fleet's span of the request, in the same trace
        (present whenever the request had a context or the fleet records spans).
        """
        return self.client.invoke(
            self.id, tool, arguments, timeout, on_output, traceparent=traceparent,
            tracestate=tracestate,
        )

    def stop(self, timeout: Optional[float] = None) -> dict[str, Any]:
        """Stops the session; returns its final record."""
        return self.client.stop_session(self.id, timeout)

    def __repr__(self) -> str:
        return f"Session({self.id!r})"


@contextlib.contextmanager
def code_session(
    brokers: Optional[str] = None,
    client: Optional[Client] = None,
    *,
    request_topic: Optional[str] = None,
    **start_kwargs: Any,
) -> Iterator[Session]:
    """A session for the ``with`` block, stopped at its end.

    Give either ``brokers`` (a client is made and closed around the block; its
    requests go to ``request_topic``, by default "codeq.requests") or an open
    ``client`` (which has its own request topic). ``start_kwargs`` go to
    ``Client.start_session``.
    """
    if (brokers is None) == (client is None):
        raise ValueError("give either brokers or client")
    if client is not None and request_topic is not None:
        raise ValueError("request_topic goes with brokers; a client has its own")
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(
                Client(brokers, request_topic=request_topic or DEFAULT_REQUEST_TOPIC)
            )
        session = client.start_session(**start_kwargs)
        try:
            yield session
        finally:
            session.stop()

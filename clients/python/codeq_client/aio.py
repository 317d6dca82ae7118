"""The asyncio codeq client.

It runs on the synchronous client's machinery (one producer, one reply consumer and
its poll thread); only the waiting differs: the poll thread completes an asyncio
future through ``loop.call_soon_threadsafe``, and output callbacks are called on the
event loop, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Optional, Sequence, Union

from . import codeq_pb2 as pb
from .auth import Credentials
from .client import (
    DEFAULT_REQUEST_TOPIC,
    Client,
    OutputCallback,
    TimeoutError,
    _Tools,
    cancel_request,
    invoke_reply,
    invoke_request,
    list_sessions_request,
    session_list_reply,
    session_reply,
    start_session_request,
    trace_headers,
    with_trace,
)

__all__ = ["AsyncClient", "AsyncSession", "async_code_session"]


def _settle(future: asyncio.Future, outcome: Union[pb.Response, BaseException]) -> None:
    # The waiter may have given up (timeout, cancellation) before the reply came.
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None]) -> Callable[..., None]:
    """fn, made callable from the poll thread: it runs on loop, calls in their order."""

    def call(*args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    return call


class AsyncClient:
    """A connection to a codeq fleet for asyncio code; the arguments are Client's.

    Constructing it does not wait for the reply consumer: ``async with`` does, or
    ``await client.wait_ready()``. Close it with ``await client.close()``.
    """

    def __init__(
        self,
        brokers: str,
        request_topic: str = DEFAULT_REQUEST_TOPIC,
        reply_topic: Optional[str] = None,
        client_id: Optional[str] = None,
        default_timeout: float = 300.0,
        redis: Optional[str] = None,
        redis_prefix: Optional[str] = None,
        claim_threshold: Optional[int] = None,
        credentials: Optional[Credentials] = None,
        redis_options: Optional[Mapping[str, Any]] = None,
        kafka_config: Optional[Mapping[str, Any]] = None,
    ):
        self._client = Client(
            brokers,
            request_topic=request_topic,
            reply_topic=reply_topic,
            client_id=client_id,
            default_timeout=default_timeout,
            ready_timeout=None,
            redis=redis,
            redis_prefix=redis_prefix,
            claim_threshold=claim_threshold,
            credentials=credentials,
            redis_options=redis_options,
            kafka_config=kafka_config,
        )

    @property
    def reply_topic(self) -> str:
        return self._client.reply_topic

    @property
    def default_timeout(self) -> float:
        return self._client.default_timeout

    async def wait_ready(self, timeout: Optional[float] = 30.0) -> None:
        """Waits until the reply consumer has its partitions (see Client.wait_ready)."""
        await asyncio.get_running_loop().run_in_executor(None, self._client.wait_ready, timeout)

    async def close(self) -> None:
        """Closes the client (see Client.close) without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self._client.close)

    async def __aenter__(self) -> "AsyncClient":
        try:
            await self.wait_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def request(
        self,
        request: pb.Request,
        timeout: Optional[float] = None,
        on_output: Optional[OutputCallback] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        reply_trace: Optional[dict[str, str]] = None,
    ) -> pb.Response:
        """Sends one request and returns its final Response (see Client.request, which
        explains the trace context arguments); ``on_output`` is called on the event
        loop. A tool call whose task is cancelled (``task.cancel()``,
        ``asyncio.wait_for``) is cancelled in the fleet too: its cell is interrupted,
        keeping the session's variables."""
        timeout = self._client.default_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        finish = _on_loop(loop, functools.partial(_settle, future))
        on_chunk = _on_loop(loop, on_output) if on_output is not None else None
        request_id = self._client._send(
            request, timeout, on_chunk, finish, trace_headers(traceparent, tracestate),
            reply_trace,
        )
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply to request {request_id} within {timeout} s") from None
        except asyncio.CancelledError:
            # Nobody waits for the call any more: it must not go on holding its
            # session (the next call of the session would wait behind it).
            # (wait_for cancels the future with the task: only a future that holds the
            # final reply means the call ended.)
            if request.WhichOneof("operation") == "invoke" and (future.cancelled() or
                                                                 not future.done()):
                self._client._cancel_quietly(request.session_id, request_id)
            raise
        finally:
            self._client._forget(request_id)

    async def start_session(
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
    ) -> "AsyncSession":
        """Starts a session (see Client.start_session)."""
        request = start_session_request(
            name, session_timeout_seconds, memory, pids, cpus, disk, env, client_token,
            network_mode, network_allow, code_interpreter_identifier,
        )
        info = session_reply(await self.request(request, timeout), "startSession")
        return AsyncSession(self, info)

    async def get_session(self, session_id: str, timeout: Optional[float] = None) -> dict[str, Any]:
        """The session's record (see Client.get_session)."""
        request = pb.Request(session_id=session_id, get_session=pb.GetSession())
        return session_reply(await self.request(request, timeout), "getSession")

    async def list_sessions(
        self,
        status: Optional[str] = None,
        max_results: Optional[int] = None,
        next_token: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> dict[str, Any]:
        """One page of sessions (see Client.list_sessions)."""
        request = list_sessions_request(status, max_results, next_token)
        return session_list_reply(await self.request(request, timeout))

    async def stop_session(self, session_id: str, timeout: Optional[float] = None) -> dict[str, Any]:
        """Stops the session; returns its final record."""
        request = pb.Request(session_id=session_id, stop_session=pb.StopSession())
        return session_reply(await self.request(request, timeout), "stopSession")

    async def cancel(self, session_id: str, request_id: str,
                     timeout: Optional[float] = None) -> str:
        """Cancels the session's call ``request_id`` (see Client.cancel)."""
        response = await self.request(cancel_request(session_id, request_id), timeout)
        return invoke_reply(response)["content"][0]["text"]

    def session(self, session_id: str) -> "AsyncSession":
        """A handle on an existing session (no request is made)."""
        return AsyncSession(self, {"sessionId": session_id})

    async def invoke(
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
        """Runs one AgentCore tool in a session (see Session.invoke)."""
        request, wait = invoke_request(
            session_id, tool, arguments, timeout, self._client.default_timeout
        )
        reply_trace: dict[str, str] = {}
        response = await self.request(
            request, wait, on_output, traceparent=traceparent, tracestate=tracestate,
            reply_trace=reply_trace,
        )
        return with_trace(invoke_reply(response), reply_trace)


class AsyncSession(_Tools[Awaitable[dict]]):
    """A session of an AsyncClient; the tool methods (execute_code, ...) are
    Session's, returning awaitables of the result dicts."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]):
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
    ) -> Awaitable[dict[str, Any]]:
        """Runs one AgentCore tool (see Session.invoke)."""
        return self.client.invoke(
            self.id, tool, arguments, timeout, on_output, traceparent=traceparent,
            tracestate=tracestate,
        )

    def stop(self, timeout: Optional[float] = None) -> Awaitable[dict[str, Any]]:
        """Stops the session; returns its final record."""
        return self.client.stop_session(self.id, timeout)

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"


@contextlib.asynccontextmanager
async def async_code_session(
    brokers: Optional[str] = None,
    client: Optional[AsyncClient] = None,
    *,
    request_topic: Optional[str] = None,
    **start_kwargs: Any,
) -> AsyncIterator[AsyncSession]:
    """A session for the ``async with`` block, stopped at its end (see code_session:
    ``request_topic`` goes with ``brokers``)."""
    if (brokers is None) == (client is None):
        raise ValueError("give either brokers or client")
    if client is not None and request_topic is not None:
        raise ValueError("request_topic goes with brokers; a client has its own")
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(
                AsyncClient(brokers, request_topic=request_topic or DEFAULT_REQUEST_TOPIC)
            )
        session = await client.start_session(**start_kwargs)
        try:
            yield session
        finally:
            await session.stop()

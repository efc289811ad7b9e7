"""A tiny HTTP/1.1 server for tests (anyio + h11, asyncio and trio): records every request
and answers with scripted status codes, on 127.0.0.1 and a free port."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import anyio
import h11
from anyio.abc import SocketListener, SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: A scripted status that closes the connection without answering.
DROP = 0


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """``async with HttpReceiver([503, 200]) as rx``: the first request gets 503, the
    second 200, later ones ``default``; ``await rx.next()`` is the next request."""

    def __init__(self, statuses: Iterable[int] = (), *, default: int = 204) -> None:
        self.statuses = list(statuses)
        self.default = default
        self.requests: list[Request] = []
        send, receive = anyio.create_memory_object_stream[Request](1000)
        self._send: MemoryObjectSendStream[Request] = send
        self._receive: MemoryObjectReceiveStream[Request] = receive
        self._tg: TaskGroup | None = None
        self._listener: SocketListener | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HttpReceiver:
        self._listener = listener = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=0
        )
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._handle)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(kind, exc, tb)
        if self._listener is not None:
            await self._listener.aclose()
        self._send.close()
        self._receive.close()

    async def next(self, timeout: float = 10.0) -> Request:
        with anyio.fail_after(timeout):
            return await self._receive.receive()

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            request: h11.Request | None = None
            body = b""
            for _ in range(10_000):  # bounded: requests and chunks per connection
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(await stream.receive(65536))
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                elif isinstance(event, h11.Request):
                    request, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    status = self.statuses.pop(0) if self.statuses else self.default
                    received = Request(
                        request.method.decode(),
                        request.target.decode(),
                        {k.decode().lower(): v.decode() for k, v in request.headers},
                        body,
                    )
                    self.requests.append(received)
                    self._send.send_nowait(received)
                    if status == DROP:
                        return
                    text = b"" if status in (204, 304) else f"status {status}\n".encode()
                    headers = [("content-type", "text/plain"), ("content-length", str(len(text)))]
                    await stream.send(conn.send(h11.Response(status_code=status, headers=headers)))
                    if text:
                        await stream.send(conn.send(h11.Data(data=text)))
                    await stream.send(conn.send(h11.EndOfMessage()))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                else:  # ConnectionClosed
                    return

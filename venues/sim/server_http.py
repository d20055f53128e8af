"""HTTP/1.1 for the loopback REST API: h11 parses, trio moves the bytes.

One h11 state machine per TCP connection, keep-alive, one request at a time
(HTTP/1.1 clients do not pipeline in practice; h11 would queue it anyway).
The handler gets the request with its query string and body exactly as
received, because Binance signatures cover those raw bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import unquote

import h11
import trio

from daemon.logs import Logger, describe_error

JSON = "application/json;charset=UTF-8"


class HttpRequest:
    """One request: `raw_query` and `body` untouched, header names lower-case."""

    __slots__ = ("method", "path", "raw_query", "body", "headers")

    def __init__(self, method: str, path: str, raw_query: str, body: bytes, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.raw_query = raw_query
        self.body = body
        self.headers = headers

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.path})"


class HttpResponse:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None, content_type: str = JSON
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []
        self.content_type = content_type


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _Closed(Exception):
    """The peer went away or broke the protocol: stop serving this connection."""


async def serve_http(
    stream: trio.abc.Stream,
    handler: Handler,
    log: Logger,
    *,
    max_body: int = 64 * 1024,
    idle_timeout: float = 120.0,
) -> None:
    """Serve requests on one connection until the client closes it (or idles out)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    while True:
        try:
            request = await _read_request(conn, stream, max_body, idle_timeout)
        except _Closed:
            return
        except _TooLarge:
            await _send(conn, stream, HttpResponse(413, b'{"code":-1100,"msg":"Request body too large."}'))
            return
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = f'{{"code":-1100,"msg":"Malformed HTTP request: {exc}"}}'.encode()
                await _send(conn, stream, HttpResponse(exc.error_status_hint, body))
            return
        if request is None:
            return
        try:
            response = await handler(request)
        except Exception as exc:  # a handler bug answers 500, it does not kill the server
            log.error("venue_server.handler_failed", path=request.path, error=describe_error(exc))
            response = HttpResponse(500, b'{"code":-1001,"msg":"Internal error; unable to process your request."}')
        if not await _send(conn, stream, response):
            return
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


class _TooLarge(Exception):
    pass


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream, idle_timeout: float):
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = b""
        with trio.move_on_after(idle_timeout) as idle:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Closed from None
        if idle.cancelled_caught:
            raise _Closed
        conn.receive_data(data)  # b"" tells h11 the peer closed


async def _read_request(
    conn: h11.Connection, stream: trio.abc.Stream, max_body: int, idle_timeout: float
) -> HttpRequest | None:
    event = await _next_event(conn, stream, idle_timeout)
    if isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise _Closed
    target = event.target.decode("ascii", "replace")
    path, _, raw_query = target.partition("?")
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
    body = bytearray()
    while True:
        part = await _next_event(conn, stream, idle_timeout)
        if isinstance(part, h11.Data):
            body += part.data
            if len(body) > max_body:
                raise _TooLarge
        elif isinstance(part, h11.EndOfMessage):
            break
        else:
            raise _Closed
    return HttpRequest(event.method.decode("ascii"), unquote(path), raw_query, bytes(body), headers)


async def _send(conn: h11.Connection, stream: trio.abc.Stream, response: HttpResponse) -> bool:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Server", "tradingd-loopback"),
        *response.headers,
    ]
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        data += conn.send(h11.Data(data=response.body)) if response.body else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""

"""One WebSocket client of the loopback server: an outgoing queue, a reader, and how it ends.

Engine observers must never wait, so everything sent to a client goes
through `WsSession.push`, which queues without blocking. A client that falls
`stream_queue` frames behind is dropped, as Binance drops slow consumers;
it reconnects and resyncs.

A session ends when the client closes, when it has been connected for
`max_connection_seconds` (Binance's 24 h, shortened in tests; a normal close),
or when the server drops it (`drop`: the TCP connection is cut without a
close frame, which is what a lost connection looks like to a client).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection

from daemon.logs import Logger
from venues.sim.server_config import Faults, ServerSettings

Reader = Callable[["WsSession"], Awaitable[None]]


class WsSession:
    """Base of the three kinds: market streams, the WebSocket API, a listenKey stream."""

    kind = "ws"

    def __init__(
        self, ws: ServerConnection, settings: ServerSettings, faults: Faults, rng: random.Random, log: Logger
    ) -> None:
        self.ws = ws
        self.settings = settings
        self.faults = faults
        self.rng = rng
        self.log = log
        self._send, self._receive = trio.open_memory_channel[bytes](settings.stream_queue)
        self._scope = trio.CancelScope()
        self.drop_reason: str | None = None
        self.sent = 0

    def push(self, frame: bytes) -> None:
        """Queue a frame; never blocks (a client too far behind is dropped)."""
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.drop(f"slow consumer: {self.settings.stream_queue} frames behind")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def drop(self, reason: str) -> None:
        """Cut the connection without a close frame."""
        if self.drop_reason is None:
            self.drop_reason = reason
        self._scope.cancel()

    async def run(self, reader: Reader | None = None) -> None:
        """Serve until the client leaves, the session times out, or it is dropped."""
        with trio.move_on_after(self.settings.max_connection_seconds) as lifetime:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._sender, nursery.cancel_scope)
                    await (reader or _drain)(self)
                    nursery.cancel_scope.cancel()
        self._send.close()
        if self.drop_reason is not None:
            self.log.info("venue_server.ws_dropped", kind=self.kind, reason=self.drop_reason)
            await trio.aclose_forcefully(self.ws.stream)
        elif lifetime.cancelled_caught:
            self.log.info("venue_server.ws_expired", kind=self.kind, seconds=self.settings.max_connection_seconds)
            await self.ws.aclose()  # bounded by the server's close_timeout

    async def _sender(self, done: trio.CancelScope) -> None:
        async for frame in self._receive:
            faults = self.faults
            if faults.ws_drop_rate and self.rng.random() < faults.ws_drop_rate:
                self.drop("fault injection: ws_drop_rate")
                return
            try:
                await self.ws.send(frame, text=True)
            except ConnectionClosed:
                break
            self.sent += 1
        done.cancel()


async def _drain(session: WsSession) -> None:
    """Read and ignore what the client sends, until it closes (pongs are answered by websockets)."""
    try:
        while True:
            await session.ws.recv()
    except ConnectionClosed:
        pass

"""The market-data side of the tick-to-order benchmark: a Binance combined stream with marked trigger frames.

It runs in a process of its own (``python -m bench.tick_frames``), so that
making and sending ten thousand frames a second costs the measured process
nothing but the reading, as with a real venue. It speaks just enough of the
Binance market-stream protocol for `venues.binance.adapter.BinanceAdapter`:
``<prefix>/stream?streams=a/b`` connections receiving
``{"stream": ..., "data": {"e": "depthUpdate", ...}}`` frames. The prefix
names the reader (``/ours``: the daemon's feed; ``/raw``: the baseline
client), so each window of the benchmark feeds exactly one of them.

The books are the loopback venue's: when a connection opens, the server
reads each symbol's snapshot from the venue (``/api/v3/depth``), starts that
connection's update ids right after the snapshot's, and only ever changes
quantities around the snapshot's touch, so the reader's book syncs by the
documented snapshot+diff procedure and never crosses. (The venue's markets
stand still: no trades, no volatility.)

Frames:
- background: one symbol after another among all but the trigger symbol,
  three levels each (the best bid or ask quantity, so the top of book
  changes and a quote is published, and one deeper level per side that is
  added, changed or removed);
- trigger number N: the trigger symbol's bid one tick above the snapshot's
  best bid (inside the spread) with quantity ``N.00424242``, so the reader's
  best bid changes and the number can be read back from the quote;
- priming: deeper levels of every symbol, slowly, until the books are live.

Control: one JSON object per line on stdin, one answer per line on stdout.
The first line out is ``{"port": P}``. Commands: ``connections`` (the readers
connected, and the frames sent to each role so far); ``prime``
(role, seconds); ``window`` (role, seconds, rate, gap: [lo, hi], first):
background at `rate` frames/s and triggers at random gaps, answered with
``{"triggers": {N: t0}, "background": count, "seconds": s}``; ``quit``.

The frames due are written together every millisecond, in one system call
(websockets' sans-I/O protocol frames them; writing them one `send` at a time
would cost this process a whole core at 10 000 frames/s). t0 is read from
CLOCK_MONOTONIC (`time.clock_gettime_ns`) just before the write that holds
the trigger frame: the clock every process on the machine shares, so the
reader can subtract it from its own readings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import trio
from websockets.exceptions import ConnectionClosed, InvalidState
from websockets.trio.server import ServerConnection, serve

MARKER = "00424242"  # the fractional digits of a trigger frame's bid quantity
TICK_SECONDS = 0.001  # the sender wakes this often and sends what is due
PRIME_RATE = 400.0  # frames/s while priming
POOL = 512  # distinct level sets per background symbol, used in turn
DEEP = range(2, 200)  # how many ticks behind the touch the deeper levels lie


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on this machine (Linux), unaffected by wall-clock steps."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def trigger_number(quantity: Decimal | str) -> int | None:
    """N if `quantity` is a trigger's ``N.00424242``, else None."""
    text = format(quantity, "f") if isinstance(quantity, Decimal) else quantity
    whole, _, fraction = text.partition(".")
    if fraction.rstrip("0") != MARKER or not whole.isdigit():
        return None
    return int(whole)


def _text(value: Decimal) -> str:
    return f"{value:.8f}"


class Symbol:
    """One symbol's touch (from the venue's snapshot) and the frames made of it."""

    def __init__(self, name: str, tick: Decimal, bid: Decimal, ask: Decimal, rng: random.Random) -> None:
        self.name = name
        self.lower = name.lower()
        self.tick = tick
        self.bid = bid
        self.ask = ask
        self.trigger_price = _text(bid + tick)
        self.head = (
            f'{{"stream":"{self.lower}@depth@100ms","data":{{"e":"depthUpdate","E":%d,"s":"{name}","U":%d,"u":%d,'
        ).encode()
        self.pool = [self._levels(rng, top=True) for _ in range(POOL)]
        self.deep_pool = [self._levels(rng, top=False) for _ in range(POOL)]

    def _levels(self, rng: random.Random, *, top: bool) -> bytes:
        def qty() -> str:
            return "0.00000000" if rng.random() < 0.3 else f"{rng.randint(1, 500_000) / 1000:.8f}"

        bids = [[_text(self.bid - self.tick * rng.choice(DEEP)), qty()]]
        asks = [[_text(self.ask + self.tick * rng.choice(DEEP)), qty()]]
        if top:
            touch = [_text(self.bid), f"{rng.randint(1, 500_000) / 1000:.8f}"]
            if rng.random() < 0.5:
                bids.insert(0, touch)
            else:
                asks.insert(0, [_text(self.ask), touch[1]])
        return f'"b":{json.dumps(bids)},"a":{json.dumps(asks)}}}}}'.replace(" ", "").encode()

    def frame(self, update_id: int, levels: bytes) -> bytes:
        return self.head % (time.time_ns() // 1_000_000, update_id, update_id) + levels

    def trigger(self, update_id: int, number: int) -> bytes:
        levels = f'"b":[["{self.trigger_price}","{number}.{MARKER}"]],"a":[]}}}}'.encode()
        return self.frame(update_id, levels)


class Reader:
    """One open connection: its role and its next update id per symbol."""

    def __init__(self, ws: ServerConnection, role: str, next_ids: dict[str, int]) -> None:
        self.ws = ws
        self.role = role
        self.next_ids = next_ids
        self.sent = 0

    def take_id(self, symbol: str) -> int:
        update_id = self.next_ids[symbol]
        self.next_ids[symbol] = update_id + 1
        return update_id


class FrameServer:
    """The stream's readers, the symbols' frames, and the commands of the line protocol."""

    def __init__(self, venue_url: str, symbols: dict[str, Decimal], trigger: str, seed: int = 7) -> None:
        self.venue_url = venue_url
        self.ticks = symbols
        self.trigger_symbol = trigger
        self.rng = random.Random(seed)
        self.symbols: dict[str, Symbol] = {}
        self.readers: list[Reader] = []

    async def load(self) -> None:
        """The venue's touch of every symbol (its markets stand still, so once is enough)."""
        async with httpx.AsyncClient(base_url=self.venue_url, timeout=10) as http:
            for name, tick in self.ticks.items():
                book = (await http.get("/api/v3/depth", params={"symbol": name, "limit": 5})).json()
                bid, ask = Decimal(book["bids"][0][0]), Decimal(book["asks"][0][0])
                if ask - bid < 2 * tick:
                    raise RuntimeError(f"{name}: the spread {bid}..{ask} leaves no room for a trigger level")
                self.symbols[name] = Symbol(name, tick, bid, ask, self.rng)

    async def _snapshot_ids(self) -> dict[str, int]:
        """The first update id of a new connection, per symbol: right after the venue's snapshot."""
        async with httpx.AsyncClient(base_url=self.venue_url, timeout=10) as http:
            ids = {}
            for name in self.symbols:
                book = (await http.get("/api/v3/depth", params={"symbol": name, "limit": 5})).json()
                ids[name] = int(book["lastUpdateId"]) + 1
            return ids

    async def handle(self, ws: ServerConnection) -> None:
        """One reader, from ``/<role>/stream?streams=...`` until it closes (it sends nothing)."""
        parts = urlsplit(ws.request.path)  # type: ignore[union-attr]
        role = parts.path.removesuffix("/stream").strip("/")
        wanted = parse_qs(parts.query).get("streams", [""])[0].split("/")
        unknown = {s.split("@")[0].upper() for s in wanted if s} - set(self.symbols)
        if not parts.path.endswith("/stream") or unknown:
            await ws.aclose()
            return
        reader = Reader(ws, role, await self._snapshot_ids())
        self.readers.append(reader)
        try:
            while True:
                await ws.recv()  # nothing is expected; this notices the close
        except ConnectionClosed:
            pass
        finally:
            self.readers.remove(reader)

    def _of(self, role: str) -> list[Reader]:
        readers = [r for r in self.readers if r.role == role]
        if not readers:
            raise RuntimeError(f"no {role!r} reader is connected")
        return readers

    async def _send(
        self,
        reader: Reader,
        frames: list[bytes],
        triggers: list[int] | None = None,
        stamps: dict[int, int] | None = None,
    ) -> None:
        """Write `frames` to the reader's socket in one go (one system call, as a venue's stream
        flushes what it has); the triggers among them are stamped just before the write."""
        ws = reader.ws
        try:
            async with ws.send_lock:
                for frame in frames:
                    ws.protocol.send_text(frame)
                data = b"".join(ws.protocol.data_to_send())
                if triggers and stamps is not None:
                    t0 = now_ns()
                    for number in triggers:
                        stamps[number] = t0
                await ws.stream.send_all(data)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, InvalidState):
            return  # the reader left; its handler forgets it
        reader.sent += len(frames)

    async def prime(self, role: str, seconds: float) -> dict:
        readers = self._of(role)
        names = list(self.symbols)
        sent = 0
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            name = names[sent % len(names)]
            symbol = self.symbols[name]
            for reader in readers:
                await self._send(reader, [symbol.frame(reader.take_id(name), symbol.deep_pool[sent % POOL])])
            sent += 1
            await trio.sleep(1 / PRIME_RATE)
        return {"frames": sent}

    async def window(self, role: str, seconds: float, rate: float, gap: list[float], first: int) -> dict:
        """Background at `rate` frames/s and a trigger every `gap` seconds (uniform), for `seconds`.

        Every `TICK_SECONDS` the frames due since the last wake-up are written at
        once, in time order: a trigger goes behind the background frames due before it.
        """
        reader, *others = self._of(role)
        if others:
            raise RuntimeError(f"{len(others) + 1} {role!r} readers are connected; the benchmark expects one")
        background = [self.symbols[n] for n in self.symbols if n != self.trigger_symbol]
        trigger = self.symbols[self.trigger_symbol]
        rng = self.rng
        triggers: dict[int, int] = {}
        number = first
        sent = 0
        start = trio.current_time()
        end = start + seconds
        next_trigger = start + rng.uniform(*gap)
        wake = start
        while True:
            now = trio.current_time()
            horizon = min(now, end)
            due = int((horizon - start) * rate) if rate else 0
            burst: list[bytes] = []
            marked: list[int] = []
            while True:
                background_at = start + sent / rate if sent < due else math.inf
                trigger_at = next_trigger if next_trigger <= horizon else math.inf
                if background_at == trigger_at == math.inf:
                    break
                if trigger_at <= background_at:
                    burst.append(trigger.trigger(reader.take_id(trigger.name), number))
                    marked.append(number)
                    number += 1
                    next_trigger += rng.uniform(*gap)
                    continue
                symbol = background[sent % len(background)]
                burst.append(symbol.frame(reader.take_id(symbol.name), symbol.pool[(sent // len(background)) % POOL]))
                sent += 1
            if burst:
                await self._send(reader, burst, marked, triggers)
            if now >= end:
                break
            wake = max(wake + TICK_SECONDS, now)
            await trio.sleep_until(min(wake, end))
        return {"triggers": triggers, "background": sent, "seconds": trio.current_time() - start}

    async def control(self, lines: trio.abc.ReceiveStream, port: int) -> None:
        _reply({"port": port})
        buffer = b""
        while True:
            chunk = await lines.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                cmd = request.pop("cmd")
                if cmd == "quit":
                    return
                try:
                    if cmd == "connections":
                        sent: dict[str, int] = {}
                        for r in self.readers:
                            sent[r.role] = sent.get(r.role, 0) + r.sent
                        answer = {"readers": [r.role for r in self.readers], "sent": sent}
                    elif cmd == "prime":
                        answer = await self.prime(**request)
                    elif cmd == "window":
                        answer = await self.window(**request)
                    else:
                        answer = {"error": f"unknown command {cmd!r}"}
                except Exception as exc:  # the bench reads it and stops with the reason
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                _reply(answer)


def _reply(answer: dict) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def _main(venue_url: str, symbols: dict[str, Decimal], trigger: str) -> None:
    server = FrameServer(venue_url, symbols, trigger)
    await server.load()
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            lambda task_status: serve(
                server.handle, 0, host="127.0.0.1", compression=None, max_queue=16,
                ping_interval=None, server_header=None, task_status=task_status,
            )
        )  # fmt: skip
        port = ws_server.listeners[0].socket.getsockname()[1]
        await server.control(trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())), port)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tick_frames", description=__doc__.split("\n\n")[0])
    parser.add_argument("--venue", required=True, help="the loopback venue's REST URL (books are read there)")
    parser.add_argument("--symbol", action="append", required=True, metavar="SYMBOL:TICK")
    parser.add_argument("--trigger", required=True, help="the symbol whose marked frames are timed")
    args = parser.parse_args(argv)
    symbols = {s.split(":")[0]: Decimal(s.split(":")[1]) for s in args.symbol}
    if args.trigger not in symbols:
        parser.error(f"--trigger {args.trigger} is not one of the --symbol values")
    trio.run(_main, args.venue, symbols, args.trigger)
    return 0


if __name__ == "__main__":
    sys.exit(main())

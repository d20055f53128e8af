"""Tick to order: from a market-data frame reaching the daemon to its signed order request leaving the gateway.

The setup. The whole daemon runs in this process (journal, positions, risk,
the venue's gateway and feed, executions, control), trading through the real
Binance adapter against the loopback Binance server (`tradingd venue`) in a
process of its own: signed REST orders, the user data stream over the
WebSocket API. Its market data comes from a second process
(`bench.tick_frames`) that speaks the Binance combined-stream protocol and
sends depth updates for four symbols, built on the venue's own books (the
venue's markets stand still), so the feed syncs its books by the documented
snapshot+diff procedure as it would on Binance.

The reacting strategy is a bench-only actor on the daemon's bus: it reads
every quote (conflated per instrument, as schedulers do) and, when the
trigger symbol's quote carries a trigger number (a best bid quantity of
``N.00424242``), it sends a buy IOC 1 % below the bid through
``topics.RISK_SUBMIT``: the real order path, i.e. the risk checks, the intent
journaled durably before anything leaves (DESIGN §3), the gateway's inbox,
the PENDING_NEW update journaled durably, rounding to the filters, signing,
and the POST through httpx. The IOC expires at the venue, so nothing
accumulates from one trigger to the next.

What is timed, on CLOCK_MONOTONIC (`time.clock_gettime_ns`), which on Linux
is one clock for every process on the machine (`time.perf_counter` is only
promised to be comparable within one process):

- t0: the frame server reads the clock just before it writes the frames that
  hold the trigger to its socket. On loopback the bytes are in the daemon's
  socket buffer a few microseconds later; when the daemon does not read fast
  enough the socket is full, the write waits, and so does the trigger: that
  wait is rightly counted.
- t1: an httpx request hook on the gateway's order pool reads the clock when
  the signed POST is handed to the transport (after signing, before h11
  writes it to the socket).

A trigger the strategy never saw (conflated behind a newer trigger's quote,
which happens after a stall) or that risk refused has no order of its own;
its t1 is the next order's, the first order sent with its information, so
the slow moments are counted rather than dropped (infinite if no order
follows in its window). The notes say how many.

Three windows per repeat, after one short untimed round: ours under a
background of `RATE` depth frames a second on the same connection (three
levels each, the other three symbols in turn, every frame moving a top of
book, so the strategy wakes for those quotes too); the baseline under the
same background; ours with no background, which separates the cost of the
path from the contention. Triggers come every `GAP` seconds (uniform),
`WINDOW` seconds per window. A background the daemon cannot keep up with
leaves a backlog in the socket; the next window waits until the daemon has
read every frame. The rate at which the daemon read frames during the loaded
window is a row of its own: when it is below `RATE`, the loaded latencies
are those of a growing queue and grow with `WINDOW`.

The baseline: what any Python client on this host pays for the same trip
without a daemon around it. A minimal reactor in this process, on its own
connection to the same frame server under the same background: websockets,
`msgspec` to decode every frame, HMAC signing, the same httpx POST (timed the
same way), to the same venue under another account. No risk check, no
journal, no bus.

Where the time goes without background, per trigger with its own order:
frame to quote at the strategy (socket, websockets, decoding, the book, the
bus); the two durable journal writes awaited on the path (the intent by
risk, PENDING_NEW by the gateway; each from the caller's await to its
return, timed by wrapping the journal's `record_batch`); and the rest
(the request to risk and its checks; the hand-off to the gateway; the log
line, parameters, signature and httpx). For scale, one durable journal
commit is also timed alone on this disk (`JournalStore.apply` of one intent,
no actor, no thread) between windows.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect

from bench.common import Row, Stat, compared, quiet_logs, scoped_environ
from bench.tick_frames import now_ns, trigger_number
from daemon import components, topics
from daemon.app import Daemon
from daemon.config import parse
from daemon.bus import RequestTimeout
from daemon.journal_store import JournalStore
from daemon.messages import Approval, Denial, OrderIntent
from daemon.model import OrderType, Side, TimeInForce, client_order_id
from venues.binance.client import Pool
from venues.binance.signing import HmacSigner, encode_params
from venues.sim.server_config import derived_credentials

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 4
QUICK_REPEATS = 1
WINDOW = 2.5  # seconds of triggers per window
QUICK_WINDOW = 1.0
WARMUP_WINDOW = 1.0  # the untimed first round
RATE = 10_000  # background frames per second
GAP = (0.015, 0.035)  # seconds between triggers (uniform)
COMMITS = 60  # durable commits timed alone per repeat
TARGET_P99_MS = 2.0
VENUE = "bn"
TRIGGER = "BTCUSDT"
OURS, BASELINE_ACCOUNT = "demo", "bench"
KEY_NAME, SECRET_NAME = "bench_tick_api_key", "bench_tick_api_secret"
SETTLE = 0.3  # seconds after a window for the last answers and user-stream updates
STAMP_WAIT = 20.0  # a trigger neither answered nor refused this long after its window is lost: the run fails

# symbol, base, price, tick, step, level spacing, level quantity: the venue's four standing markets
INSTRUMENTS = (
    ("BTCUSDT", "BTC", "64000.00", "0.01", "0.00001", "5.00", "0.15"),
    ("ETHUSDT", "ETH", "3200.00", "0.01", "0.0001", "0.50", "2.0"),
    ("SOLUSDT", "SOL", "150.00", "0.01", "0.001", "0.05", "40"),
    ("XRPUSDT", "XRP", "0.6000", "0.0001", "0.1", "0.0010", "20000"),
)
ORDER_QTY = Decimal("0.0002")  # of the trigger symbol: about 12.7 USDT, above the 5 USDT minimum


def run(quick: bool = False) -> list[Row]:
    repeats = QUICK_REPEATS if quick else REPEATS
    window = QUICK_WINDOW if quick else WINDOW
    m = trio.run(_measure, repeats, window)
    loaded, raw, quiet = m["ours"], m["raw"], m["quiet"]
    pooled, pooled_raw, pooled_quiet = _flat(loaded), _flat(raw), _flat(quiet)
    commits = _flat(m["commits"])
    missing = _missing(m["superseded"], m["refused"])
    quiet_missing = _missing(m["quiet_superseded"], m["quiet_refused"])
    return [
        compared(
            f"tick to order: p50, {RATE:,} frames/s background",
            "ms",
            [_pct(s, 50) for s in loaded],
            [_pct(s, 50) for s in raw],
            higher_is_better=False,
            note=(
                f"{len(pooled)} triggers in {window:g} s windows{missing}; baseline: a minimal reactor on the same "
                f"stream (websockets + msgspec + HMAC + httpx; no risk, journal or bus)"
            ),
        ),
        compared(
            f"tick to order: p99, {RATE:,} frames/s background",
            "ms",
            [_pct(s, 99) for s in loaded],
            [_pct(s, 99) for s in raw],
            higher_is_better=False,
            target_value=TARGET_P99_MS,
            note=(
                f"per repeat (about {len(pooled) // len(loaded)} triggers); pooled: ours p99 "
                f"{_pct(pooled, 99):.1f} ms, max {max(pooled):.1f} ms; the baseline's p99 {_pct(pooled_raw, 99):.2f} ms"
            ),
        ),
        Row(
            figure=f"feed: frames/s read while {RATE:,}/s are offered",
            unit="frames/s",
            ours=Stat.of(m["read_rate"]),
            note=(
                f"the daemon's whole market-data path, socket to quote and depth at every reader (the frame server "
                f"got {statistics.median(m['sent_rate']):,.0f}/s into the socket, which stayed full); under this "
                f"background, frame -> quote at the strategy p50 {_pct(_flat(m['feed']), 50):.0f} ms, the two "
                f"journal writes p50 {_pct(_flat(m['journal']), 50):.1f} ms, "
                f"p99 {_pct(_flat(m['journal']), 99):.0f} ms"
            ),
        ),
        Row(
            figure="tick to order: p99, no background",
            unit="ms",
            ours=Stat.of([_pct(s, 99) for s in quiet]),
            higher_is_better=False,
            target_value=TARGET_P99_MS,
            note=f"p50 {_pct(pooled_quiet, 50):.2f} ms, pooled p99 {_pct(pooled_quiet, 99):.1f} ms{quiet_missing}",
        ),
        Row(
            figure="  of which frame -> quote at the strategy, p50",
            unit="ms",
            ours=Stat.of([_pct(s, 50) for s in m["quiet_feed"]]),
            higher_is_better=False,
            note=(
                f"no background; socket, websockets, decoding, book, bus; the baseline's frame -> decoded "
                f"p50 {_pct(_flat(m['raw_feed']), 50):.2f} ms (under background)"
            ),
        ),
        Row(
            figure="  of which the two durable journal writes, p50",
            unit="ms",
            ours=Stat.of([_pct(s, 50) for s in m["quiet_journal"]]),
            higher_is_better=False,
            note=(
                f"no background; the intent (risk) and PENDING_NEW (gateway), each awaited on the order path; "
                f"pooled p99 {_pct(_flat(m['quiet_journal']), 99):.1f} ms; one durable commit alone on this disk "
                f"(JournalStore, no actor, no thread): p50 {_pct(commits, 50):.2f} ms, "
                f"p99 {_pct(commits, 99):.2f} ms"
            ),
        ),
        Row(
            figure="  of which the rest (bus, risk, gateway, signing, httpx), p50",
            unit="ms",
            ours=Stat.of([_pct(s, 50) for s in m["quiet_rest"]]),
            higher_is_better=False,
            note=(
                f"no background; quote -> the intent's write begins (request to risk, its checks) p50 "
                f"{_pct(_flat(m['quiet_risk']), 50):.2f} ms; intent written -> PENDING_NEW's write begins (risk "
                f"hands it on, the gateway takes it and rounds it) p50 {_pct(_flat(m['quiet_handoff']), 50):.2f} ms; "
                f"PENDING_NEW written -> request out (log line, parameters, signature, httpx) p50 "
                f"{_pct(_flat(m['quiet_send']), 50):.2f} ms"
            ),
        ),
    ]


def _flat(windows: list[list[float]]) -> list[float]:
    return [x for samples in windows for x in samples]


def _missing(superseded: list[int], refused: list[dict[str, int]]) -> str:
    """How many triggers got no order of their own, and why ('' if none)."""
    counts: dict[str, int] = {}
    for window in refused:
        for reason, count in window.items():
            counts[reason] = counts.get(reason, 0) + count
    parts = [f"{count} refused by risk ({reason})" for reason, count in counts.items()]
    if sum(superseded):
        parts.insert(0, f"{sum(superseded)} never seen by the strategy (conflated behind a newer trigger)")
    if not parts:
        return ""
    return "; " + ", ".join(parts) + ": each counted until the next order left"


def _pct(samples: list[float], q: int) -> float:
    """The q-th percentile, interpolated between the two nearest samples (infinite if either is)."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    if fraction == 0 or ordered[low] == ordered[high]:
        return ordered[low]
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


# ---------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------


@dataclass
class _Stamps:
    """Clock readings (ns) per trigger number, from the strategy, the HTTP hook and the journal wrapper."""

    quote: dict[int, int] = field(default_factory=dict)
    request: dict[int, int] = field(default_factory=dict)
    writes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # journal calls (start, end) before t1
    numbers: dict[str, int] = field(default_factory=dict)  # client order id -> trigger number
    refused: dict[int, str] = field(default_factory=dict)  # trigger number -> why no order was sent

    async def on_request(self, request: httpx.Request) -> None:
        if request.method != "POST" or "signature" not in request.url.params:
            return
        number = self.numbers.get(request.url.params.get("newClientOrderId", ""))
        if number is not None:
            self.request.setdefault(number, now_ns())


async def _measure(repeats: int, window: float) -> dict[str, list]:
    out: dict[str, list] = collections.defaultdict(list)  # per timed repeat, by what was measured
    with tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp, quiet_logs(), _environment(tmp):
        directory = Path(tmp)
        async with trio.open_nursery() as nursery:
            venue = await _Venue.start(nursery, directory)
            frames = await _Frames.start(nursery, directory, venue.rest_url)
            ours = _Stamps()
            daemon = await _start_daemon(nursery, directory, venue, frames)
            try:
                _instrument(daemon, ours)
                await nursery.start(_strategy, daemon, ours)
                raw = _RawReactor(venue, frames)
                await nursery.start(raw.run)
                await frames.wait_readers({"ours", "raw"})
                await _prime(frames, daemon)
                feed = daemon.services["feeds"][VENUE]
                number = 1
                for round_ in range(repeats + 1):  # the first round warms up, shorter and untimed
                    seconds = window if round_ else WARMUP_WINDOW
                    read_before = feed.frames
                    loaded = await _window(frames, "ours", ours, seconds, RATE, number)
                    read_rate = (feed.frames - read_before) / loaded.seconds
                    await _drain(feed, frames)
                    baseline = await _window(frames, "raw", raw.stamps, seconds, RATE, number + len(loaded.t0))
                    quiet = await _window(frames, "ours", ours, seconds, 0, number + len(loaded.t0) + len(baseline.t0))
                    number += len(loaded.t0) + len(baseline.t0) + len(quiet.t0)
                    commits = await trio.to_thread.run_sync(_commits_alone, directory / "scratch", COMMITS)
                    if round_ == 0:
                        continue
                    out["ours"].append(loaded.latencies())
                    out["feed"].append(loaded.own(ours, "quote"))
                    out["journal"].append(loaded.own(ours, "journal"))
                    out["raw"].append(baseline.latencies())
                    out["raw_feed"].append(baseline.own(raw.stamps, "quote"))
                    out["quiet"].append(quiet.latencies())
                    out["quiet_feed"].append(quiet.own(ours, "quote"))
                    out["quiet_journal"].append(quiet.own(ours, "journal"))
                    for part in ("rest", "risk", "handoff", "send"):
                        out[f"quiet_{part}"].append(quiet.own(ours, part))
                    out["commits"].append(commits)
                    out["read_rate"].append(read_rate)
                    out["sent_rate"].append(loaded.sent_rate)
                    out["superseded"].append(loaded.superseded)
                    out["quiet_superseded"].append(quiet.superseded)
                    out["refused"].append(loaded.refused)
                    out["quiet_refused"].append(quiet.refused)
            finally:
                with trio.move_on_after(30, shield=True):
                    await frames.quit()
                    daemon.request_stop("benchmark finished")
                    await daemon.finished.wait()  # type: ignore[attr-defined]
                nursery.cancel_scope.cancel()
    return out


async def _drain(feed: Any, frames: _Frames) -> None:
    """Wait until the daemon has read every frame sent (a background it cannot keep up with leaves a backlog)."""
    sent = (await frames.call(cmd="connections"))["sent"]["ours"]
    with trio.fail_after(60):
        while feed.frames < sent:
            await trio.sleep(0.05)


def _ms(ns: int) -> float:
    return ns / 1e6


@dataclass
class _Window:
    """One window's triggers: when each was sent (t0), and when the order reacting to it left (t1).

    A trigger's reaction is its own order or, when it has none, the first
    order sent for a later trigger: the first order placed with this tick's
    information. A trigger has no order of its own when the strategy never
    saw it (quotes are conflated: a newer trigger's quote arrived before the
    strategy read this one, e.g. after a stall) or when risk refused it (e.g.
    the journal did not answer in time). Leaving those out would hide exactly
    the slow moments; a trigger with no later order either counts as infinite.
    """

    t0: dict[int, int]
    t1: dict[int, float]
    superseded: int
    refused: dict[str, int]
    sent_rate: float
    seconds: float

    def latencies(self) -> list[float]:
        return [(self.t1[n] - t0) / 1e6 for n, t0 in self.t0.items()]

    def own(self, stamps: _Stamps, part: str) -> list[float]:
        """Milliseconds of one part of the path, for the triggers that got their own order.

        ``quote``: t0 to the strategy; ``journal``: the journal writes awaited on the
        path; ``rest``: the strategy to t1, less those writes; ``risk``: the
        strategy to the intent's write; ``handoff``: the intent written to the
        gateway's write; ``send``: the gateway's write to t1 (the last three only
        for triggers with exactly those two writes).
        """
        out = []
        for n, t0 in self.t0.items():
            if n not in stamps.request:
                continue
            writes = sorted(stamps.writes.get(n, []))
            if part == "quote":
                out.append(_ms(stamps.quote[n] - t0))
            elif part == "journal":
                out.append(_ms(sum(end - start for start, end in writes)))
            elif part == "rest":
                out.append(_ms(stamps.request[n] - stamps.quote[n] - sum(end - start for start, end in writes)))
            elif len(writes) == 2:
                (intent_start, intent_end), (update_start, update_end) = writes
                edges = {
                    "risk": (stamps.quote[n], intent_start),
                    "handoff": (intent_end, update_start),
                    "send": (update_end, stamps.request[n]),
                }[part]
                out.append(_ms(edges[1] - edges[0]))
        return out


async def _window(frames: _Frames, role: str, stamps: _Stamps, seconds: float, rate: float, first: int) -> _Window:
    """One window of triggers (and background) for `role`'s reader."""
    answer = await frames.call(cmd="window", role=role, seconds=seconds, rate=rate, gap=list(GAP), first=first)
    sent = {int(n): t0 for n, t0 in answer["triggers"].items()}

    def settled(n: int) -> bool:
        if n in stamps.request or n in stamps.refused:
            return True
        # never seen (conflated): settled by any later order
        return n not in stamps.quote and any(m > n and m in stamps.request for m in sent)

    with trio.move_on_after(STAMP_WAIT):
        while not all(map(settled, sent)):
            await trio.sleep(0.01)
    lost = [n for n in sent if not settled(n)]
    if lost:
        seen = [n for n in lost if n in stamps.quote]
        raise RuntimeError(
            f"{role}: {len(lost)} of {len(sent)} triggers neither got an order nor were refused within "
            f"{STAMP_WAIT:g} s (e.g. {lost[:5]}; of those the strategy saw {seen[:5]}, the journal "
            f"{[n for n in seen if n in stamps.writes][:5]})"
        )
    orders = sorted((m, stamps.request[m]) for m in sent if m in stamps.request)

    def reaction(n: int) -> float:
        if n in stamps.request:
            return stamps.request[n]
        return min((t1 for m, t1 in orders if m > n), default=math.inf)

    refused: dict[str, int] = {}
    for n in sent:
        if n in stamps.refused:
            refused[stamps.refused[n]] = refused.get(stamps.refused[n], 0) + 1
    await trio.sleep(SETTLE)
    return _Window(
        t0=sent,
        t1={n: reaction(n) for n in sent},
        superseded=sum(1 for n in sent if n not in stamps.request and n not in stamps.refused),
        refused=refused,
        sent_rate=answer["background"] / answer["seconds"],
        seconds=answer["seconds"],
    )


async def _prime(frames: _Frames, daemon: Daemon) -> None:
    """Feed the books until the daemon has a live book of every symbol (and so a quote)."""
    feed = daemon.services["feeds"][VENUE]
    symbols = [i[0] for i in INSTRUMENTS]
    with trio.fail_after(30):
        while any(feed.last_quote(s) is None for s in symbols):
            await frames.call(cmd="prime", role="ours", seconds=0.3)


def _instrument(daemon: Daemon, stamps: _Stamps) -> None:
    """Time the signed order POST (an httpx hook) and the journal calls on the path (a wrapper around
    `record_batch`), without changing what they do."""
    adapter = daemon.services["gateways"][VENUE].adapter
    adapter.client._pools[Pool.ORDERS].event_hooks["request"].append(stamps.on_request)
    journal = daemon.services["journal"]
    record_batch = journal.record_batch

    async def timed_record_batch(records: Any) -> Any:
        started = now_ns()
        try:
            return await record_batch(records)
        finally:
            spent = now_ns() - started
            for record in records:
                number = stamps.numbers.get(getattr(record, "client_order_id", ""))
                # only writes begun before the request left: the answers journaled afterwards are off the path
                if number is not None and stamps.request.get(number, started + 1) > started:
                    stamps.writes.setdefault(number, []).append((started, started + spent))

    journal.record_batch = timed_record_batch


async def _strategy(
    daemon: Daemon, stamps: _Stamps, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The reacting scheduler: every quote is looked at; a trigger quote becomes an order at once.

    Each order is submitted in a task of its own, so that the strategy reads
    the next quote while risk works on the last order: a trigger is never
    conflated away behind a slow one (which would also hide that slow one).
    """
    bus = daemon.bus
    instrument = daemon.services["instruments"][VENUE, TRIGGER]
    exec_id = f"t{time.time_ns() % 16**7:07x}"

    async def submit(intent: OrderIntent) -> None:
        try:
            answer = await bus.request(topics.RISK_SUBMIT, intent, timeout=10)
        except RequestTimeout:
            stamps.refused[intent.seq] = "no answer from risk within 10 s"
            return
        if isinstance(answer, Denial):
            stamps.refused[intent.seq] = f"{answer.code}: {answer.reason}"
        elif not isinstance(answer, Approval):
            stamps.refused[intent.seq] = f"unexpected answer {type(answer).__name__}"

    with bus.subscribe_conflated(topics.QUOTE, key=lambda q: (q.venue, q.symbol), name="bench-tick") as quotes:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    batch = await quotes.receive_batch()
                except trio.EndOfChannel:  # the daemon is stopping
                    nursery.cancel_scope.cancel()
                    return
                for quote in batch:
                    if quote.symbol != TRIGGER:
                        continue
                    number = trigger_number(quote.bid_qty)
                    if number is None or number in stamps.quote:
                        continue
                    stamps.quote[number] = now_ns()
                    cid = client_order_id(exec_id, number)
                    stamps.numbers[cid] = number
                    price = instrument.round_price(quote.bid * Decimal("0.99"), Side.BUY)
                    intent = OrderIntent(
                        client_order_id=cid, exec_id=exec_id, seq=number, venue=VENUE, symbol=TRIGGER, side=Side.BUY,
                        order_type=OrderType.LIMIT, quantity=ORDER_QTY, price=price, time_in_force=TimeInForce.IOC,
                        ts=trio.current_time(),
                    )  # fmt: skip
                    nursery.start_soon(submit, intent)


# ---------------------------------------------------------------------------------------
# The baseline: a minimal reactor
# ---------------------------------------------------------------------------------------


class _FrameData(msgspec.Struct):
    s: str
    b: list[tuple[str, str]]


class _Frame(msgspec.Struct):
    data: _FrameData


class _RawReactor:
    """Reads the stream, decodes every frame, and for a trigger signs and sends the same IOC."""

    def __init__(self, venue: _Venue, frames: _Frames) -> None:
        creds = derived_credentials(BASELINE_ACCOUNT)
        self.signer = HmacSigner(creds.api_key, creds.secret)
        self.rest_url = venue.rest_url
        self.url = f"{frames.url}/raw/stream?streams=" + "/".join(f"{i[0].lower()}@depth@100ms" for i in INSTRUMENTS)
        self.stamps = _Stamps()
        self.tick = Decimal(next(i[3] for i in INSTRUMENTS if i[0] == TRIGGER))
        self.decoder = msgspec.json.Decoder(_Frame)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        hooks = {"request": [self.stamps.on_request]}
        async with httpx.AsyncClient(base_url=self.rest_url, timeout=10, event_hooks=hooks) as http:
            await http.get("/api/v3/ping")  # connected now, as the daemon's pools are
            async with connect(self.url, compression=None, max_queue=256) as ws, trio.open_nursery() as nursery:
                task_status.started()
                with contextlib.suppress(ConnectionClosed):  # the frame server stops first at the end
                    await self._read(ws, http, nursery)

    async def _read(self, ws: Any, http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        async for raw in ws:
            data = self.decoder.decode(raw).data
            if data.s != TRIGGER or not data.b:
                continue
            number = trigger_number(data.b[0][1])
            if number is None:
                continue
            self.stamps.quote[number] = now_ns()
            nursery.start_soon(self._send, http, number, Decimal(data.b[0][0]))

    async def _send(self, http: httpx.AsyncClient, number: int, bid: Decimal) -> None:
        cid = f"raw-{number}-{time.time_ns() % 10**6}"
        self.stamps.numbers[cid] = number
        params = {
            "symbol": TRIGGER, "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": str(ORDER_QTY),
            "price": str((bid * Decimal("0.99")).quantize(self.tick, ROUND_DOWN)), "newClientOrderId": cid,
            "newOrderRespType": "RESULT", "recvWindow": "5000", "timestamp": str(time.time_ns() // 1_000_000),
        }  # fmt: skip
        query = encode_params(params)
        query = f"{query}&signature={self.signer.sign(query)}"
        answer = await http.post(f"/api/v3/order?{query}", headers={"X-MBX-APIKEY": self.signer.api_key})
        if answer.status_code != 200:
            raise RuntimeError(f"the venue refused the baseline's order: HTTP {answer.status_code} {answer.text[:200]}")


# ---------------------------------------------------------------------------------------
# The fsync on the path, alone
# ---------------------------------------------------------------------------------------


def _commits_alone(path: Path, count: int) -> list[float]:
    """Milliseconds per durable `JournalStore.apply` of one intent (WAL, synchronous=FULL), on this disk."""
    path.mkdir(parents=True, exist_ok=True)
    samples = []
    with JournalStore.open(path / f"scratch-{time.time_ns()}.sqlite", durable=True) as store:
        for seq in range(count):
            intent = OrderIntent(
                client_order_id=client_order_id("scratch", seq), exec_id="scratch", seq=seq, venue=VENUE,
                symbol=TRIGGER, side=Side.BUY, order_type=OrderType.LIMIT, quantity=ORDER_QTY, price=Decimal("1"),
                time_in_force=TimeInForce.IOC,
            )  # fmt: skip
            started = now_ns()
            store.apply([intent])
            samples.append(_ms(now_ns() - started))
    return samples


# ---------------------------------------------------------------------------------------
# The venue, the frame server and the daemon
# ---------------------------------------------------------------------------------------


class _Venue:
    """`tradingd venue --protocol binance` in its own process: four standing markets, both accounts funded."""

    def __init__(self, process: trio.Process, rest_url: str, ws_api_url: str) -> None:
        self.process = process
        self.rest_url = rest_url
        self.ws_api_url = ws_api_url

    @classmethod
    async def start(cls, nursery: trio.Nursery, directory: Path) -> _Venue:
        config = directory / "venue.toml"
        config.write_text(_venue_config())
        command = [sys.executable, "-m", "daemon.main", "venue", "--protocol", "binance", "--config", str(config)]
        process: trio.Process = await nursery.start(_run_process, command, directory / "venue.err")
        urls: dict[str, str] = {}
        with trio.fail_after(30):
            async for line in _lines(process.stdout):
                words = line.split()
                if line.lstrip().startswith("REST"):
                    urls["rest"] = words[-1].removesuffix("/api/v3/...")
                elif line.lstrip().startswith("WebSocket API"):
                    urls["ws_api"] = words[-1]
                    break
        if set(urls) != {"rest", "ws_api"}:
            tail = (directory / "venue.err").read_text(errors="replace")[-500:]
            raise RuntimeError(f"the venue did not start: {tail}")
        return cls(process, urls["rest"], urls["ws_api"])


class _Frames:
    """The frame server process (`bench.tick_frames`) and its line protocol."""

    def __init__(self, process: trio.Process, port: int, lines: Any, errors: Path) -> None:
        self.process = process
        self.url = f"ws://127.0.0.1:{port}"
        self.errors = errors
        self._lines = lines
        self._lock = trio.Lock()

    @classmethod
    async def start(cls, nursery: trio.Nursery, directory: Path, venue_url: str) -> _Frames:
        symbols = [f"--symbol={s[0]}:{s[3]}" for s in INSTRUMENTS]
        command = [sys.executable, "-m", "bench.tick_frames", "--venue", venue_url, *symbols, "--trigger", TRIGGER]
        errors = directory / "frames.err"
        process: trio.Process = await nursery.start(_run_process, command, errors, True)
        lines = _lines(process.stdout)
        with trio.fail_after(30):
            try:
                first = json.loads(await lines.__anext__())
            except StopAsyncIteration:
                tail = errors.read_text(errors="replace")[-800:]
                raise RuntimeError(f"the frame server did not start: {tail}") from None
        return cls(process, first["port"], lines, errors)

    async def call(self, **request: Any) -> dict[str, Any]:
        async with self._lock:
            assert self.process.stdin is not None
            await self.process.stdin.send_all(json.dumps(request).encode() + b"\n")
            try:
                answer = json.loads(await self._lines.__anext__())
            except StopAsyncIteration:
                tail = self.errors.read_text(errors="replace")[-800:]
                raise RuntimeError(f"the frame server stopped: {tail}") from None
        if "error" in answer:
            raise RuntimeError(f"frame server: {answer['error']}")
        return answer

    async def wait_readers(self, roles: set[str]) -> None:
        with trio.fail_after(30):
            while not roles <= set((await self.call(cmd="connections"))["readers"]):
                await trio.sleep(0.05)

    async def quit(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            assert self.process.stdin is not None
            await self.process.stdin.send_all(b'{"cmd": "quit"}\n')


async def _run_process(
    command: list[str], errors: Path, stdin: bool = False, *, task_status: trio.TaskStatus[trio.Process]
) -> None:
    """Run `command` until cancelled (then SIGTERM, then SIGKILL), handing the process out first.

    Its stdout is a pipe for us to read; its stderr goes to the file `errors`
    (a pipe nobody reads would stall it once full)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    with open(errors, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )  # fmt: skip
        try:
            task_status.started(process)
            await process.wait()
        finally:
            with trio.move_on_after(10, shield=True):
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(5):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def _lines(stream: Any) -> Any:
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")


def _venue_config() -> str:
    instruments = "".join(
        f"""
[[venues.tick.instruments]]
symbol = "{symbol}"
base = "{base}"
quote = "USDT"
tick_size = "{tick}"
step_size = "{step}"
min_qty = "{step}"
min_notional = "5"
price = "{price}"
volatility = 0.0
level_spacing = "{spacing}"
level_qty = "{qty}"
outer_spacing = "{Decimal(spacing) * 10}"
outer_qty = "{Decimal(qty) * 5}"
trades_per_second = 0.0
trade_qty = "{qty}"
"""
        for symbol, base, price, tick, step, spacing, qty in INSTRUMENTS
    )
    funds = '{ USDT = "10000000", BTC = "100", ETH = "1000", SOL = "10000", XRP = "1000000" }'
    return f"""
[venues.tick]
type = "sim"
seed = 3
market_step = 60.0
accounts = [{{ name = "{OURS}", balances = {funds} }}, {{ name = "{BASELINE_ACCOUNT}", balances = {funds} }}]
{instruments}
[venue_server]
port = 0
request_weight_per_minute = 10000000
orders_per_10s = 1000000
orders_per_day = 100000000
"""


def _daemon_config(venue: _Venue, frames: _Frames) -> str:
    symbols = ", ".join(f'"{i[0]}"' for i in INSTRUMENTS)
    return f"""
[venues.{VENUE}]
type = "binance"
rest_url = "{venue.rest_url}"
market_stream_url = "{frames.url}/ours"
ws_api_url = "{venue.ws_api_url}"
api_key_name = "{KEY_NAME}"
api_secret_name = "{SECRET_NAME}"

[feed.symbols]
{VENUE} = [{symbols}]

[risk]
price_collar_bps = "5000"
max_orders_per_second = 100000
max_orders_per_minute = 1000000
max_open_orders_per_instrument = 10000
max_open_orders = 10000
stale_quote_seconds = 3600.0
rejects = {{ enabled = false }}
stale_data = {{ enabled = false }}
venue_down = {{ enabled = false }}
"""


async def _start_daemon(nursery: trio.Nursery, directory: Path, venue: _Venue, frames: _Frames) -> Daemon:
    config = parse(_daemon_config(venue, frames), "bench-tick.toml")
    daemon = Daemon(config, socket_path=directory / "run" / "control.sock")
    components.install(daemon)
    daemon.finished = trio.Event()  # type: ignore[attr-defined]

    async def run_daemon() -> None:
        try:
            await daemon.run()
        finally:
            daemon.finished.set()  # type: ignore[attr-defined]

    nursery.start_soon(run_daemon)
    with trio.fail_after(60):
        await daemon.ready.wait()
    return daemon


@contextlib.contextmanager
def _environment(directory: str) -> Iterator[None]:
    """The daemon's directories and our account's keys at the loopback venue, for the benchmark only."""
    ours = derived_credentials(OURS)
    values = {
        "STATE_DIRECTORY": os.path.join(directory, "state"),
        "RUNTIME_DIRECTORY": os.path.join(directory, "run"),
        "TRADINGD_" + KEY_NAME.upper(): ours.api_key,
        "TRADINGD_" + SECRET_NAME.upper(): ours.secret,
    }
    with scoped_environ(values):
        yield


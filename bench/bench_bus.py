"""Messages per second through the actor bus, against naive per-message awaits.

Two shapes, each run on the bus and on the baseline:

- 1:1: one publisher, one subscriber.
- 4 hops: publisher -> forwarder -> forwarder -> forwarder -> sink; every
  message crosses four subscriptions (four channel hand-offs), and the figure
  counts messages that reached the sink.

Ours uses the bus the way actors should: a publisher tries `publish_nowait`
and awaits `publish` only when a subscriber is full (nothing is dropped: the
subscriptions are lossless), and a reader takes one awaited `receive_batch`
and handles the whole batch before it awaits again.

The baseline is what an actor does without batching: `await send` per
message and `async for` per message over a trio memory channel of the same
capacity. Every `await` there is a trip through the scheduler (about 10 µs),
which is what the bus's batching avoids.

Every message is a real `Quote` (a reference is passed, never a copy), from a
small pool so that building them is not part of the measurement.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

import trio

from bench.common import Row, compared, interleaved, per_second
from daemon.bus import Bus, LosslessSubscription
from daemon.messages import Quote

CAPACITY = 1024  # the bus's default lossless subscription size; the baseline gets the same
HOPS = 4
TARGET_RATIO = 10.0

# (messages for ours, messages for the baseline, repeats): the baseline is ~10x
# slower, so it gets fewer messages for about the same time per sample.
FULL = {"direct": (40_000, 4_000), "pipeline": (16_000, 1_600), "repeats": 21}
QUICK = {"direct": (5_000, 500), "pipeline": (2_000, 200), "repeats": 1}


def _messages(pool_size: int = 256) -> list[Quote]:
    return [
        Quote(
            venue="sim",
            symbol="BTCUSDT",
            bid=Decimal("60000.00") + i,
            bid_qty=Decimal("0.5"),
            ask=Decimal("60000.01") + i,
            ask_qty=Decimal("0.7"),
            ts=float(i),
        )
        for i in range(pool_size)
    ]


POOL = _messages()


# ---------------------------------------------------------------------------------------
# Ours: the bus, publish_nowait + receive_batch
# ---------------------------------------------------------------------------------------


async def _publish_all(bus: Bus, topic: str, count: int) -> None:
    pool, size = POOL, len(POOL)
    for i in range(count):
        msg = pool[i % size]
        if not bus.publish_nowait(topic, msg):
            await bus.publish(topic, msg)


async def _forward(bus: Bus, inbox: LosslessSubscription[Quote], topic: str, count: int) -> None:
    seen = 0
    while seen < count:
        batch = await inbox.receive_batch()
        await bus.publish_batch(topic, batch)  # one lookup and one wake-up for the whole batch
        seen += len(batch)


async def _drain(inbox: LosslessSubscription[Quote], count: int) -> None:
    seen = 0
    while seen < count:
        seen += len(await inbox.receive_batch())


async def _bus_run(count: int, hops: int) -> int:
    """Elapsed ns to push `count` messages through `hops` subscriptions."""
    bus = Bus()
    inboxes = [bus.subscribe(f"hop{n}", maxsize=CAPACITY, name=f"bench-{n}") for n in range(hops)]
    async with trio.open_nursery() as nursery:
        for n in range(hops - 1):
            nursery.start_soon(_forward, bus, inboxes[n], f"hop{n + 1}", count)
        nursery.start_soon(_drain, inboxes[-1], count)
        await trio.lowlevel.checkpoint()  # let every reader park before the clock starts
        started = time.perf_counter_ns()
        await _publish_all(bus, "hop0", count)
    elapsed = time.perf_counter_ns() - started
    bus.close()
    delivered = sum(inbox.delivered for inbox in inboxes)
    if delivered != count * hops:
        raise AssertionError(f"bus delivered {delivered} of {count * hops} hand-offs")
    return elapsed


# ---------------------------------------------------------------------------------------
# Baseline: await send / async for, one message at a time
# ---------------------------------------------------------------------------------------


async def _naive_forward(inbox: trio.MemoryReceiveChannel, outbox: trio.MemorySendChannel, count: int) -> None:
    seen = 0
    async for msg in inbox:
        await outbox.send(msg)
        seen += 1
        if seen == count:
            return


async def _naive_drain(inbox: trio.MemoryReceiveChannel, count: int, seen: list[int]) -> None:
    async for _msg in inbox:
        seen[0] += 1
        if seen[0] == count:
            return


async def _channels_run(count: int, hops: int) -> int:
    channels = [trio.open_memory_channel[Quote](CAPACITY) for _ in range(hops)]
    seen = [0]
    async with trio.open_nursery() as nursery:
        for n in range(hops - 1):
            nursery.start_soon(_naive_forward, channels[n][1], channels[n + 1][0], count)
        nursery.start_soon(_naive_drain, channels[-1][1], count, seen)
        await trio.lowlevel.checkpoint()
        started = time.perf_counter_ns()
        outbox = channels[0][0]
        pool, size = POOL, len(POOL)
        for i in range(count):
            await outbox.send(pool[i % size])
    elapsed = time.perf_counter_ns() - started
    for send, receive in channels:
        send.close()
        receive.close()
    if seen[0] != count:
        raise AssertionError(f"baseline sink saw {seen[0]} of {count} messages")
    return elapsed


# ---------------------------------------------------------------------------------------


def _rate(runner: Callable[[int, int], Awaitable[int]], count: int, hops: int) -> Callable[[], float]:
    """One sample: a fresh trio.run of `runner`, as messages per second."""

    def sample() -> float:
        return per_second(count, trio.run(runner, count, hops))

    return sample


def run(quick: bool = False) -> list[Row]:
    sizes = QUICK if quick else FULL
    rows = []
    shapes = (("direct", 1, "bus: 1 publisher -> 1 subscriber"), ("pipeline", HOPS, f"bus: {HOPS}-hop pipeline"))
    for shape, hops, label in shapes:
        ours_count, base_count = sizes[shape]
        samples = interleaved(
            {"ours": _rate(_bus_run, ours_count, hops), "baseline": _rate(_channels_run, base_count, hops)},
            sizes["repeats"],
        )
        rows.append(
            compared(
                label,
                "msg/s",
                samples["ours"],
                samples["baseline"],
                target_ratio=TARGET_RATIO,
                note="baseline: await send / async for per message on a trio memory channel",
            )
        )
    return rows

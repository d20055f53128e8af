"""Bus delivery policies, batching, request/reply and close semantics."""

import pytest
import trio
import trio.testing

from daemon.bus import Bus, BusClosed, NoHandler, RequestTimeout
from daemon.messages import Quote, StatusRequest
from decimal import Decimal


def quote(symbol, bid):
    return Quote(venue="sim", symbol=symbol, bid=Decimal(bid), bid_qty=Decimal(1), ask=Decimal(bid) + 1,
                 ask_qty=Decimal(1), ts=0.0)


async def test_conflated_keeps_latest_per_key_and_counts_overruns():
    bus = Bus()
    with bus.subscribe_conflated("quote", key=lambda q: (q.venue, q.symbol)) as sub:
        for i in range(100):
            assert bus.publish_nowait("quote", quote("BTCUSDT", 100 + i))
        bus.publish_nowait("quote", quote("ETHUSDT", 5))
        batch = await sub.receive_batch()
        assert [(q.symbol, q.bid) for q in batch] == [("BTCUSDT", Decimal(199)), ("ETHUSDT", Decimal(5))]
        assert sub.overruns == 99
        assert sub.stats()["overruns"] == 99


async def test_conflated_publisher_never_waits_for_a_stuck_consumer():
    bus = Bus()
    with bus.subscribe_conflated("quote", key=lambda q: q.symbol):
        for i in range(10_000):
            await bus.publish("quote", quote("BTCUSDT", i))  # would hang if it waited


async def test_conflated_bounded_keys_drop_oldest():
    bus = Bus()
    with bus.subscribe_conflated("quote", key=id, max_keys=3) as sub:
        msgs = [quote("BTCUSDT", i) for i in range(5)]
        for m in msgs:
            bus.publish_nowait("quote", m)
        assert await sub.receive_batch() == msgs[2:]
        assert sub.overruns == 2


async def test_lossless_publisher_waits_and_nothing_is_lost():
    bus = Bus()
    got = []
    with bus.subscribe("fill", maxsize=4) as sub:
        async def consumer():
            while len(got) < 1000:
                batch = await sub.receive_batch()
                got.extend(batch)
                await trio.sleep(0)

        async with trio.open_nursery() as n:
            n.start_soon(consumer)
            for i in range(1000):
                await bus.publish("fill", i)
        assert got == list(range(1000))
        assert sub.stats()["publisher_waits"] > 0


async def test_publish_nowait_reports_full_lossless_subscriber():
    bus = Bus()
    with bus.subscribe("fill", maxsize=1) as sub:
        assert bus.publish_nowait("fill", 1)
        assert not bus.publish_nowait("fill", 2)  # caller must await publish instead
        assert await sub.receive() == 1


async def test_batched_draining_after_one_receive():
    bus = Bus()
    with bus.subscribe("order", maxsize=100) as sub:
        for i in range(50):
            bus.publish_nowait("order", i)
        assert await sub.receive_batch(limit=20) == list(range(20))
        assert await sub.receive_batch() == list(range(20, 50))


async def test_wildcard_subscriber_sees_every_topic():
    bus = Bus()
    with bus.subscribe("*") as everything, bus.subscribe("a") as only_a:
        bus.publish_nowait("a", 1)
        bus.publish_nowait("b", 2)
        assert await everything.receive_batch() == [1, 2]
        assert await only_a.receive_batch() == [1]


async def test_request_reply_and_timeout(autojump_clock):
    bus = Bus()
    with pytest.raises(NoHandler):
        await bus.request("status", StatusRequest())

    async def server(inbox, answer=True):
        async for req in inbox:
            if answer:
                req.reply(("ok", type(req.body).__name__))

    async with trio.open_nursery() as n:
        inbox = bus.serve("status")
        n.start_soon(server, inbox)
        assert await bus.request("status", StatusRequest()) == ("ok", "StatusRequest")
        with pytest.raises(RuntimeError):
            bus.serve("status")
        silent = bus.serve("silent")
        n.start_soon(server, silent, False)
        with pytest.raises(RequestTimeout):
            await bus.request("silent", StatusRequest(), timeout=1.0)
        bus.close()


async def test_request_to_a_server_that_left_fails_fast(autojump_clock):
    bus = Bus()
    with bus.serve("status"):
        pass
    with pytest.raises(NoHandler):
        await bus.request("status", StatusRequest())


async def test_unsubscribed_consumer_never_blocks_publisher():
    bus = Bus()
    with bus.subscribe("fill", maxsize=1):
        pass
    for i in range(10):
        await bus.publish("fill", i)
    assert bus.subscribers("fill") == 0


async def test_close_ends_subscriptions_without_hanging(autojump_clock):
    bus = Bus()
    results = []

    async def reader(sub, name):
        async for msg in sub:
            results.append((name, msg))
        results.append((name, "end"))

    async with trio.open_nursery() as n:
        lossless = bus.subscribe("a")
        conflated = bus.subscribe_conflated("q", key=lambda m: 0)
        n.start_soon(reader, lossless, "lossless")
        n.start_soon(reader, conflated, "conflated")
        await bus.publish("a", 1)
        bus.publish_nowait("q", 2)
        await trio.testing.wait_all_tasks_blocked()
        bus.close()
    assert set(results) == {("conflated", 2), ("conflated", "end"), ("lossless", 1), ("lossless", "end")}
    with pytest.raises(BusClosed):
        await bus.publish("a", 3)


async def test_errors_in_consumers_are_not_masked(autojump_clock):
    bus = Bus()

    async def failing_consumer(sub):
        async for _ in sub:
            raise ValueError("consumer bug")

    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as n:
            sub = bus.subscribe("x")
            n.start_soon(failing_consumer, sub)
            await bus.publish("x", 1)
    assert info.group_contains(ValueError, match="consumer bug")


async def test_publish_nowait_is_all_or_nothing_so_the_fallback_never_duplicates():
    bus = Bus()
    with bus.subscribe("fill", maxsize=10) as roomy, bus.subscribe("fill", maxsize=1) as tight:
        assert bus.publish_nowait("fill", "a")
        assert not bus.publish_nowait("fill", "b")  # tight is full: nobody got "b"

        async def drain_tight():
            assert await tight.receive_batch() == ["a"]
            assert await tight.receive_batch() == ["b"]

        async with trio.open_nursery() as n:
            n.start_soon(drain_tight)
            await bus.publish("fill", "b")  # the documented fallback
        assert await roomy.receive_batch() == ["a", "b"]


async def test_publish_batch_delivers_everything_in_order():
    bus = Bus()
    with bus.subscribe("t", maxsize=3) as sub:
        assert not bus.publish_batch_nowait("t", [1, 2, 3, 4])  # would not fit: nothing sent
        assert bus.publish_batch_nowait("t", [1, 2, 3])
        got = []

        async def reader():
            while len(got) < 8:
                got.extend(await sub.receive_batch())

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await bus.publish_batch("t", [4, 5, 6, 7, 8])
        assert got == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_receive_nowait_and_end_of_stream():
    bus = Bus()
    sub = bus.subscribe("t")
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()
    bus.publish_nowait("t", 1)
    assert sub.receive_nowait() == 1
    bus.close()
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()


async def test_a_busy_reader_still_yields_to_others():
    bus = Bus()
    ticks = []

    async def other():
        for _ in range(5):
            ticks.append("other")
            await trio.sleep(0)

    with bus.subscribe("t", maxsize=10_000) as sub:
        async with trio.open_nursery() as n:
            n.start_soon(other)
            for i in range(5):
                bus.publish_nowait("t", i)
                await sub.receive_batch()
                ticks.append("reader")
    assert ticks.count("other") == 5

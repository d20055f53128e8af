"""cancel_all_and_verify: the gateway's part of the emergency stop."""

from __future__ import annotations

import trio

from daemon.messages import VenueCancelReport
from daemon.model import OrderStatus, Side
from tests.actors.test_gateway import Rig
from tests.actors.venue_fakes import FaultyVenue, intent, logged, make_engine, wait_for, fresh_log  # noqa: F401 (autouse fixture)

S = OrderStatus


async def working_rig(nursery, n_btc=3, n_eth=2, **config):
    engine = make_engine()
    venue = FaultyVenue(engine)
    rig = Rig(venue, **config)
    await rig.start(nursery)
    orders = [intent(Side.BUY, "0.01", str(50000 + i)) for i in range(n_btc)]
    orders += [intent(Side.SELL, "0.1", str(4000 + i), symbol="ETHUSDT") for i in range(n_eth)]
    await rig.submit(*orders)
    await wait_for(lambda: len(engine.open_orders("demo")) == n_btc + n_eth)
    return rig, engine, venue, orders


async def test_cancels_everything_in_parallel_and_verifies(autojump_clock, nursery):
    rig, engine, venue, orders = await working_rig(nursery)
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 5)
    assert isinstance(report, VenueCancelReport)
    assert (report.venue, report.cancelled, report.still_open, report.verified, report.error) == ("sim", 5, (), True, "")
    assert report.attempts == 1
    assert engine.open_orders("demo") == []
    # symbols with known working orders are cancelled at once; one open-orders query verifies
    assert venue.calls["emergency_cancel_all"] == 2 and venue.calls["emergency_open_orders"] == 1
    await wait_for(lambda: all(S.CANCELED in rig.statuses(o.client_order_id) for o in orders))
    for o in orders:
        assert (await rig.journal.order(o.client_order_id)).status is S.CANCELED


async def test_retries_until_nothing_is_open(autojump_clock, nursery):
    rig, engine, venue, _ = await working_rig(nursery, n_eth=0)
    venue.cancel_all_faults.extend(["unavailable", "rate_limited:0.5"])
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 5)
    assert report.verified and report.attempts == 3 and report.cancelled == 3
    assert engine.open_orders("demo") == []
    assert logged("kill.cancel_failed", symbol="BTCUSDT")


async def test_the_deadline_is_respected_and_reported(autojump_clock, nursery):
    rig, engine, venue, _ = await working_rig(nursery, n_eth=0)
    venue.cancel_all_faults.extend(["hang"] * 100)
    deadline = trio.current_time() + 3
    report = await rig.gateway.cancel_all_and_verify(deadline)
    assert trio.current_time() <= deadline + 0.001
    assert not report.verified and report.cancelled == 0
    assert len(report.still_open) == 3 and "deadline" in report.error
    assert len(engine.open_orders("demo")) == 3
    assert logged("kill.venue_done", verified="false")


async def test_works_with_the_actor_stopped_and_the_order_path_rate_limited(autojump_clock, nursery):
    rig, engine, venue, _ = await working_rig(nursery, n_eth=0)
    venue.post_faults.append("rate_limited:60")
    await rig.submit(intent(Side.BUY, "0.01", "49000"))
    await wait_for(lambda: rig.gateway.order_entry == "rate_limited")
    rig.scope.cancel()  # the root supervisor gave up: every actor is stopped
    await trio.sleep(0.1)
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 5)
    assert report.verified and report.cancelled == 3 and engine.open_orders("demo") == []


async def test_orders_queued_before_the_kill_are_never_sent(autojump_clock, nursery):
    rig, engine, venue, _ = await working_rig(nursery, n_btc=1, n_eth=0)
    venue.post_faults.append("rate_limited:20")
    queued = [intent(Side.BUY, "0.01", str(48000 + i)) for i in range(3)]
    await rig.submit(*queued)
    await wait_for(lambda: rig.gateway.order_entry == "rate_limited")
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 5)
    assert report.verified
    await trio.sleep(60)  # long after the venue allows sending again
    assert engine.open_orders("demo") == []
    for order in queued:
        assert S.REJECTED in rig.statuses(order.client_order_id)
        assert "emergency stop" in rig.updates(order.client_order_id)[-1].reason
    assert sum(venue.posts[o.client_order_id] for o in queued) <= 1  # only the one the 429 refused
    assert await rig.journal.intents_without_ack("sim") == []
    # trading resumes afterwards: a new order goes out
    after = intent(Side.BUY, "0.01", "47000")
    await rig.submit(after)
    await wait_for(lambda: S.NEW in rig.statuses(after.client_order_id))


async def test_nothing_open_is_verified_at_once(autojump_clock, nursery):
    rig, engine, venue, _ = await working_rig(nursery, n_btc=0, n_eth=0)
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 5)
    assert report.verified and report.attempts == 0 and venue.calls["emergency_cancel_all"] == 0


async def test_an_order_on_the_wire_during_the_kill_is_cancelled_when_it_lands(autojump_clock, nursery):
    engine = make_engine()
    venue = FaultyVenue(engine, latency=2.0)  # each call takes 2 s
    rig = Rig(venue)
    await rig.start(nursery)
    late = intent(Side.BUY, "0.01", "50000")
    await rig.submit(late)
    await wait_for(lambda: venue.posts[late.client_order_id] == 1)  # the POST is on its way
    report = await rig.gateway.cancel_all_and_verify(trio.current_time() + 8)
    assert report.verified and report.cancelled == 1
    assert engine.open_orders("demo") == []
    await trio.sleep(10)
    assert engine.open_orders("demo") == []


async def test_nothing_leaves_while_halted_even_if_approved_before(autojump_clock, nursery):
    """An intent approved before HALTED that reaches the inbox late is never sent."""
    rig, engine, venue, orders = await working_rig(nursery)
    rig.gateway.halted = lambda: True
    before = venue.calls["place_order"]
    late = intent(Side.BUY, "0.01", "49000")
    await rig.submit(late)
    await wait_for(lambda: S.REJECTED in rig.statuses(late.client_order_id))
    assert venue.calls["place_order"] == before
    assert len(engine.open_orders("demo")) == len(orders)

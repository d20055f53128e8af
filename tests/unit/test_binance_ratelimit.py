"""The shared per-venue request budget."""

import pytest
import trio
import trio.testing

from venues.base import RateLimited, VenueBanned
from venues.binance.ratelimit import ORDERS, RAW_REQUESTS, WEIGHT, RateBudget, RateLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(*limits, clock=None, reserve=0.1, max_wait=10.0):
    return RateBudget(limits or (RateLimit(WEIGHT, 60, 100),), clock=clock or FakeClock(), reserve=reserve, max_wait=max_wait)


def test_requests_fit_until_the_window_is_used_up_minus_the_reserve():
    clock = FakeClock()
    b = budget(RateLimit(WEIGHT, 60, 100), clock=clock)
    assert all(b.try_acquire(10) for _ in range(9))  # 90 = 100 minus the 10 % reserve
    assert not b.try_acquire(10)
    assert b.usage() == {"REQUEST_WEIGHT/60s": (90, 100)}
    clock.now += 60
    assert b.try_acquire(10)
    assert b.usage()["REQUEST_WEIGHT/60s"] == (10, 100)


def test_emergency_calls_may_use_the_reserve():
    b = budget(RateLimit(WEIGHT, 60, 100))
    while b.try_acquire(10):
        pass
    assert b.try_acquire(10, emergency=True)
    assert not b.try_acquire(1, emergency=True)


def test_order_count_and_raw_requests_are_separate_windows():
    clock = FakeClock()
    b = budget(RateLimit(WEIGHT, 60, 1000), RateLimit(ORDERS, 10, 2), RateLimit(RAW_REQUESTS, 300, 5), clock=clock, reserve=0)
    assert b.try_acquire(1, orders=1)
    assert b.try_acquire(1, orders=1)
    assert not b.try_acquire(1, orders=1)  # order window full
    assert b.try_acquire(4)  # a GET needs no order slot
    assert b.try_acquire(4)
    assert b.try_acquire(4)
    assert not b.try_acquire(4)  # five raw requests used (a refused one is not charged)
    clock.now += 10
    assert not b.try_acquire(1, orders=1)  # the order window rolled over, the raw one did not
    clock.now += 290
    assert b.try_acquire(1, orders=1)


def test_an_empty_window_admits_one_heavy_request():
    b = budget(RateLimit(WEIGHT, 60, 100))
    assert b.try_acquire(250)
    assert not b.try_acquire(1)


def test_headers_raise_the_local_count_but_never_lower_it():
    clock = FakeClock()
    b = budget(RateLimit(WEIGHT, 60, 100), RateLimit(ORDERS, 10, 50), RateLimit(ORDERS, 86400, 1000), clock=clock)
    b.try_acquire(5)
    b.observe_headers({"x-mbx-used-weight-1m": "80", "X-MBX-ORDER-COUNT-10S": "7", "x-mbx-order-count-1d": "900"})
    assert b.usage() == {"REQUEST_WEIGHT/60s": (80, 100), "ORDERS/10s": (7, 50), "ORDERS/86400s": (900, 1000)}
    b.observe_headers({"x-mbx-used-weight-1m": "20", "x-mbx-used-weight": "3", "content-type": "application/json"})
    assert b.usage()["REQUEST_WEIGHT/60s"] == (80, 100)
    b.observe_headers({"x-mbx-used-weight-1m": "not a number", "x-mbx-used-weight-1h": "5"})  # ignored
    assert not b.try_acquire(20)


def test_configure_adopts_venue_limits_and_keeps_counts():
    b = budget(RateLimit(WEIGHT, 60, 100))
    b.try_acquire(50)
    b.configure([RateLimit(WEIGHT, 60, 1200), RateLimit(ORDERS, 10, 5)])
    assert b.usage() == {"REQUEST_WEIGHT/60s": (50, 1200), "ORDERS/10s": (0, 5)}


def test_block_refuses_everything_until_retry_after():
    clock = FakeClock()
    b = budget(clock=clock)
    b.block(30)
    with pytest.raises(RateLimited) as info:
        b.try_acquire(1, emergency=True)
    assert info.value.retry_after == pytest.approx(30)
    assert not isinstance(info.value, VenueBanned)
    clock.now += 30
    assert b.try_acquire(1)
    assert b.blocked_for() == 0


def test_ban_is_reported_as_such_and_lifts():
    clock = FakeClock()
    b = budget(clock=clock)
    b.block(120, banned=True)
    assert b.banned
    with pytest.raises(VenueBanned):
        b.try_acquire(1)
    clock.now += 121
    assert not b.banned
    assert b.try_acquire(1)


def test_invalid_reserve_is_refused():
    with pytest.raises(ValueError):
        RateBudget(reserve=1.0)


async def test_callers_wait_for_the_window_on_trio_time(autojump_clock):
    b = RateBudget([RateLimit(WEIGHT, 10, 10)], reserve=0, max_wait=30)
    start = trio.current_time()
    done: list[float] = []

    async def caller():
        await b.acquire(5)
        done.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(caller)
    assert sorted(done) == [0, 0, 10, 10]
    assert b.waits >= 2


async def test_a_wait_longer_than_max_wait_is_refused_at_once(autojump_clock):
    b = RateBudget([RateLimit(ORDERS, 86400, 1)], reserve=0, max_wait=10)
    await b.acquire(1, orders=1)
    start = trio.current_time()
    with pytest.raises(RateLimited) as info:
        await b.acquire(1, orders=1)
    assert trio.current_time() == start
    assert info.value.retry_after == pytest.approx(86400)


async def test_blocked_budget_raises_instead_of_waiting(autojump_clock):
    b = RateBudget()
    b.block(5)
    with pytest.raises(RateLimited):
        await b.acquire(1)
    await trio.sleep(5)
    await b.acquire(1)

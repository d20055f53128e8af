"""Supervisor semantics under MockClock: restarts, back-off, intensity, order."""

import random

import pytest
import trio

from daemon.supervisor import (
    Backoff,
    ChildSpec,
    Intensity,
    Registry,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
)

NO_JITTER = Backoff(initial=1.0, multiplier=2.0, maximum=8.0, jitter=0.0, reset_after=100.0)


class Boom(Exception):
    pass


def crasher(events, name, *, crash_after=0.0, times=None):
    """A worker that records (time, event) and crashes after `crash_after` s."""
    count = {"n": 0}

    async def worker(*, task_status):
        count["n"] += 1
        events.append((trio.current_time(), f"start:{name}"))
        task_status.started()
        try:
            if times is not None and count["n"] > times:
                await trio.sleep_forever()
            await trio.sleep(crash_after)
            raise Boom(f"{name} crashed")
        except trio.Cancelled:
            events.append((trio.current_time(), f"stop:{name}"))
            raise

    return worker


def sleeper(events, name):
    async def worker(*, task_status):
        events.append((trio.current_time(), f"start:{name}"))
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            events.append((trio.current_time(), f"stop:{name}"))

    return worker


async def test_crashing_child_restarts_with_exponential_backoff(autojump_clock):
    events = []
    sup = Supervisor(
        "t",
        [ChildSpec("a", crasher(events, "a", times=4))],
        backoff=NO_JITTER,
        intensity=Intensity(max_restarts=10, period=1000),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(100)
        await sup.stop()
    starts = [t for t, e in events if e == "start:a"]
    # crash at start; delays 1, 2, 4, 8 (capped at maximum 8)
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])] == [1.0, 2.0, 4.0, 8.0]
    assert sup.registry.actors["a"].restarts == 4
    assert sup.registry.actors["a"].last_error == "Boom: a crashed"


async def test_backoff_resets_only_after_child_stayed_up(autojump_clock):
    events = []
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=100.0, jitter=0.0, reset_after=10.0)
    # crashes 5s after each start: never stays up 10s, so delays keep growing
    sup = Supervisor("t", [ChildSpec("a", crasher(events, "a", crash_after=5.0, times=3))], backoff=backoff,
                     intensity=Intensity(max_restarts=10, period=1000))
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(200)
        await sup.stop()
    starts = [t for t, e in events if e == "start:a"]
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])] == [6.0, 7.0, 9.0]

    events.clear()
    # crashes 20s after each start: stayed up long enough, delay stays at `initial`
    sup = Supervisor("t", [ChildSpec("a", crasher(events, "a", crash_after=20.0, times=3))], backoff=backoff,
                     intensity=Intensity(max_restarts=10, period=1000))
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(200)
        await sup.stop()
    starts = [t for t, e in events if e == "start:a"]
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])] == [21.0, 21.0, 21.0]


async def test_jitter_stays_within_bounds():
    b = Backoff(initial=1.0, multiplier=2.0, maximum=30.0, jitter=0.2)
    rng = random.Random(7)
    for attempt in range(8):
        base = min(30.0, 2.0**attempt)
        d = b.delay(attempt, rng)
        assert base * 0.8 <= d <= base * 1.2


async def test_intensity_exceeded_escalates_and_stops_children(autojump_clock):
    events = []
    sup = Supervisor(
        "venues",
        [ChildSpec("steady", sleeper(events, "steady")), ChildSpec("bad", crasher(events, "bad"))],
        backoff=Backoff(initial=0.1, jitter=0.0),
        intensity=Intensity(max_restarts=3, period=60),
    )
    with pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    err = info.value
    assert err.supervisor == "venues" and err.restarts == 4
    assert "stop:steady" in [e for _, e in events]
    assert sup.registry.escalations == 1


async def test_escalation_reaches_parent_which_restarts_the_subtree(autojump_clock):
    events = []
    registry = Registry()
    attempts = {"n": 0}

    async def child_supervisor(*, task_status):
        attempts["n"] += 1
        inner = Supervisor(
            "inner",
            [ChildSpec("bad", crasher(events, "bad", times=None if attempts["n"] == 1 else 0))],
            backoff=Backoff(initial=0.1, jitter=0.0),
            intensity=Intensity(max_restarts=2, period=60),
            registry=registry,
        )
        await inner.run(task_status=task_status)

    outer = Supervisor("outer", [ChildSpec("inner", child_supervisor)], registry=registry,
                       backoff=Backoff(initial=1.0, jitter=0.0), intensity=Intensity(max_restarts=3, period=60))
    async with trio.open_nursery() as n:
        await n.start(outer.run)
        await trio.sleep(30)
        assert attempts["n"] == 2  # inner gave up once; outer restarted it
        assert registry.actors["inner"].restarts == 1
        assert "SupervisorGaveUp" in registry.actors["inner"].last_error
        await outer.stop()


async def test_one_for_all_restarts_siblings_in_order(autojump_clock):
    events = []
    sup = Supervisor(
        "core",
        [
            ChildSpec("a", sleeper(events, "a")),
            ChildSpec("b", crasher(events, "b", crash_after=1.0, times=1)),
            ChildSpec("c", sleeper(events, "c")),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=Backoff(initial=0.5, jitter=0.0),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(10)
        names = [e for _, e in events]
        assert names == ["start:a", "start:b", "start:c", "stop:c", "stop:a", "start:a", "start:b", "start:c"]
        await sup.stop()
    assert sup.registry.actors["a"].restarts == 1 and sup.registry.actors["c"].restarts == 1


async def test_restart_types(autojump_clock):
    events = []

    def returns_normally(name):
        async def worker(*, task_status):
            events.append(f"start:{name}")
            task_status.started()
            await trio.sleep(1)

        return worker

    sup = Supervisor(
        "t",
        [
            ChildSpec("perm", returns_normally("perm"), restart=Restart.PERMANENT),
            ChildSpec("trans-ok", returns_normally("trans-ok"), restart=Restart.TRANSIENT),
            ChildSpec("trans-bad", crasher([], "x", times=1), restart=Restart.TRANSIENT),
            ChildSpec("temp-bad", crasher([], "y"), restart=Restart.TEMPORARY),
        ],
        backoff=Backoff(initial=5.0, jitter=0.0),
        intensity=Intensity(max_restarts=100, period=10),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(20)
        assert events.count("start:perm") >= 3  # normal return restarts a permanent child
        assert events.count("start:trans-ok") == 1  # normal return ends a transient child
        assert sup.registry.actors["trans-bad"].restarts == 1  # a crash restarts it
        assert sup.registry.actors["temp-bad"].restarts == 0  # temporary: never
        assert not sup.has_child("temp-bad") and not sup.has_child("trans-ok")
        await sup.stop()


async def test_children_start_in_order_after_ready_and_stop_in_reverse(autojump_clock):
    events = []

    def slow_starter(name, delay):
        async def worker(*, task_status):
            await trio.sleep(delay)
            events.append(f"ready:{name}")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"stop:{name}")

        return worker

    sup = Supervisor("t", [ChildSpec("j", slow_starter("j", 3)), ChildSpec("p", slow_starter("p", 1)),
                           ChildSpec("c", slow_starter("c", 2))])
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        assert events == ["ready:j", "ready:p", "ready:c"]
        await sup.stop()
    assert events[3:] == ["stop:c", "stop:p", "stop:j"]
    assert {r.state for r in sup.registry.actors.values()} == {"stopped"}


async def test_crash_before_ready_counts_as_crash(autojump_clock):
    attempts = {"n": 0}

    async def fails_to_start(*, task_status):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise OSError("port in use")
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor("t", [ChildSpec("s", fails_to_start)], backoff=Backoff(initial=1.0, jitter=0.0))
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(10)
        assert attempts["n"] == 3
        assert sup.registry.actors["s"].state == "running"
        assert sup.registry.actors["s"].last_error == "OSError: port in use"
        await sup.stop()


async def test_child_that_never_reports_ready_times_out(autojump_clock):
    async def hangs(*, task_status):
        await trio.sleep_forever()

    sup = Supervisor("t", [ChildSpec("h", hangs, start_timeout=5)], backoff=Backoff(initial=1.0, jitter=0.0),
                     intensity=Intensity(max_restarts=1, period=100))
    with pytest.raises(SupervisorGaveUp, match="did not report ready"):
        await sup.run()
    assert "ChildStartTimeout" in sup.registry.actors["h"].last_error


async def test_dynamic_children(autojump_clock):
    events = []
    sup = Supervisor("executions")
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await sup.start_child(ChildSpec("x1", sleeper(events, "x1"), restart=Restart.TEMPORARY))
        with pytest.raises(ValueError):
            await sup.start_child(ChildSpec("x1", sleeper(events, "x1")))
        await sup.terminate_child("x1")
        assert [e for _, e in events] == ["start:x1", "stop:x1"] and "x1" not in sup.registry.actors
        await sup.stop()
